package chaos_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/testenv"
)

// The stream service: the test is both the app (in the app container's
// namespace) and the service (in PostgreSQL's), around the portal. A
// stream starts with a mode byte and an 8-byte ID from the app:
//
//	'P'  probe: the service answers streamMarker and ends cleanly
//	'D'  download: the service sends until the stream breaks
//	'U'  upload: the app sends until the stream breaks
//
// Each side reads all along (the sender too), so that it sees how the
// stream ended: a clean EOF, or a reset.

// streamMarker fills every stream: plaintext that must never be seen
// outside the companies.
const streamMarker = "SLUICE-STREAM-PLAINTEXT"

var streamChunk = bytes.Repeat([]byte(streamMarker+"-0123456789abcdef-"), 32<<10/41+1)[:32<<10]

// streamEnd is how one side of a stream ended.
type streamEnd struct {
	Read, Sent        int64
	ReadErr, WriteErr error
	reset, cleanEOF   bool
	at                time.Time
}

// outcome names how the side saw the stream end: "reset", "EOF" (a clean
// end: the truncation this suite exists to rule out) or the error.
func (e streamEnd) outcome() string {
	switch {
	case e.reset:
		return "reset"
	case e.cleanEOF:
		return "EOF"
	case e.ReadErr != nil:
		return e.ReadErr.Error()
	}
	return fmt.Sprint(e.WriteErr)
}

// Linux reports a reset once, to the first of a socket's reader and writer
// to ask; the other then sees the stream's end (EOF, EPIPE). So a side saw
// the reset if either did; a clean EOF is an EOF no reset came with.
func ended(read, sent int64, rerr, werr error) streamEnd {
	e := streamEnd{Read: read, Sent: sent, ReadErr: rerr, WriteErr: werr, at: time.Now()}
	e.reset = errors.Is(rerr, syscall.ECONNRESET) || errors.Is(werr, syscall.ECONNRESET)
	e.cleanEOF = !e.reset && errors.Is(rerr, io.EOF)
	return e
}

// runStream reads c until it ends, and, if send, writes streamChunk until
// the write fails; progress counts the bytes it reads (or sends).
func runStream(c net.Conn, send bool, progress *atomic.Int64) streamEnd {
	var sent atomic.Int64
	werr := make(chan error, 1)
	if send {
		go func() {
			for {
				n, err := c.Write(streamChunk)
				sent.Add(int64(n))
				progress.Add(int64(n))
				if err != nil {
					werr <- err
					return
				}
			}
		}()
	}
	var read int64
	buf := make([]byte, 32<<10)
	var rerr error
	for {
		n, err := c.Read(buf)
		read += int64(n)
		if !send {
			progress.Add(int64(n))
		}
		if err != nil {
			rerr = err
			break
		}
	}
	var w error
	if send {
		select {
		case w = <-werr:
		case <-time.After(10 * time.Second):
			w = errors.New("still writing 10s after its read ended")
		}
	}
	return ended(read, sent.Load(), rerr, w)
}

// streamServer is the service side.
type streamServer struct {
	ln     net.Listener
	nextID atomic.Uint64

	mu       sync.Mutex // guards the following
	ends     map[uint64]chan streamEnd
	progress map[uint64]*atomic.Int64
}

// startStreams starts the service in ns, on streamListen.
func startStreams(ns *testenv.NS) (*streamServer, error) {
	ln, err := ns.ListenTCP(streamListen)
	if err != nil {
		return nil, err
	}
	s := &streamServer{ln: ln, ends: map[uint64]chan streamEnd{}, progress: map[uint64]*atomic.Int64{}}
	go s.serve()
	return s, nil
}

func (s *streamServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.handle(c)
	}
}

// expect registers a stream ID before the app opens it.
func (s *streamServer) expect(id uint64) (<-chan streamEnd, *atomic.Int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, p := make(chan streamEnd, 1), new(atomic.Int64)
	s.ends[id], s.progress[id] = ch, p
	return ch, p
}

func (s *streamServer) handle(c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var head [9]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	id := binary.BigEndian.Uint64(head[1:])
	s.mu.Lock()
	ch, progress := s.ends[id], s.progress[id]
	delete(s.ends, id)
	delete(s.progress, id)
	s.mu.Unlock()
	switch head[0] {
	case 'P':
		c.Write([]byte(streamMarker))
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	case 'D', 'U':
		if ch == nil {
			return
		}
		ch <- runStream(c, head[0] == 'D', progress)
	}
}

// open opens a stream of mode from the app's namespace.
func (s *streamServer) open(ctx context.Context, app *testenv.NS, mode byte, id uint64) (net.Conn, error) {
	c, err := app.DialTCP(ctx, streamService, 2*time.Second)
	if err != nil {
		return nil, err
	}
	var head [9]byte
	head[0] = mode
	binary.BigEndian.PutUint64(head[1:], id)
	if _, err := c.Write(head[:]); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// probe checks that a new stream works end to end: the marker, then a
// clean end.
func (s *streamServer) probe(ctx context.Context, app *testenv.NS) error {
	c, err := s.open(ctx, app, 'P', 0)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != streamMarker {
		return fmt.Errorf("stream probe: %q, %v", got, err)
	}
	return nil
}

// stream is a stream in progress: the app's side in the test, the
// service's in the server.
type stream struct {
	app, service       <-chan streamEnd
	appMoved, received *atomic.Int64 // bytes the app moved; the service read
	conn               net.Conn
}

// start opens a download (the service sends) or an upload (the app sends).
func (s *streamServer) start(ctx context.Context, app *testenv.NS, download bool) (*stream, error) {
	id := s.nextID.Add(1)
	service, serviceProgress := s.expect(id)
	mode := byte('U')
	if download {
		mode = 'D'
	}
	c, err := s.open(ctx, app, mode, id)
	if err != nil {
		return nil, err
	}
	st := &stream{service: service, appMoved: new(atomic.Int64), conn: c}
	st.received = serviceProgress
	if download {
		st.received = st.appMoved
	}
	appEnd := make(chan streamEnd, 1)
	go func() {
		appEnd <- runStream(c, !download, st.appMoved)
		c.Close()
	}()
	st.app = appEnd
	return st, nil
}
