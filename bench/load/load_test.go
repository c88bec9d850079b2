package load

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// startServer serves the load protocol on a loopback port; it counts the
// connections it accepted.
func startServer(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	counting := &countingListener{Listener: l, n: &accepted}
	s := NewServer()
	done := make(chan error, 1)
	go func() { done <- s.Serve(counting) }()
	t.Cleanup(func() {
		l.Close()
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return l.Addr().String(), &accepted
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// countingDialer counts the bytes the client writes.
func countingDialer(addr string, written *atomic.Int64) Dialer {
	d := TCPDialer(addr, time.Second)
	return func(ctx context.Context) (net.Conn, error) {
		c, err := d(ctx)
		if err != nil {
			return nil, err
		}
		return &countingConn{TCPConn: c.(*net.TCPConn), n: written}, nil
	}
}

type countingConn struct {
	*net.TCPConn
	n *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	k, err := c.TCPConn.Write(p)
	c.n.Add(int64(k))
	return k, err
}

func TestThroughputCountsEveryByte(t *testing.T) {
	addr, accepted := startServer(t)
	var written atomic.Int64
	ctx := context.Background()
	for _, streams := range []int{1, 4} {
		written.Store(0)
		before := accepted.Load()
		r, err := RunThroughput(ctx, countingDialer(addr, &written), streams, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		// The server counted exactly what the client wrote after the mode
		// byte of each stream.
		if want := uint64(written.Load()) - uint64(streams); r.Bytes != want {
			t.Errorf("%d streams: server counted %d bytes, client wrote %d", streams, r.Bytes, want)
		}
		if r.Bytes < BufSize || r.Bytes%BufSize != 0 {
			t.Errorf("%d streams: %d bytes is not a positive number of %d-byte buffers", streams, r.Bytes, BufSize)
		}
		if got := accepted.Load() - before; got != int64(streams) {
			t.Errorf("%d streams: server accepted %d connections", streams, got)
		}
		if r.Seconds < 0.1 || r.Gbps <= 0 || r.Streams != streams {
			t.Errorf("%d streams: %+v", streams, r)
		}
		if got := float64(r.Bytes) * 8 / r.Seconds / 1e9; got != r.Gbps {
			t.Errorf("Gbps %v, want bytes*8/seconds/1e9 = %v", r.Gbps, got)
		}
	}
}

func TestLatencyAndSetup(t *testing.T) {
	addr, accepted := startServer(t)
	ctx := context.Background()
	lat, err := RunLatency(ctx, TCPDialer(addr, time.Second), 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if lat.Count < 10 || lat.P50us <= 0 || lat.P99us < lat.P50us {
		t.Errorf("latency %+v", lat)
	}
	before := accepted.Load()
	set, err := RunSetup(ctx, TCPDialer(addr, time.Second), time.Minute, 25)
	if err != nil {
		t.Fatal(err)
	}
	if set.Count != 25 || set.P50us <= 0 || set.P99us < set.P50us {
		t.Errorf("setup %+v", set)
	}
	// One connection per sample, each answered with the hello byte.
	if got := accepted.Load() - before; got != 25 {
		t.Errorf("setup made %d connections, want 25", got)
	}
}

func TestIdleHoldsConnections(t *testing.T) {
	addr, accepted := startServer(t)
	idle, err := OpenIdle(context.Background(), TCPDialer(addr, time.Second), 200, 16)
	if err != nil {
		t.Fatal(err)
	}
	if idle.Len() != 200 || accepted.Load() != 200 {
		t.Errorf("holding %d, server accepted %d; want 200", idle.Len(), accepted.Load())
	}
	idle.Close()
	if idle.Len() != 0 {
		t.Error("Close left connections")
	}
}

func TestIdleFailsWithoutServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := OpenIdle(context.Background(), TCPDialer(addr, time.Second), 3, 2); err == nil {
		t.Error("OpenIdle to a closed port succeeded")
	}
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}, {0, 1}} {
		if got := Percentile(s, c.p); got != c.want {
			t.Errorf("Percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("Percentile of nothing is not 0")
	}
}
