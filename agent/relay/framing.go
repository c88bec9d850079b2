package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Control messages are JSON objects, one a line ("\n"-terminated), as
// json.Encoder writes them. Each direction bounds the size of a line:
//
//   - agent → hub: maxAgentMessage (64 KiB). The hub reads at most that much
//     (plus the newline) of one message, before and after authentication,
//     and refuses a longer one with code "too_large", then closes.
//   - hub → agent: maxHubMessage (16 MiB): the hub is authenticated, and
//     its answers (revocation lists, later member lists) may be long.
//
// A reader holds no buffer until the first byte arrives, starts with a small
// one and grows it only as far as the message in flight needs.
const (
	MaxAgentMessage = 64 << 10
	MaxHubMessage   = 16 << 20
	frameStart      = 1 << 10 // first buffer of a frame reader
)

// frameReader reads newline-terminated JSON messages of at most max bytes.
type FrameReader struct {
	r   io.Reader
	max int

	buf        []byte
	start, end int // buf[start:end] is read and not yet returned
	scanned    int // buf[start:scanned] holds no newline
}

func NewFrameReader(r io.Reader, max int) *FrameReader {
	return &FrameReader{r: r, max: max}
}

// Decode reads the next message into v. It returns ErrMessageTooLarge as
// soon as more than max bytes came without a newline, an error wrapping
// ErrMalformed for a line that is not a JSON object, and read errors as
// they are (io.EOF at a clean end between messages).
func (f *FrameReader) Decode(v any) error {
	line, err := f.next()
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("decode control message: %w: %w", err, ErrMalformed)
	}
	return nil
}

// next returns the next line without its newline; it is valid until the
// next call.
func (f *FrameReader) next() ([]byte, error) {
	f.shrink()
	for {
		if i := bytes.IndexByte(f.buf[f.scanned:f.end], '\n'); i >= 0 {
			line := f.buf[f.start : f.scanned+i]
			f.start = f.scanned + i + 1
			f.scanned = f.start
			return line, nil
		}
		f.scanned = f.end
		if f.end-f.start > f.max {
			return nil, fmt.Errorf("read control message: more than %d bytes without an end: %w", f.max, ErrMessageTooLarge)
		}
		f.makeRoom()
		n, err := f.r.Read(f.buf[f.end:])
		f.end += n
		if err != nil && n == 0 {
			if errors.Is(err, io.EOF) && f.end > f.start {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// makeRoom makes space after f.end: it moves the pending bytes to the front
// or grows the buffer, never beyond max+1 (room for a whole message and its
// newline).
func (f *FrameReader) makeRoom() {
	if f.end < len(f.buf) {
		return
	}
	pending := f.end - f.start
	size := len(f.buf)
	if pending >= size/2 || size == 0 {
		size = min(max(2*size, frameStart), f.max+1)
	}
	buf := f.buf
	if size != len(f.buf) {
		buf = make([]byte, size)
	}
	copy(buf, f.buf[f.start:f.end])
	f.buf, f.start, f.end, f.scanned = buf, 0, pending, f.scanned-f.start
}

// shrink drops a buffer a large message grew, once what is pending fits in a
// small one: a long-lived connection keeps only frameStart bytes.
func (f *FrameReader) shrink() {
	pending := f.end - f.start
	if len(f.buf) <= frameStart || pending > frameStart/2 {
		return
	}
	buf := make([]byte, frameStart)
	copy(buf, f.buf[f.start:f.end])
	f.buf, f.start, f.end, f.scanned = buf, 0, pending, f.scanned-f.start
}

// encodeFrame encodes m as one line, refusing one longer than max.
func EncodeFrame(m *Message, max int) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s message: %w", m.Op, err)
	}
	if len(b) > max {
		return nil, fmt.Errorf("%s message of %d bytes, more than the hub takes (%d): %w", m.Op, len(b), max, ErrMessageTooLarge)
	}
	return append(b, '\n'), nil
}
