package relay

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestFrameReader(t *testing.T) {
	const max = 100
	msg := func(n int) string { // a message line of n bytes
		return `{"op":"` + strings.Repeat("x", n-9) + `"}`
	}
	tests := []struct {
		name  string
		input string
		want  []string // the ops read, then the error
		err   error
	}{
		{"two messages", `{"op":"a"}` + "\n" + `{"op":"b"}` + "\n", []string{"a", "b"}, io.EOF},
		{"exactly the limit", msg(max) + "\n", []string{strings.Repeat("x", max-9)}, io.EOF},
		{"one byte over", msg(max+1) + "\n", nil, ErrMessageTooLarge},
		{"no end", `{"op":"` + strings.Repeat("x", 10*max), nil, ErrMessageTooLarge},
		{"ends mid-message", `{"op":"a"}` + "\n" + `{"op":`, []string{"a"}, io.ErrUnexpectedEOF},
		{"not JSON", "hello\n", nil, ErrMalformed},
		{"a big one after a small one", `{"op":"a"}` + "\n" + msg(max+50) + "\n", []string{"a"}, ErrMessageTooLarge},
	}
	for _, tt := range tests {
		for _, r := range []struct {
			name string
			wrap func(io.Reader) io.Reader
		}{{"whole", func(r io.Reader) io.Reader { return r }}, {"byte by byte", iotest.OneByteReader}} {
			t.Run(tt.name+"/"+r.name, func(t *testing.T) {
				f := NewFrameReader(r.wrap(strings.NewReader(tt.input)), max)
				var got []string
				var err error
				for {
					var m Message
					if err = f.Decode(&m); err != nil {
						break
					}
					got = append(got, m.Op)
				}
				if strings.Join(got, ",") != strings.Join(tt.want, ",") || !errors.Is(err, tt.err) {
					t.Errorf("read %q then %v; want %q then %v", got, err, tt.want, tt.err)
				}
			})
		}
	}
}

// TestFrameReaderBounded: however much a peer sends without a newline, the
// reader holds at most max+1 bytes of it.
func TestFrameReaderBounded(t *testing.T) {
	const max = 64 << 10
	endless := io.MultiReader(strings.NewReader(`{"op":"enroll","ticket":"`), iotest.OneByteReader(repeatReader('A')))
	f := NewFrameReader(endless, max)
	var m Message
	if err := f.Decode(&m); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("endless message: %v, want ErrMessageTooLarge", err)
	}
	if len(f.buf) > max+1 {
		t.Errorf("the reader grew its buffer to %d bytes for a limit of %d", len(f.buf), max)
	}
}

// TestFrameReaderShrinks: a large message does not leave its buffer behind
// on a long-lived connection.
func TestFrameReaderShrinks(t *testing.T) {
	big := `{"op":"` + strings.Repeat("x", 1<<20) + `"}` + "\n"
	f := NewFrameReader(strings.NewReader(big+`{"op":"small"}`+"\n"), 2<<20)
	var m Message
	if err := f.Decode(&m); err != nil {
		t.Fatal(err)
	}
	if err := f.Decode(&m); err != nil || m.Op != "small" {
		t.Fatalf("second message: %q, %v", m.Op, err)
	}
	if len(f.buf) > frameStart {
		t.Errorf("after a small message the reader holds %d bytes, want at most %d", len(f.buf), frameStart)
	}
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func TestEncodeFrame(t *testing.T) {
	b, err := EncodeFrame(&Message{Op: OpPing}, MaxAgentMessage)
	if err != nil || !bytes.HasSuffix(b, []byte("}\n")) || bytes.Count(b, []byte("\n")) != 1 {
		t.Fatalf("encodeFrame: %q, %v; want one line", b, err)
	}
	if _, err := EncodeFrame(&Message{Op: OpClaim, Relay: strings.Repeat("r", MaxAgentMessage)}, MaxAgentMessage); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("encodeFrame of a message over the limit: %v, want ErrMessageTooLarge", err)
	}
}
