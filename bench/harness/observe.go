package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// What Config.Capture and Config.Metrics add to the Sluice paths, to
// measure what observing a portal costs (issue 12): captures that nobody
// reads and a Prometheus that scrapes every second.

// Observer names, as results.json's config.observers lists them.
const (
	ObserveCapture = "capture" // agentctl capture --decrypted on both agents of a path
	ObserveMetrics = "metrics" // --metrics on the hub and the agents, scraped every second
)

// Observers lists the observers cfg runs (nil for none).
func (c Config) Observers() []string {
	var out []string
	if c.Capture {
		out = append(out, ObserveCapture)
	}
	if c.Metrics {
		out = append(out, ObserveMetrics)
	}
	return out
}

// scrapeEvery is the scrape interval: Prometheus's usual 15 s would cost
// nothing measurable in a quick run; once a second is a demanding scraper.
const scrapeEvery = time.Second

// Where each process serves --metrics, on the loopback of its own
// namespace: two analysis agents share one namespace, so each has its own
// port.
var metricsPorts = map[string]int{"analysis": 9464, "bank": 9465, transparentAgent: 9466, "hub": 9467}

func metricsAddr(name string) string { return fmt.Sprintf("127.0.0.1:%d", metricsPorts[name]) }

// observerArgs adds --metrics to the agents' and the hub's arguments if the
// run scrapes metrics.
func (c Config) observerArgs(agentArgs map[string][]string) (hubArgs []string) {
	if !c.Metrics {
		return nil
	}
	for _, a := range []string{"analysis", "bank", transparentAgent} {
		agentArgs[a] = append(agentArgs[a], "--metrics", metricsAddr(a))
	}
	return []string{"--metrics", metricsAddr("hub")}
}

// startObservers starts the run's observers on an opened Sluice path (its
// agents are fresh then); the function it returns stops them and reports
// what they saw (captures: packets and dropped records; scrapes: how many).
func (r *run) startObservers(ctx context.Context, tag string, o *opened) (stop func() error, err error) {
	var stops []func() error
	stop = func() error {
		var errs []error
		for i := len(stops) - 1; i >= 0; i-- {
			errs = append(errs, stops[i]())
		}
		return errors.Join(errs...)
	}
	if len(o.agents) == 0 {
		return stop, nil
	}
	if r.cfg.Capture {
		for _, a := range o.agents {
			s, err := r.startCapture(ctx, tag, a)
			if err != nil {
				return nil, errors.Join(err, stop())
			}
			stops = append(stops, s)
		}
	}
	if r.cfg.Metrics {
		targets := map[string]*testenv.NS{}
		for _, a := range o.agents {
			targets[a.Name] = a.NS
		}
		if o.hub {
			targets["hub"] = r.seed.Internet
		}
		stops = append(stops, r.scrape(tag, targets))
	}
	return stop, nil
}

// startCapture runs `agentctl capture --decrypted -w /dev/null` against a
// until the returned function stops it as Ctrl-C does; agentctl then
// prints its summary, with the records the agent dropped, which goes to
// the progress log.
func (r *run) startCapture(ctx context.Context, tag string, a *scenario.Agent) (func() error, error) {
	argv := []string{filepath.Join(r.cfg.Bin, "agentctl"), "--agent", a.Socket, "capture", "--decrypted", "-w", "/dev/null"}
	p, err := a.NS.Start("capture-"+a.Name, argv, testenv.ProcOptions{})
	if err != nil {
		return nil, fmt.Errorf("start capture on %s: %w", a.Name, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitOutput(wctx, "capturing "); err != nil {
		return nil, errors.Join(fmt.Errorf("start capture on %s: %w", a.Name, err), p.Kill())
	}
	return func() error {
		if err := p.Stop(); err != nil {
			return fmt.Errorf("stop capture on %s: %w", a.Name, err)
		}
		summary := lastLine(p.Output())
		r.say("%s capture on %s: %s", tag, a.Name, summary)
		if err := p.Wait(); err != nil {
			return fmt.Errorf("capture on %s: %w: %s", a.Name, err, summary)
		}
		return nil
	}, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// scrape GETs /metrics of every target (name: namespace) every scrapeEvery
// until the returned function is called, which fails if a target answered
// no scrape at all.
func (r *run) scrape(tag string, targets map[string]*testenv.NS) func() error {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		got = map[string]*scrapeCount{}
	)
	for name, ns := range targets {
		c := &scrapeCount{}
		got[name] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(scrapeEvery)
			defer t.Stop()
			for {
				n, err := scrapeOnce(ctx, ns, metricsAddr(name))
				mu.Lock()
				c.add(n, err)
				mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	return func() error {
		cancel()
		wg.Wait()
		var errs []error
		for name, c := range got {
			r.say("%s metrics of %s: %d scrapes (last %d bytes), %d failed%s", tag, name, c.ok, c.bytes, c.failed, c.firstErr())
			if c.ok == 0 {
				errs = append(errs, fmt.Errorf("scrape %s: no scrape succeeded%s", name, c.firstErr()))
			}
		}
		return errors.Join(errs...)
	}
}

type scrapeCount struct {
	ok, failed, bytes int
	err               error
}

func (c *scrapeCount) add(n int, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	if err != nil {
		c.failed++
		if c.err == nil {
			c.err = err
		}
		return
	}
	c.ok++
	c.bytes = n
}

func (c *scrapeCount) firstErr() string {
	if c.err == nil {
		return ""
	}
	return fmt.Sprintf(" (first error: %v)", c.err)
}

// scrapeOnce GETs http://addr/metrics from inside ns and returns the body's
// size.
func scrapeOnce(ctx context.Context, ns *testenv.NS, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	client := http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return ns.DialTCP(ctx, addr, 5*time.Second)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape %s: status %s", addr, resp.Status)
	}
	return int(n), nil
}
