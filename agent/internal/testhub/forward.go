package testhub

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Forwarder is a TCP forwarder to the hub: connections to Addr reach the
// hub from another port, as through a NAT that does not keep ports. The
// hub then never offers direct paths to an agent that comes through it.
type Forwarder struct {
	Addr string
}

// Forward starts a forwarder to the hub; it stops when the test ends.
func (h *Hub) Forward(t testing.TB) *Forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", h.Addr)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Go(func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() })
			wg.Go(func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite() })
		}
	})
	return &Forwarder{Addr: ln.Addr().String()}
}
