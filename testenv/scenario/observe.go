package scenario

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Observe starts `agentctl observe` against this agent with args, and
// returns its output lines as they come; the channel closes when it exits.
// Cancel ctx to stop it, then call wait.
func (a *Agent) Observe(ctx context.Context, args ...string) (lines <-chan string, wait func() error, err error) {
	args = append([]string{"--agent", a.Socket, "observe"}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(a.s.opts.Bin, "agentctl"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("agentctl observe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("agentctl observe: %w", err)
	}
	c := make(chan string, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(c)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c <- sc.Text()
		}
	}()
	return c, func() error {
		<-done
		if err := cmd.Wait(); err != nil && ctx.Err() == nil {
			return fmt.Errorf("agentctl observe: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}, nil
}
