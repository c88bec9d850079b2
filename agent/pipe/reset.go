package pipe

import (
	"errors"
	"fmt"
	"syscall"
)

// Reset by default. A socket that carries a stream ends in a reset unless
// the stream ended cleanly, end to end:
//
//	accept or connect ──> Arm: SO_LINGER on, timeout 0
//	    any close       ──> RST (unsent bytes dropped)
//	    process dies    ──> the kernel closes it: RST too
//	CloseWrite (FIN)    ──> still armed: shutdown(2) ignores SO_LINGER
//	both directions ended cleanly ──> Close: disarm, then close (FIN)
//
// Without it, the kernel closes a dead process's sockets with a FIN, and a
// truncated stream looks complete to the program on the other side (a
// download that seems to have ended, an upload the service takes as whole).
// SO_LINGER: https://man7.org/linux/man-pages/man7/socket.7.html

// Arm makes the socket of c close with a reset, whoever closes it (this
// process, or the kernel when the process dies), until the stream's Close
// disarms it. c is a *net.TCPConn or a *net.TCPListener: the connections a
// listener accepts inherit the setting, so they are armed from their first
// byte.
func Arm(c syscall.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("arm socket: %w", err)
	}
	return ArmControl("", "", raw)
}

// ArmControl arms a socket before it connects or listens: use it as the
// Control of a net.Dialer or net.ListenConfig.
func ArmControl(_, _ string, raw syscall.RawConn) error {
	var serr error
	err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	})
	if err = errors.Join(err, serr); err != nil {
		return fmt.Errorf("arm socket: %w", err)
	}
	return nil
}
