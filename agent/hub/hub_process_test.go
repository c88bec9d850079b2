//go:build linux

package hub_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/relay"
)

// These tests run the hub in a process of its own (testhub.StartProcess),
// so that its memory and its file descriptors are its own, and attack it
// from this one while members use it.

// echoOutlet makes a answer every incoming session by echoing it.
func echoOutlet(t *testing.T, a *testhub.Agent) {
	a.OnIncoming(func(in relay.Incoming) {
		c, err := a.Client.OpenData(context.Background(), in.Token)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		io.Copy(c, c)
	})
}

// memberRoundTrip opens a data session to relay "svc" with the agent's
// usual timeouts and checks that the echo comes back.
func memberRoundTrip(ctx context.Context, in *testhub.Agent, n int) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tok, _, err := in.Client.Dial(ctx, "svc")
	if err != nil {
		return err
	}
	conn, err := in.Client.OpenData(ctx, tok)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(wait))
	msg := fmt.Appendf(nil, "round trip %d", n)
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		return fmt.Errorf("read the echo: %w", err)
	}
	if string(got) != string(msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// floodResult is what one attacker saw.
type floodResult struct {
	conns   int // TLS connections it made
	ended   int // of those, connections the hub ended (the others, the attack's end did)
	refused int // of those, connections on which the hub first sent a too_large refusal
	err     error
}

// floodFirstMessage makes control connections with a self-signed key and
// sends each an endless first message, as fast as it can, until ctx ends.
func floodFirstMessage(ctx context.Context, addr string) floodResult {
	var res floodResult
	id, err := identity.New()
	if err == nil {
		var cert tls.Certificate
		if cert, err = id.SelfSigned(); err == nil {
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: wait}, Config: &tls.Config{MinVersion: tls.VersionTLS13,
				NextProtos: []string{"sluice-control/1"}, Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true}}
			chunk := []byte(strings.Repeat("A", 32<<10))
			for ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					// The dial's deadline is ctx's, which may pass before
					// ctx says so.
					if end, _ := ctx.Deadline(); ctx.Err() == nil && time.Now().Before(end) {
						res.err = err
					}
					break
				}
				res.conns++
				ended, refused := floodOne(ctx, c.(*tls.Conn), chunk)
				if ended {
					res.ended++
				}
				if refused {
					res.refused++
				}
			}
		}
	}
	if err != nil {
		res.err = err
	}
	return res
}

// floodOne writes an endless first message on c until the hub or ctx ends
// it, and reports whether the hub did and whether it sent its refusal.
func floodOne(ctx context.Context, c *tls.Conn, chunk []byte) (ended, refused bool) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	answer := make(chan string, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(2 * wait))
		var m wireMessage
		line, err := bufio.NewReader(c).ReadBytes('\n')
		if err == nil && json.Unmarshal(line, &m) == nil {
			answer <- m.Code
			return
		}
		answer <- ""
	}()
	_, err := c.Write([]byte(`{"id":1,"op":"enroll","ticket":"`))
	for err == nil {
		_, err = c.Write(chunk)
	}
	if ctx.Err() != nil {
		return false, false
	}
	return true, <-answer == "too_large"
}

// TestFirstMessageFloodMemory: four strangers with self-signed keys send
// endless first messages as fast as they can for 4 seconds; the hub's
// memory grows by less than 64 MiB, each of them gets a refusal with code
// too_large, and a member's data sessions work all along.
func TestFirstMessageFloodMemory(t *testing.T) {
	const limit = 64 << 20
	h := testhub.StartProcess(t, testhub.ProcessOptions{})
	out, in := h.Enroll(t, nil, "svc"), h.Enroll(t, nil)
	echoOutlet(t, out)
	claim(t, out, "svc")
	if err := memberRoundTrip(t.Context(), in, 0); err != nil {
		t.Fatal(err)
	}
	base := h.RSS(t)

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	results := make(chan floodResult, 4)
	for range 4 {
		go func() { results <- floodFirstMessage(ctx, h.Addr) }()
	}
	var peak atomic.Int64
	peak.Store(base)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for ctx.Err() == nil {
			rss := h.RSS(t)
			peak.Store(max(peak.Load(), rss))
			if rss-base > 8*limit { // far past the test's bound: spare the machine
				cancel()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	trips := 0
	for ctx.Err() == nil {
		if err := memberRoundTrip(t.Context(), in, trips+1); err != nil {
			t.Errorf("member round trip %d during the flood: %v", trips+1, err)
			break
		}
		trips++
	}
	cancel()
	<-sampled
	var total floodResult
	for range 4 {
		r := <-results
		if r.err != nil {
			t.Errorf("attacker: %v", r.err)
		}
		total.conns, total.ended, total.refused = total.conns+r.conns, total.ended+r.ended, total.refused+r.refused
	}
	growth := peak.Load() - base
	t.Logf("hub RSS %.1f MiB before the flood, at most %.1f MiB during it (+%.1f MiB); %d attacker connections, %d ended by the hub, %d with a too_large refusal; %d member round trips",
		float64(base)/(1<<20), float64(peak.Load())/(1<<20), float64(growth)/(1<<20), total.conns, total.ended, total.refused, trips)
	if growth >= limit {
		t.Errorf("the hub's memory grew by %.1f MiB under the flood, want less than %d MiB", float64(growth)/(1<<20), limit>>20)
	}
	if total.ended == 0 || total.refused != total.ended {
		t.Errorf("the hub ended %d attacker connections and sent a too_large refusal on %d; want it on each, and at least one", total.ended, total.refused)
	}
	if trips == 0 {
		t.Error("no member round trip completed during the flood")
	}
	if st := h.Stats(t); st.Refused.TooLarge < int64(total.refused) {
		t.Errorf("hub counted %d messages too large, the attackers saw %d refusals", st.Refused.TooLarge, total.refused)
	}
}

// holdSilent keeps a TCP connection from src to addr open, sending
// nothing; when the hub closes it, it waits a second and opens another.
func holdSilent(ctx context.Context, src, addr string, attempts *atomic.Int64) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: wait}
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", addr)
		attempts.Add(1)
		if err == nil {
			stop := context.AfterFunc(ctx, func() { c.Close() })
			c.Read(make([]byte, 1))
			stop()
			c.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// TestHalfOpenFlood: 3000 silent connections, kept up from two source
// addresses, against a hub with 2048 file descriptors: the caps on
// unauthenticated connections hold, the hub keeps descriptors for members,
// and a new member enrolls and opens a data session with the agents' usual
// timeouts.
func TestHalfOpenFlood(t *testing.T) {
	const perSource = 1500
	h := testhub.StartProcess(t, testhub.ProcessOptions{NoFile: 2048})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var attempts atomic.Int64
	for _, src := range []string{"127.0.0.2", "127.0.0.3"} {
		for range perSource {
			wg.Add(1)
			go func() {
				defer wg.Done()
				holdSilent(ctx, src, h.Addr, &attempts)
			}()
		}
	}
	defer wg.Wait()
	defer cancel()
	// Two rounds: the first connections, and the ones made after the hub
	// closed some.
	if !testhub.WaitFor(3*wait, func() bool { return attempts.Load() >= 4*perSource }) {
		t.Fatalf("the attackers made only %d connections", attempts.Load())
	}

	start := time.Now()
	out, in := h.Enroll(t, nil, "svc"), h.Enroll(t, nil)
	echoOutlet(t, out)
	claim(t, out, "svc")
	if err := memberRoundTrip(t.Context(), in, 1); err != nil {
		t.Fatalf("a member's data session during the flood: %v", err)
	}
	t.Logf("members enrolled and made a round trip in %v during the flood (%d attacker connections so far)",
		time.Since(start).Round(time.Millisecond), attempts.Load())

	st := h.Stats(t)
	l := hub.Limits{}.WithDefaults()
	if st.UnauthenticatedPeak > l.Unauthenticated || st.UnauthenticatedSourcePeak > l.PerSource {
		t.Errorf("hub held %d unauthenticated connections at once, %d from one source; the caps are %d and %d",
			st.UnauthenticatedPeak, st.UnauthenticatedSourcePeak, l.Unauthenticated, l.PerSource)
	}
	if st.Refused.PerSource == 0 {
		t.Errorf("hub refusals %+v: want the flood's connections refused per source", st.Refused)
	}
	t.Logf("hub stats: %d unauthenticated now, at most %d (%d from one source); refused %+v",
		st.Unauthenticated, st.UnauthenticatedPeak, st.UnauthenticatedSourcePeak, st.Refused)
}

// TestRefusalHidesPaths: when the hub's database fails (here every write,
// as on a full disk), a stranger enrolling gets code internal and a text
// that names neither the hub's directory nor its database; the hub's log
// has the cause.
func TestRefusalHidesPaths(t *testing.T) {
	h := testhub.StartProcess(t, testhub.ProcessOptions{FailWrites: true})
	_, err := h.Connect(t, testhub.AgentOptions{Ticket: h.Ticket(t, authority.TicketOptions{})})
	if err == nil {
		t.Fatal("enrolled although the hub's database fails every write")
	}
	dbPath := filepath.Join(h.Project.Dir, authority.DatabaseFile)
	logged := func() bool {
		return strings.Contains(h.Output(), "file too large") && strings.Contains(h.Output(), dbPath)
	}
	if !testhub.WaitFor(wait, logged) {
		t.Fatalf("the hub's log does not show the injected failure of %s:\n%s", dbPath, h.Output())
	}
	if !errors.Is(err, relay.ErrHubInternal) {
		t.Errorf("enroll with a failing database: %v, want ErrHubInternal", err)
	}
	for _, private := range []string{h.Project.Dir, authority.DatabaseFile, "file too large"} {
		if strings.Contains(err.Error(), private) {
			t.Errorf("the refusal %q reveals %q", err, private)
		}
	}
}
