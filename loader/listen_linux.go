package loader

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenTransparent opens the agent's transparent listener on a free port
// of 127.0.0.1; the assign program hands it the connections it steers once
// its address is published (maps.Listener.Set). IP_TRANSPARENT lets it
// accept connections addressed to service addresses that no interface owns,
// and answer from them: https://docs.kernel.org/networking/tproxy.html
func ListenTransparent() (*net.TCPListener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1) })
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("open transparent listener: %w", err)
	}
	return ln.(*net.TCPListener), nil
}
