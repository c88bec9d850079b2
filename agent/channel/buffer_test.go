package channel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sealed returns the records of payloads, types data unless given, sealed by
// c in order.
func sealed(t *testing.T, c *Conn, recs ...record) []byte {
	t.Helper()
	var out []byte
	for _, r := range recs {
		buf := make([]byte, overhead+1+len(r.p))
		copy(buf[hdrLen:], r.p)
		rec, err := c.seal(r.typ, buf, len(r.p))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec...)
	}
	return out
}

type record struct {
	typ byte
	p   []byte
}

func data(n int, fill byte) record { return record{recData, bytes.Repeat([]byte{fill}, n)} }

var endRecord = record{typ: recEnd}

// queue writes b to the peer of s and returns once all of it waits in s's
// receive queue, so that s's reads see exactly what a busy sender leaves
// there: each read fills its buffer.
func queue(t *testing.T, c, s *Conn, b []byte) {
	t.Helper()
	if err := s.raw.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	go c.raw.Write(b)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		var ierr error
		err := s.rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
		if err != nil || ierr != nil {
			t.Fatal(err, ierr)
		}
		if n == len(b) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d bytes arrived", n, len(b))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGapAtBufferEnd: a record that ends 1 to 3 bytes before the end of the
// read buffer leaves the next record's header split across the end. The
// reader must move those bytes to the front and read on, not read into
// nothing, take that for the end of the connection and report the clean
// stream truncated (issue 16). Every gap size, in a small and a large
// buffer.
func TestGapAtBufferEnd(t *testing.T) {
	for _, large := range []bool{false, true} {
		for gap := range 9 {
			t.Run(fmt.Sprintf("large=%v/gap=%d", large, gap), func(t *testing.T) {
				c, s := conns(t)
				var recs []record
				size := smallSize // the buffer the gap is left in
				if large {
					size = bufSize
					recs = append(recs, data(MaxRecord, 1)) // moves the reader to a large buffer
				}
				filled := hdrLen + maxInner + tagLen
				if !large {
					filled = 0
				}
				// This record ends gap bytes before the end of the buffer.
				recs = append(recs, data(size-filled-gap-overhead, 2), data(100, 3), endRecord)
				queue(t, c, s, sealed(t, c, recs...))
				for i, want := range recs {
					typ, p, err := s.next()
					if err != nil {
						t.Fatalf("record %d of %d: %v", i+1, len(recs), err)
					}
					if typ != want.typ || !bytes.Equal(p, want.p) {
						t.Fatalf("record %d: type %d, %d bytes; want type %d, %d bytes", i+1, typ, len(p), want.typ, len(want.p))
					}
					if i == len(recs)-3 {
						// The setup did leave the gap it meant to.
						if s.buf == nil || len(*s.buf) != size || s.w != size || s.w-s.r != gap {
							t.Fatalf("after record %d: buffer %d bytes, [%d:%d]; want %d bytes with %d left at its end", i+1, bufLen(s), s.r, s.w, size, gap)
						}
					}
				}
			})
		}
	}
}

func bufLen(c *Conn) int {
	if c.buf == nil {
		return 0
	}
	return len(*c.buf)
}

// TestSmallRecordsTransfer: streams of records of 1 to 200 bytes, read by a
// late reader, arrive whole and end cleanly (issue 16: 31 of 40 such
// transfers were reset as truncated).
func TestSmallRecordsTransfer(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(16, 2))
	for i := range 40 {
		c, s := conns(t)
		var recs []record
		var want []byte
		for len(want) < 60<<10 {
			r := data(1+rng.IntN(200), byte(len(recs)))
			recs = append(recs, r)
			want = append(want, r.p...)
		}
		queue(t, c, s, sealed(t, c, append(recs, endRecord)...))
		got, err := io.ReadAll(s)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("transfer %d: read %d of %d bytes, then %v", i, len(got), len(want), err)
		}
	}
}

// countBig counts the large buffers taken from a fresh pool while f runs.
func countBig(f func()) int64 {
	var n atomic.Int64
	bigPool = sync.Pool{New: func() any { n.Add(1); b := make([]byte, bufSize); return &b }}
	defer func() { bigPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }} }()
	f()
	return n.Load()
}

// TestHeaderAloneKeepsSmallBuffer: a header that announces a large record,
// which nothing has authenticated yet, does not make the reader take a large
// buffer; the body's bytes do, once they fill the small one (issue 16).
func TestHeaderAloneKeepsSmallBuffer(t *testing.T) {
	for _, tc := range []struct {
		body int   // bytes of the announced record that arrive
		want int64 // large buffers taken
	}{
		{0, 0},
		{100, 0},
		{smallSize - hdrLen - 1, 0},
		{smallSize - hdrLen, 1}, // a full small buffer: now it grows
		{3 * smallSize, 1},
	} {
		c, s := conns(t)
		l := maxInner + tagLen
		hdr := []byte{recSealed, byte(l >> 16), byte(l >> 8), byte(l)}
		queue(t, c, s, append(hdr, make([]byte, tc.body)...))
		c.raw.CloseWrite()
		var err error
		got := countBig(func() { _, _, err = s.next() })
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("header and %d bytes, then FIN: %v, want ErrTruncated", tc.body, err)
		}
		if got != tc.want {
			t.Errorf("header and %d bytes of its body: %d large buffers taken, want %d", tc.body, got, tc.want)
		}
	}
}

// TestMakeRoom checks each case of makeRoom: there is room to read after it,
// nothing pending is lost, and only a full small buffer grows.
func TestMakeRoom(t *testing.T) {
	big := hdrLen + maxInner + tagLen
	for _, tc := range []struct {
		name         string
		size, r, w   int // the buffer before
		need         int
		wantSize     int
		wantR, wantW int
	}{
		{"room where it is", smallSize, 100, 200, 500, smallSize, 100, 200},
		{"header split at the end", smallSize, smallSize - 2, smallSize, hdrLen, smallSize, 0, 2},
		{"header split at the end of a large buffer", bufSize, bufSize - 3, bufSize, hdrLen, bufSize, 0, 3},
		{"body runs past the end", smallSize, 10000, smallSize, 9000, smallSize, 0, smallSize - 10000},
		{"header alone of a large record", smallSize, 0, hdrLen, big, smallSize, 0, hdrLen},
		{"large record, small buffer not yet full", smallSize, 0, 9000, big, smallSize, 0, 9000},
		{"large record after others: move first", smallSize, 5000, smallSize, big, smallSize, 0, smallSize - 5000},
		{"large record fills the small buffer", smallSize, 0, smallSize, big, bufSize, 0, smallSize},
	} {
		c := &Conn{idle: &idleReader{}}
		bp := getBuf(tc.size == bufSize)
		for i := range *bp {
			(*bp)[i] = byte(i)
		}
		c.buf, c.r, c.w = bp, tc.r, tc.w
		pending := bytes.Clone((*bp)[tc.r:tc.w])
		c.makeRoom(tc.need)
		if len(*c.buf) != tc.wantSize || c.r != tc.wantR || c.w != tc.wantW {
			t.Errorf("%s: buffer %d bytes [%d:%d], want %d bytes [%d:%d]", tc.name, len(*c.buf), c.r, c.w, tc.wantSize, tc.wantR, tc.wantW)
		}
		if c.w >= len(*c.buf) {
			t.Errorf("%s: no room to read", tc.name)
		}
		if !bytes.Equal((*c.buf)[c.r:c.w], pending) {
			t.Errorf("%s: the pending bytes changed", tc.name)
		}
		c.release()
	}
}

// TestEndRecordIsEmpty: an end record that carries bytes is refused.
func TestEndRecordIsEmpty(t *testing.T) {
	c, s := conns(t)
	queue(t, c, s, sealed(t, c, data(10, 1), record{recEnd, []byte("x")}))
	if _, err := io.ReadAll(s); !errors.Is(err, ErrBadRecord) {
		t.Errorf("read up to an end record with a byte: %v, want ErrBadRecord", err)
	}
}

// TestSequenceNumbersRunOut: the last sequence number is never used, so the
// counter never wraps to 0 and a nonce never comes back. (Both ends skip to
// the last generation without turning the ratchet 2^44 times: their keys are
// generation 0's, the same at both.)
func TestSequenceNumbersRunOut(t *testing.T) {
	c, s := conns(t)
	c.out.seq, c.out.gen = maxSeq-1, (maxSeq-1)>>rekeyLog
	if _, err := c.Write([]byte("last")); err != nil {
		t.Fatalf("write of the record before the last: %v", err)
	}
	if _, err := c.Write([]byte("one too many")); !errors.Is(err, ErrBadRecord) {
		t.Errorf("write past the last record: %v, want ErrBadRecord", err)
	}
	s.in.seq, s.in.gen = maxSeq-1, (maxSeq-1)>>rekeyLog
	b := make([]byte, 4)
	if _, err := io.ReadFull(s, b); err != nil || string(b) != "last" {
		t.Fatalf("read of the record before the last: %q, %v", b, err)
	}
}

// TestBadRecordEndsReading: after a record fails, the reader gives its
// buffer back and fails ever after, even when a genuine record follows
// whose sequence number would now match.
func TestBadRecordEndsReading(t *testing.T) {
	c, s := conns(t)
	stream := sealed(t, c, data(100, 1), data(100, 2), endRecord)
	stream[hdrLen] ^= 1 // the first record's ciphertext
	queue(t, c, s, stream)
	for i := range 3 {
		typ, p, err := s.next()
		if !errors.Is(err, ErrBadRecord) {
			t.Fatalf("read %d after a bad record: type %d, %d bytes, %v; want ErrBadRecord", i+1, typ, len(p), err)
		}
		if s.buf != nil {
			t.Fatalf("read %d: the reader holds its buffer after a bad record", i+1)
		}
	}
	if s.Idle() {
		t.Error("a channel whose record failed counts as idle (reusable)")
	}
}

// TestReadDeadlineResumes: a read that times out in the middle of a record
// loses nothing: once the deadline is moved, the next read opens the whole
// record, as on any net.Conn. (The reader used to drop the part it had, and
// the next record then failed.)
func TestReadDeadlineResumes(t *testing.T) {
	c, s := conns(t)
	recs := sealed(t, c, data(3000, 1), data(10, 2))
	for _, cut := range []int{0, 2, hdrLen + 100} {
		if _, err := c.raw.Write(recs[:cut]); err != nil {
			t.Fatal(err)
		}
		s.raw.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, _, err := s.next(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read of %d bytes of a record before the deadline: %v, want a timeout", cut, err)
		}
		if _, err := c.raw.Write(recs[cut:]); err != nil {
			t.Fatal(err)
		}
		s.raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i, want := range []record{data(3000, 1), data(10, 2)} {
			typ, p, err := s.next()
			if err != nil || typ != want.typ || !bytes.Equal(p, want.p) {
				t.Fatalf("cut at %d, record %d after the timeout: type %d, %d bytes, %v", cut, i+1, typ, len(p), err)
			}
		}
		recs = sealed(t, c, data(3000, 1), data(10, 2))
	}
}
