package channel

import (
	"net"
	"syscall"
)

// plainRoom is where a data record's content goes in a buffer: the type
// and the tag follow it.
func plainRoom(b []byte) []byte { return b[hdrLen:min(len(b)-1-tagLen, hdrLen+MaxRecord)] }

// whole is the whole buffer.
func whole(b []byte) []byte { return b }

// idleReader waits until a socket is readable without holding a buffer,
// then reads into window of a pooled one, large or small.
type idleReader struct {
	rc     syscall.RawConn
	window func([]byte) []byte
	big    bool // read into a large buffer
	fn     func(fd uintptr) bool

	// results of the last fn
	bp  *[]byte
	nr  int
	err error
}

func newIdleReader(rc syscall.RawConn, window func([]byte) []byte) *idleReader {
	r := &idleReader{rc: rc, window: window}
	r.fn = r.readFD // bound once: no closure to allocate per read
	return r
}

// readFD is RawConn.Read's callback: false (and no buffer held) on EAGAIN.
func (r *idleReader) readFD(fd uintptr) bool {
	r.bp = getBuf(r.big)
	b := r.window(*r.bp)
	for {
		r.nr, r.err = syscall.Read(int(fd), b)
		if r.err != syscall.EINTR {
			break
		}
	}
	if r.err == syscall.EAGAIN {
		putBuf(r.bp)
		r.bp = nil
		return false
	}
	return true
}

// read returns a buffer holding nr bytes read; nr == 0 with a nil error is
// EOF.
func (r *idleReader) read() (bp *[]byte, nr int, err error) {
	r.bp, r.nr, r.err = nil, 0, nil
	err = r.rc.Read(r.fn)
	if err == nil {
		err = r.err
	}
	if err != nil || r.nr <= 0 {
		if r.bp != nil {
			putBuf(r.bp)
		}
		r.bp = nil
		return nil, 0, wrapRead(err)
	}
	bp, r.bp = r.bp, nil
	return bp, r.nr, nil
}

func wrapRead(err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: "read", Net: "tcp", Err: err}
}
