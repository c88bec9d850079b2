package chaos_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/testenv"
)

// Soak settings.
const (
	soakClients = 100
	soakRun     = 30 * time.Second // each pgbench run: its clients connect anew for the next
	soakEvery   = 10 * time.Second
)

// Growth allowed from the first half of the soak (after its warm-up) to
// the second, beyond which a measure grows without bound: a leak of one
// descriptor, goroutine or kilobyte per connection (the runs open 200 a
// minute) passes them within a minute.
var soakSlack = map[string]struct {
	rel float64
	abs int64
}{
	"rss_kib":    {0.25, 16 << 10},
	"fds":        {0.10, 16},
	"goroutines": {0.10, 32},
}

// TestSoak runs pgbench with 100 clients through the portal for as long as
// SLUICE_SOAK says, in runs of 30s (so that the clients connect anew),
// samples the RSS, descriptors and goroutines of the hub and both agents
// every 10s, and fails if a measure grows without bound, or if pgbench
// sees an error.
func TestSoak(t *testing.T) {
	d := soakDuration(t)
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Minute)
	defer cancel()
	r := newRig(t, ctx)
	start := time.Now()
	samples := map[string][]procStat{}
	var at []time.Duration
	sample := func() {
		at = append(at, time.Since(start))
		for _, name := range processes {
			st, err := r.stat(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			samples[name] = append(samples[name], st)
		}
	}
	done := make(chan struct{})
	var runs []pgRun
	go func() {
		defer close(done)
		for time.Since(start) < d {
			left := d - time.Since(start)
			p, err := r.startPgbench(soakClients, max(min(soakRun, left), time.Second))
			if err != nil {
				t.Error(err)
				return
			}
			p.Wait()
			runs = append(runs, parsePgbench(p.Output()))
			if runs[len(runs)-1].failed() {
				t.Errorf("pgbench run %d: %s\n%s", len(runs), runs[len(runs)-1].summary(), tailLines(p.Output(), 20))
			}
		}
	}()
	tick := time.NewTicker(soakEvery)
	defer tick.Stop()
	for running := true; running; {
		select {
		case <-tick.C:
			sample()
		case <-done:
			running = false
		}
	}
	sample()
	var tx int
	for _, p := range runs {
		tx += p.transactions
	}
	t.Logf("%d pgbench runs of %d clients, %d transactions in %v", len(runs), soakClients, tx, time.Since(start).Round(time.Second))
	t.Log(soakTable(at, samples))
	for _, name := range processes {
		for _, m := range []string{"rss_kib", "fds", "goroutines"} {
			if err := bounded(samples[name], m); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	r.checkScans()
}

func measure(st procStat, m string) int64 {
	switch m {
	case "rss_kib":
		return st.RSSKiB
	case "fds":
		return int64(st.FDs)
	}
	return int64(st.Goroutines)
}

// bounded fails if the measure, after a warm-up (the first fifth of the
// samples), is higher in the second half than the first half's highest by
// more than its slack.
func bounded(s []procStat, m string) error {
	if m == "goroutines" && len(s) > 0 && s[0].Goroutines < 0 {
		return nil // not counted
	}
	warm := max(1, len(s)/5)
	if len(s)-warm < 2 {
		return fmt.Errorf("%d samples: too few to judge %s", len(s), m)
	}
	rest := s[warm:]
	first, second := rest[:len(rest)/2], rest[len(rest)/2:]
	var high, late int64
	for _, st := range first {
		high = max(high, measure(st, m))
	}
	for _, st := range second {
		late = max(late, measure(st, m))
	}
	slack := soakSlack[m]
	if limit := high + int64(float64(high)*slack.rel) + slack.abs; late > limit {
		return fmt.Errorf("%s grows without bound: at most %d in the first half, %d in the second (limit %d)", m, high, late, limit)
	}
	return nil
}

func soakTable(at []time.Duration, samples map[string][]procStat) string {
	var b strings.Builder
	b.WriteString("| t | hub RSS MiB | hub fds (pipes) | hub goroutines | inlet agent RSS MiB | fds | goroutines | outlet agent RSS MiB | fds | goroutines |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for i, t := range at {
		fmt.Fprintf(&b, "| %v |", t.Round(time.Second))
		for _, name := range processes {
			st := samples[name][i]
			fds := fmt.Sprint(st.FDs)
			if name == "hub" {
				fds += fmt.Sprintf(" (%d)", st.Pipes)
			}
			fmt.Fprintf(&b, " %.1f | %s | %d |", float64(st.RSSKiB)/1024, fds, st.Goroutines)
		}
		b.WriteString("\n")
	}
	return b.String()
}
