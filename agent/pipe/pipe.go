// Package pipe joins two byte streams in both directions, passing half-closes
// (FIN) and resets (RST) through faithfully.
//
// Pipeline, per direction (the two directions run in parallel: one on the
// caller's goroutine, one on its own):
//
//	plain TCP ──> plain TCP:  splice(2) in the kernel, no buffer
//	plain TCP <──> a Pump:    the Pump seals or opens records itself
//	                          (channel.Conn: in place, pooled buffers)
//	otherwise:                src.Read ──> buffer (pooled, 32 KiB) ──> dst.Write
//
//	src EOF          → dst.CloseWrite (FIN; close_notify first on TLS; the
//	                   end record on a channel, which stays open)
//	src reset/error  → both sides aborted (RST)
//	dst write error  → both sides aborted
//
// When both directions have ended cleanly both streams are closed: a TCP
// stream is disarmed first (reset.go), so that this close, and only this
// one, ends it with a FIN.
package pipe

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// BufferSize is the size of the pooled copy buffers.
const BufferSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, BufferSize); return &b }}

// Stream is one side of a pipe.
type Stream interface {
	io.Reader
	io.Writer
	// CloseWrite ends the stream's sending direction (FIN).
	CloseWrite() error
	// Abort closes the stream with a reset.
	Abort() error
	// Close closes the stream.
	Close() error
}

type tcpStream struct{ *net.TCPConn }

// TCP makes a Stream of a TCP connection.
func TCP(c *net.TCPConn) Stream { return tcpStream{c} }

func (s tcpStream) Abort() error {
	s.SetLinger(0) // close sends RST: https://man7.org/linux/man-pages/man7/socket.7.html (SO_LINGER)
	return s.TCPConn.Close()
}

// Close is the clean end: it disarms the connection (Arm), so that the
// bytes still queued are sent and a FIN follows them, and closes it.
func (s tcpStream) Close() error {
	s.SetLinger(-1)
	return s.TCPConn.Close()
}

type tlsStream struct {
	*tls.Conn
	raw *net.TCPConn
}

// TLS makes a Stream of a TLS connection over raw. CloseWrite sends
// close_notify, then FIN, so the far side sees a clean half-close. The
// handshake must be complete: crypto/tls refuses CloseWrite before it.
func TLS(c *tls.Conn, raw *net.TCPConn) Stream { return tlsStream{c, raw} }

func (s tlsStream) CloseWrite() error {
	err := s.Conn.CloseWrite()
	return errors.Join(err, s.raw.CloseWrite())
}

func (s tlsStream) Abort() error {
	s.raw.SetLinger(0)
	return s.raw.Close()
}

// Pump is a Stream that moves bytes between itself and a plain TCP
// connection on its own, faster than Read and Write through a buffer.
type Pump interface {
	Stream
	// PumpFrom sends what src sends until src ends (nil) or anything fails.
	PumpFrom(src *net.TCPConn, n *atomic.Int64) error
	// PumpTo writes what the stream receives to dst until its clean end
	// (nil) or anything fails.
	PumpTo(dst *net.TCPConn, n *atomic.Int64) error
}

// Keep wraps a Pump whose connection outlives the pipe: Run's final Close
// leaves it open for its owner (a channel carries the next connection), and
// Abort still resets it.
func Keep(p Pump) Pump { return keep{p} }

type keep struct{ Pump }

func (keep) Close() error { return nil }

// Stats counts the bytes a pipe moved.
type Stats struct {
	AToB, BToA atomic.Int64
}

// Result says how a pipe ended.
type Result struct {
	AToB, BToA int64
	Err        error // first error that aborted the pipe; nil when both sides ended cleanly
}

// Run copies between a and b until both directions end or ctx is done, then
// closes both. stats, if not nil, is updated as bytes move.
func Run(ctx context.Context, a, b Stream, stats *Stats) Result {
	if stats == nil {
		stats = new(Stats)
	}
	var (
		once    sync.Once
		first   error
		wg      sync.WaitGroup
		aborted = make(chan struct{})
	)
	abort := func(err error) {
		once.Do(func() {
			first = err
			a.Abort()
			b.Abort()
			close(aborted)
		})
	}
	stop := context.AfterFunc(ctx, func() { abort(ctx.Err()) })
	wg.Go(func() { direction(b, a, &stats.AToB, abort) })
	direction(a, b, &stats.BToA, abort)
	wg.Wait()
	if !stop() {
		<-aborted // ctx ended meanwhile: its abort is under way
	}
	select {
	case <-aborted:
	default:
		a.Close()
		b.Close()
	}
	return Result{AToB: stats.AToB.Load(), BToA: stats.BToA.Load(), Err: first}
}

func direction(dst, src Stream, n *atomic.Int64, abort func(error)) {
	err := copyStream(dst, src, n)
	if err != nil {
		abort(err)
		return
	}
	if err := dst.CloseWrite(); err != nil && !isClosed(err) {
		abort(err)
	}
}

// copyStream copies until src reports EOF (nil) or anything fails.
func copyStream(dst, src Stream, n *atomic.Int64) error {
	if s, ok := src.(tcpStream); ok {
		if p, ok := dst.(Pump); ok {
			return p.PumpFrom(s.TCPConn, n)
		}
	}
	if d, ok := dst.(tcpStream); ok {
		if p, ok := src.(Pump); ok {
			return p.PumpTo(d.TCPConn, n)
		}
		if s, ok := src.(tcpStream); ok {
			// Both plain TCP: (*net.TCPConn).ReadFrom splices in the kernel.
			// The count is only known when the copy ends; wrapping the source
			// to count as we go would defeat splice.
			w, err := io.Copy(d.TCPConn, s.TCPConn)
			n.Add(w)
			return err
		}
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			if _, werr := dst.Write(buf[:nr]); werr != nil {
				return werr
			}
			n.Add(int64(nr))
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ENOTCONN)
}

// IsReset reports whether err is a connection reset by the peer.
func IsReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
