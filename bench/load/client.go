package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"time"
)

// Dialer opens a connection to the server (through whatever path is being
// measured).
type Dialer func(ctx context.Context) (net.Conn, error)

// TCPDialer dials addr with a timeout.
func TCPDialer(addr string, timeout time.Duration) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		d := net.Dialer{Timeout: timeout}
		return d.DialContext(ctx, "tcp", addr)
	}
}

// Throughput is the result of a bulk transfer.
type Throughput struct {
	Streams int     `json:"streams"`
	Bytes   uint64  `json:"bytes"`   // what the server counted, all streams
	Seconds float64 `json:"seconds"` // from the first write to the last count
	Gbps    float64 `json:"gbps"`    // Bytes*8/Seconds/1e9
}

// Latency is the result of request/response or setup timing: percentiles in
// microseconds over Count samples.
type Latency struct {
	Count int     `json:"count"`
	P50us float64 `json:"p50_us"`
	P99us float64 `json:"p99_us"`
}

// greet dials and reads the server's hello byte, then sends mode (if not 0).
func greet(ctx context.Context, dial Dialer, mode byte) (net.Conn, error) {
	c, err := dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("read hello: %w", err)
	}
	if b[0] != Hello {
		c.Close()
		return nil, fmt.Errorf("read hello: got %q", b[0])
	}
	if mode != 0 {
		if _, err := c.Write([]byte{mode}); err != nil {
			c.Close()
			return nil, fmt.Errorf("write mode: %w", err)
		}
	}
	return c, nil
}

// RunThroughput opens streams connections, writes BufSize buffers on each for
// d, half-closes them and waits for the server's counts.
func RunThroughput(ctx context.Context, dial Dialer, streams int, d time.Duration) (Throughput, error) {
	if streams < 1 {
		return Throughput{}, errors.New("run throughput: streams < 1")
	}
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range streams {
		c, err := greet(ctx, dial, ModeSink)
		if err != nil {
			return Throughput{}, fmt.Errorf("run throughput: %w", err)
		}
		conns = append(conns, c)
	}
	stop := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			c.SetDeadline(time.Now())
		}
	})
	defer stop()
	start := time.Now()
	end := start.Add(d)
	counts := make([]uint64, streams)
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts[i], errs[i] = stream(c, end)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	if err := errors.Join(errs...); err != nil {
		return Throughput{}, fmt.Errorf("run throughput: %w", err)
	}
	var total uint64
	for _, n := range counts {
		total += n
	}
	return Throughput{Streams: streams, Bytes: total, Seconds: elapsed, Gbps: float64(total) * 8 / elapsed / 1e9}, nil
}

// stream writes until end, half-closes and reads the server's count.
func stream(c net.Conn, end time.Time) (uint64, error) {
	buf := make([]byte, BufSize)
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			return 0, fmt.Errorf("write: %w", err)
		}
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return 0, errors.New("half-close: connection cannot")
	}
	if err := cw.CloseWrite(); err != nil {
		return 0, fmt.Errorf("half-close: %w", err)
	}
	var out [8]byte
	if _, err := io.ReadFull(c, out[:]); err != nil {
		return 0, fmt.Errorf("read count: %w", err)
	}
	return binary.BigEndian.Uint64(out[:]), nil
}

// RunLatency sends MsgSize-byte requests on one connection, one at a time,
// for d, and times each answer.
func RunLatency(ctx context.Context, dial Dialer, d time.Duration) (Latency, error) {
	c, err := greet(ctx, dial, ModeEcho)
	if err != nil {
		return Latency{}, fmt.Errorf("run latency: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	req := make([]byte, MsgSize)
	resp := make([]byte, MsgSize)
	for i := range req {
		req[i] = byte(i)
	}
	samples := make([]time.Duration, 0, 1<<16)
	end := time.Now().Add(d)
	for t0 := time.Now(); t0.Before(end); t0 = time.Now() {
		if _, err := c.Write(req); err != nil {
			return Latency{}, fmt.Errorf("run latency: write: %w", err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return Latency{}, fmt.Errorf("run latency: read: %w", err)
		}
		samples = append(samples, time.Since(t0))
		if resp[MsgSize-1] != req[MsgSize-1] {
			return Latency{}, errors.New("run latency: the echo differs from the request")
		}
	}
	return summarize(samples), nil
}

// RunSetup opens connections one after the other, for d or until max of
// them (limit; whichever is first; at least one), and times each from the start of
// the dial to the server's hello byte.
func RunSetup(ctx context.Context, dial Dialer, d time.Duration, limit int) (Latency, error) {
	var samples []time.Duration
	end := time.Now().Add(d)
	for len(samples) == 0 || (len(samples) < limit && time.Now().Before(end)) {
		t0 := time.Now()
		c, err := greet(ctx, dial, 0)
		if err != nil {
			return Latency{}, fmt.Errorf("run setup: %w", err)
		}
		samples = append(samples, time.Since(t0))
		c.Close()
	}
	return summarize(samples), nil
}

// Idle is a set of open, idle connections that were each checked end to end.
type Idle struct {
	conns []net.Conn
}

// OpenIdle opens n connections with up to parallel dials at a time, checks
// each with a one-byte exchange (the server's hello, then our idle mode byte
// answered by IdleAck), and keeps them open. On error it closes what it
// opened.
func OpenIdle(ctx context.Context, dial Dialer, n, parallel int) (*Idle, error) {
	if parallel < 1 {
		parallel = 1
	}
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(parallel, max(n, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				conns[i], errs[i] = openIdle(ctx, dial)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	idle := &Idle{}
	var failed []error
	for i, c := range conns {
		if c != nil {
			idle.conns = append(idle.conns, c)
		}
		if errs[i] != nil && len(failed) < 3 {
			failed = append(failed, errs[i])
		}
	}
	if len(idle.conns) != n {
		idle.Close()
		return nil, fmt.Errorf("open idle connections: %d of %d failed, first: %w", n-len(idle.conns), n, errors.Join(failed...))
	}
	return idle, nil
}

func openIdle(ctx context.Context, dial Dialer) (net.Conn, error) {
	c, err := greet(ctx, dial, ModeIdle)
	if err != nil {
		return nil, err
	}
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != IdleAck {
		c.Close()
		return nil, fmt.Errorf("read idle ack: %q, %v", b[0], err)
	}
	c.SetReadDeadline(time.Time{})
	return c, nil
}

// Len is the number of open connections.
func (i *Idle) Len() int { return len(i.conns) }

// Close closes every connection.
func (i *Idle) Close() error {
	for _, c := range i.conns {
		c.Close()
	}
	i.conns = nil
	return nil
}

// summarize computes the percentiles of samples.
func summarize(samples []time.Duration) Latency {
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	return Latency{Count: len(samples), P50us: us(Percentile(samples, 50)), P99us: us(Percentile(samples, 99))}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Percentile returns the p-th percentile (nearest rank) of sorted samples,
// 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}

// Result is what the load client prints as its last line (JSON).
type Result struct {
	Throughput *Throughput `json:"throughput,omitempty"`
	Latency    *Latency    `json:"latency,omitempty"`
	Held       int         `json:"held,omitempty"`
	CPUSeconds float64     `json:"cpu_seconds"` // the client's own user+system time
}
