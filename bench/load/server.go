// Package load is the benchmark's load generator and its server. The server
// greets every connection with one byte as soon as it accepts it (so that a
// client can time connection setup to the first reply byte), then reads a
// mode byte: sink (count bytes until the client half-closes, answer with the
// count), echo (64-byte requests answered in kind), or idle (answer one
// byte, then hold the connection until the client closes it).
package load

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Protocol bytes.
const (
	Hello    = 'H' // the server's first byte on every connection
	ModeSink = 'S' // then count bytes until EOF, answer with the count (8 bytes, big endian)
	ModeEcho = 'E' // then echo MsgSize-byte messages until EOF
	ModeIdle = 'I' // then answer IdleAck and wait for EOF
	IdleAck  = 'K'
	MsgSize  = 64        // the request/response size of echo
	BufSize  = 128 << 10 // the sink's write (and read) buffer
)

// Server answers the load protocol on a listener.
type Server struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewServer returns a server with no listener yet.
func NewServer() *Server { return &Server{conns: map[net.Conn]struct{}{}} }

// Serve accepts connections on l until l is closed, answering each on its
// own goroutine. It returns nil once l has been closed by Close.
func (s *Server) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept load connection: %w", err)
		}
		if !s.add(c) {
			c.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.remove(c)
			_ = handle(c)
		}()
	}
}

func (s *Server) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close closes every open connection and waits for their handlers. The
// listener is the caller's to close.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// handle serves one connection.
func handle(c net.Conn) error {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if _, err := c.Write([]byte{Hello}); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // a setup-time probe: connected, got the hello, left
		}
		return fmt.Errorf("read mode: %w", err)
	}
	switch mode[0] {
	case ModeSink:
		return sink(c)
	case ModeEcho:
		return echo(c)
	case ModeIdle:
		if _, err := c.Write([]byte{IdleAck}); err != nil {
			return fmt.Errorf("write idle ack: %w", err)
		}
		_, err := io.Copy(io.Discard, c)
		return err
	}
	return fmt.Errorf("read mode: unknown mode %q", mode[0])
}

// sink counts bytes until EOF and answers with the count.
func sink(c net.Conn) error {
	buf := make([]byte, BufSize)
	var n uint64
	for {
		k, err := c.Read(buf)
		n += uint64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read sink: %w", err)
		}
	}
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], n)
	if _, err := c.Write(out[:]); err != nil {
		return fmt.Errorf("write count: %w", err)
	}
	return nil
}

// echo answers MsgSize-byte messages until EOF.
func echo(c net.Conn) error {
	buf := make([]byte, MsgSize)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read echo: %w", err)
		}
		if _, err := c.Write(buf); err != nil {
			return fmt.Errorf("write echo: %w", err)
		}
	}
}
