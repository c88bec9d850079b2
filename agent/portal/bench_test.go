package portal_test

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/portal"
)

// In-process benchmarks of one portal, all on loopback:
//
//	app ──> inlet ──> hub (splice) ──> outlet ──> server
//
// against the same client and server connected directly ("raw"). Read them
// as ratios (benchstat); the harness in bench/ measures the real topology.
// cpu-ns/op is the CPU time of the whole process (app, agents, hub, server)
// per operation, which waiting for a busy machine's CPUs does not inflate.
//
//	go test -run '^$' -bench . -count 5 ./agent/portal/

// benchServer serves each connection by its first byte: 's' sinks and
// answers the byte count as 8 bytes when the client half-closes; 'e' echoes;
// a server that greets writes one byte as soon as it accepts.
type benchServer struct {
	addr  string
	greet bool
}

func newBenchServer(b *testing.B, greet bool) *benchServer {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); serveBench(c, greet) })
		}
	})
	return &benchServer{addr: ln.Addr().String(), greet: greet}
}

func serveBench(c *net.TCPConn, greet bool) {
	if greet {
		c.Write([]byte{1})
		io.Copy(io.Discard, c)
		return
	}
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case 's':
		n, _ := io.Copy(io.Discard, c)
		c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	case 'e':
		io.Copy(c, c)
	}
}

// benchPortal returns the address the app dials: the inlet, or the server.
func benchPortal(b *testing.B, raw, greet bool) string {
	srv := newBenchServer(b, greet)
	if raw {
		return srv.addr
	}
	return newStandardFor(b, srv.addr)
}

// newStandardFor builds agent "out" with outlet "bench" to target and agent
// "in" with an inlet to it, and returns the inlet's address.
func newStandardFor(b *testing.B, target string) string {
	h := testhub.Start(b, testhub.Options{})
	out := newNode(b, h, portal.Options{Logger: zap.NewNop()}, map[string]string{"web-outlet": "true"}, "web")
	out.outlet(b, portal.OutletSpec{Name: "web", To: target, Allow: "web-inlet"})
	in := newNode(b, h, portal.Options{Logger: zap.NewNop()}, map[string]string{"web-inlet": "true"})
	return in.inlet(b, portal.InletSpec{Name: "web", Via: "web", Allow: "web-outlet"})
}

func dialBench(b *testing.B, addr string) *net.TCPConn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	tc := c.(*net.TCPConn)
	b.Cleanup(func() { tc.Close() })
	return tc
}

func BenchmarkThroughput(b *testing.B) {
	for _, raw := range []bool{true, false} {
		b.Run(pathName(raw), func(b *testing.B) {
			c := dialBench(b, benchPortal(b, raw, false))
			buf := make([]byte, 128<<10)
			buf[0] = 's'
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			start := cpuTime()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.CloseWrite()
			var n [8]byte
			if _, err := io.ReadFull(c, n[:]); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			reportCPU(b, start)
			if got := binary.BigEndian.Uint64(n[:]); got != uint64(b.N*len(buf)-1) {
				b.Fatalf("server got %d bytes, want %d", got, b.N*len(buf)-1)
			}
		})
	}
}

func BenchmarkRoundTrip64(b *testing.B) {
	for _, raw := range []bool{true, false} {
		b.Run(pathName(raw), func(b *testing.B) {
			c := dialBench(b, benchPortal(b, raw, false))
			c.SetNoDelay(true)
			msg := make([]byte, 64)
			if _, err := c.Write([]byte{'e'}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := cpuTime()
			for range b.N {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, msg); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, start)
		})
	}
}

func BenchmarkSetup(b *testing.B) {
	for _, raw := range []bool{true, false} {
		b.Run(pathName(raw), func(b *testing.B) {
			addr := benchPortal(b, raw, true)
			var one [1]byte
			b.ResetTimer()
			for range b.N {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, one[:]); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process's CPU time per operation since start.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

func pathName(raw bool) string {
	if raw {
		return "raw"
	}
	return "portal"
}
