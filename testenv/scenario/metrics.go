package scenario

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/testenv"
)

// MetricsAddr is where the hub and the agents serve --metrics with
// Options.Metrics: the loopback of each one's namespace, so that only a
// client inside that namespace reaches it.
const MetricsAddr = "127.0.0.1:9464"

// metricsArgs are the --metrics arguments of the hub and the agents.
func (s *Scenario) metricsArgs() []string {
	if !s.opts.Metrics {
		return nil
	}
	return []string{"--metrics", MetricsAddr}
}

// Get asks GET path of the --metrics listener in ns (the agent's or the
// hub's namespace), from inside ns, and returns the status and the body.
func Get(ctx context.Context, ns *testenv.NS, path string) (int, []byte, error) {
	c, err := ns.DialTCP(ctx, MetricsAddr, 5*time.Second)
	if err != nil {
		return 0, nil, fmt.Errorf("get %s in %s: %w", path, ns.Name(), err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+MetricsAddr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Close = true
	if err := req.Write(c); err != nil {
		return 0, nil, fmt.Errorf("get %s in %s: %w", path, ns.Name(), err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return 0, nil, fmt.Errorf("get %s in %s: %w", path, ns.Name(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("get %s in %s: %w", path, ns.Name(), err)
	}
	return resp.StatusCode, body, nil
}
