package loader_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
	"github.com/sluicehq/sluice/testenv"
)

// accelPair is one steered connection: the app's end and the agent's.
type accelPair struct {
	app, agent *net.TCPConn
}

// steeredPair connects from the app container to the service and accepts
// it on the agent's listener; with accel, pairs the two sockets.
func steeredPair(t testing.TB, host *testenv.NS, ct *testenv.Container, ln *net.TCPListener, s *maps.Sockets) accelPair {
	t.Helper()
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := ct.NS.DialTCP(context.Background(), svc.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p := accelPair{app: c.(*net.TCPConn), agent: <-accepted}
	if p.agent == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { p.app.Close(); p.agent.Close() })
	if s == nil {
		return p
	}
	appAddr := p.agent.RemoteAddr().(*net.TCPAddr).AddrPort()
	var behind uint64
	err = host.Do(func() error {
		ifc, err := net.InterfaceByName(ct.Veth)
		if err != nil {
			return err
		}
		behind, err = loader.NetnsCookieBehind(ifc.Index)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := s.AppNetns(appAddr, svc)
	if err != nil {
		t.Fatal(err)
	}
	if recorded != behind {
		t.Fatalf("sockops recorded the app in netns %d, the veth leads to %d", recorded, behind)
	}
	raw, _ := p.agent.SyscallConn()
	var agentNetns uint64
	raw.Control(func(fd uintptr) { agentNetns, err = loader.SocketNetnsCookie(fd) })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Pair(p.agent, agentNetns, recorded, appAddr, svc); err != nil {
		t.Fatal(err)
	}
	return p
}

func bytesAcked(t testing.TB, c *net.TCPConn) uint64 {
	raw, _ := c.SyscallConn()
	var info *unix.TCPInfo
	var err error
	raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err != nil {
		t.Fatal(err)
	}
	return info.Bytes_acked
}

func accelHost(t testing.TB) (*testenv.NS, *testenv.Container, *net.TCPListener, *maps.Sockets) {
	host, app, _, opts := bridgeHost(t, loader.Options{})
	d := openAttach(t, host, opts, app.Veth)
	m := allowApp(t, host, d, app)
	var acc *loader.Accel
	if err := host.Do(func() (err error) { acc, err = d.OpenAccel(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { acc.Close(); d.Close() })
	return host, app, transparentListener(t, host, m), maps.NewSockets(acc.Maps())
}

// TestAccel checks that a paired agent socket's writes reach the app intact
// without crossing TCP, that the app's writes still take TCP, and that an
// unpaired connection is untouched.
func TestAccel(t *testing.T) {
	host, app, ln, s := accelHost(t)
	p := steeredPair(t, host, app, ln, s)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	go func() { p.agent.Write(want); p.agent.CloseWrite() }()
	p.app.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(p.app)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("app read %d bytes (%v), want the %d the agent wrote", len(got), err, len(want))
	}
	if acked := bytesAcked(t, p.agent); acked > 1<<10 {
		t.Errorf("the agent's 1 MiB crossed TCP (%d bytes acked): not redirected", acked)
	}
	if _, err := p.app.Write([]byte("up")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	p.agent.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(p.agent, buf); err != nil || string(buf) != "up" {
		t.Fatalf("agent read %q, %v", buf, err)
	}

	plain := steeredPair(t, host, app, ln, nil)
	if _, err := plain.agent.Write(want[:4096]); err != nil {
		t.Fatal(err)
	}
	plain.app.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(plain.app, buf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if acked := bytesAcked(t, plain.agent); acked < 4096 {
		t.Errorf("unpaired connection: %d bytes acked, want the 4096 written over TCP", acked)
	}
}

// BenchmarkAgentToApp measures the agent-to-app hop (the direction
// acceleration redirects) with and without it, on the same namespaces and
// programs: the agent writes 64 KiB chunks, the app reads them. Compare the
// two results as a ratio; absolute figures mean nothing on shared machines.
//
//	go test -run '^$' -bench AgentToApp -count 5 ./loader/
func BenchmarkAgentToApp(b *testing.B) {
	host, app, ln, s := accelHost(b)
	chunk := bytes.Repeat([]byte{'x'}, 64<<10)
	for _, mode := range []struct {
		name string
		s    *maps.Sockets
	}{{"tcp", nil}, {"accelerated", s}} {
		b.Run(mode.name, func(b *testing.B) {
			p := steeredPair(b, host, app, ln, mode.s)
			done := make(chan error, 1)
			go func() {
				_, err := io.CopyBuffer(io.Discard, p.app, make([]byte, 64<<10))
				done <- err
			}()
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for range b.N {
				if _, err := p.agent.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			p.agent.CloseWrite()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
		})
	}
}

// TestAccelBesideAnotherAgent: two agents on one kernel serve the same
// service address. Their sockops programs both see every socket of the
// machine (they sit on the cgroup root), yet each accelerates its own app's
// connections and leaves the other's alone. (The program attached first
// used to put every app socket into its own sockhash, which keeps it out of
// any other sockhash with other programs (EBUSY): the agent attached second
// accelerated nothing.)
func TestAccelBesideAnotherAgent(t *testing.T) {
	host1, app1, ln1, s1 := accelHost(t)
	host2, app2, ln2, s2 := accelHost(t)
	for _, a := range []struct {
		name       string
		host       *testenv.NS
		app        *testenv.Container
		ln         *net.TCPListener
		own, other *maps.Sockets
	}{{"the agent attached second", host2, app2, ln2, s2, s1}, {"the agent attached first", host1, app1, ln1, s1, s2}} {
		p := steeredPair(t, a.host, a.app, a.ln, a.own) // fails unless its own agent saw the app socket
		if _, err := a.other.AppNetns(p.agent.RemoteAddr().(*net.TCPAddr).AddrPort(), svc); !errors.Is(err, maps.ErrNotPairable) {
			t.Errorf("%s: the other agent recorded its app's socket (%v)", a.name, err)
		}
		want := bytes.Repeat([]byte("x"), 64<<10)
		go p.agent.Write(want)
		p.app.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(p.app, make([]byte, len(want))); err != nil {
			t.Fatalf("%s: app read: %v", a.name, err)
		}
		if acked := bytesAcked(t, p.agent); acked > 1<<10 {
			t.Errorf("%s: its writes crossed TCP (%d bytes acked): not accelerated", a.name, acked)
		}
	}
}
