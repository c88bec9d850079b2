package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
)

// chunkReader returns src in reads of the sizes sizes gives in turn (1 to
// 256 bytes), as a peer's segments would come.
type chunkReader struct {
	src   []byte
	sizes []byte
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.src) == 0 {
		return 0, io.EOF
	}
	n := 1 << 16
	if len(c.sizes) > 0 {
		n = int(c.sizes[c.i%len(c.sizes)]) + 1
		c.i++
	}
	n = copy(p, c.src[:min(n, len(c.src))])
	c.src = c.src[n:]
	return n, nil
}

// FuzzFrameReader feeds arbitrary bytes, in reads of arbitrary sizes, to the
// reader of control messages with a small limit and with the hub's own. It
// must never panic and never hold more than the limit and its newline, and
// it must read exactly what the framing rules say, worked out here line by
// line: each line of at most the limit decodes into a message as
// encoding/json does, or is refused with ErrMalformed; a line over the
// limit is refused with ErrMessageTooLarge (after which the hub reads no
// more); bytes after the last newline end in io.ErrUnexpectedEOF (or
// ErrMessageTooLarge, over the limit), nothing after it in io.EOF.
func FuzzFrameReader(f *testing.F) {
	for _, seed := range []string{
		"",
		"\n",
		`{"op":"hello"}` + "\n",
		`{"op":"enroll","ticket":"x"}` + "\n" + `{"op":"dial","relay":"pg","id":7}` + "\n",
		`{"op":"present","credential":"AAEC","generation":3}` + "\n",
		`{"op":"policies","policies":["a","b == \"c\""]}` + "\n",
		`{"op":"member","statement":{"body":"e30=","sig":"AA=="}}` + "\n",
		`{"op":"members","words":[{"body":"e30=","sig":""}],"heartbeat":null}` + "\n",
		`{"op":"a"}` + "\n" + `{"op":`,
		"null\n[]\n\"x\"\n",
		`{"op":"x","id":-1}` + "\n",
		`{"op":"x","token":"not base64"}` + "\n",
		"{\"op\":\"\xff\"}\n",
		string(bytes.Repeat([]byte("A"), 300)),
		`{"op":"` + string(bytes.Repeat([]byte("x"), 250)) + `"}` + "\n" + `{"op":"b"}` + "\n",
	} {
		f.Add([]byte(seed), []byte{0}, uint16(0))
		f.Add([]byte(seed), []byte{7, 255, 0, 3}, uint16(64))
	}
	f.Fuzz(func(t *testing.T, input, sizes []byte, limit uint16) {
		lim := MaxAgentMessage
		if limit > 0 {
			lim = int(limit)
		}
		fr := NewFrameReader(&chunkReader{src: input, sizes: sizes}, lim)
		rest := input
		for i := 0; ; i++ {
			var got Message
			err := fr.Decode(&got)
			if len(fr.buf) > lim+1 {
				t.Fatalf("message %d: the reader holds %d bytes for a limit of %d", i, len(fr.buf), lim)
			}
			// What the rules say of the next line.
			nl := bytes.IndexByte(rest, '\n')
			switch {
			case nl < 0 && len(rest) == 0:
				if err != io.EOF {
					t.Fatalf("message %d: input consumed, got %v, want io.EOF", i, err)
				}
				return
			case nl < 0 && len(rest) > lim, nl > lim:
				if !errors.Is(err, ErrMessageTooLarge) {
					t.Fatalf("message %d: a line of more than %d bytes read as %+v, %v; want ErrMessageTooLarge", i, lim, got, err)
				}
				return
			case nl < 0:
				if err != io.ErrUnexpectedEOF {
					t.Fatalf("message %d: input ends in %d bytes without a newline: %v, want io.ErrUnexpectedEOF", i, len(rest), err)
				}
				return
			}
			line := rest[:nl]
			rest = rest[nl+1:]
			var want Message
			if jerr := json.Unmarshal(line, &want); jerr != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("message %d: %q, which encoding/json refuses (%v), read as %+v, %v; want ErrMalformed", i, line, jerr, got, err)
				}
				continue // the hub closes here; the framing would go on
			}
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("message %d: %q read as %+v, %v; want %+v", i, line, got, err, want)
			}
		}
	})
}
