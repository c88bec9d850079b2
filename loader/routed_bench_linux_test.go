package loader_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
)

// BenchmarkRoutedVeth compares the routed path (one program, routed, on
// the pod's veth: steer's checks and bpf_sk_assign in one pass) with the
// bridge path (steer on the container's veth, assign on the bridge):
// connections from the allowed workload to the agent's listener (connect,
// accept, close) and the BPF run time the kernel counted for them
// (bpf-ns/conn; bpf-ns/run is that over the programs' runs).
//
// (Steer and assign chained on the same veth do not work: TC_ACT_OK from
// steer ends the TCX chain, assign never runs, and the marked SYN is
// delivered locally to no socket; connect times out.)
//
//	go test -run '^$' -bench RoutedVeth -count 3 ./loader/
func BenchmarkRoutedVeth(b *testing.B) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	b.Run("routed", func(b *testing.B) {
		r, opts := routedHost(b, loader.Options{})
		host, a := r.Host, r.A
		var d *loader.Datapath
		if err := host.Do(func() (err error) { d, err = loader.Open(opts); return err }); err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		idx := vethIndex(b, host, a)
		if err := host.Do(func() error { return d.Attach(idx, loader.Routed) }); err != nil {
			b.Fatal(err)
		}
		ln := transparentListener(b, host, allowApp(b, host, d, a))
		connections(b, a, ln, programs(b, d)...)
	})
	b.Run("bridge", func(b *testing.B) {
		host, app, _, opts := bridgeHost(b, loader.Options{})
		d := openAttach(b, host, opts, app.Veth)
		defer d.Close()
		ln := transparentListener(b, host, allowApp(b, host, d, app))
		connections(b, app, ln, programs(b, d)...)
	})
}

// programs opens the programs attached by d, one per attachment.
func programs(b *testing.B, d *loader.Datapath) []*ebpf.Program {
	b.Helper()
	var out []*ebpf.Program
	for _, at := range d.Attachments() {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(at.Program))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		out = append(out, p)
	}
	return out
}

// connections opens b.N connections from ct to the service, accepted on
// ln, and reports the BPF run time of progs per connection and per run.
func connections(b *testing.B, ct *testenv.Container, ln *net.TCPListener, progs ...*ebpf.Program) {
	b.Helper()
	read := func() (time.Duration, uint64) {
		var rt time.Duration
		var n uint64
		for _, p := range progs {
			s, err := p.Stats()
			if err != nil {
				b.Fatal(err)
			}
			rt += s.Runtime
			n += s.RunCount
		}
		return rt, n
	}
	rt0, n0 := read()
	b.ResetTimer()
	for range b.N {
		c, err := ct.NS.DialTCP(context.Background(), svc.String(), 2*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
		s.Close()
	}
	b.StopTimer()
	rt1, n1 := read()
	if n1 == n0 {
		b.Fatal("the programs did not run")
	}
	b.ReportMetric(float64(rt1-rt0)/float64(b.N), "bpf-ns/conn")
	b.ReportMetric(float64(rt1-rt0)/float64(n1-n0), "bpf-ns/run")
}
