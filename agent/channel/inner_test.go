package channel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

// The record type travels inside the ciphertext (docs/channel.md, section 3):
// what the hub sees of a record is its size.

// sealInner seals inner (content, type and padding) as d's next record,
// as a peer that pads as it likes would.
func sealInner(t *testing.T, d *direction, inner []byte) []byte {
	t.Helper()
	nonce, err := d.nonce()
	if err != nil {
		t.Fatal(err)
	}
	l := len(inner) + tagLen
	hdr := []byte{recSealed, byte(l >> 16), byte(l >> 8), byte(l)}
	return d.aead.Seal(hdr, nonce, inner, hdr)
}

// TestHeadersAreAlike: an end record, a control record and a one-byte data
// record have the same header and the same size on the wire, so the hub
// cannot tell a half-close or an open request from a byte of data.
func TestHeadersAreAlike(t *testing.T) {
	c, _ := conns(t)
	var sizes []int
	var headers [][]byte
	for _, r := range []record{{recData, []byte{'x'}}, {recControl, []byte{0x10}}, endRecord} {
		rec := sealed(t, c, r)
		sizes = append(sizes, len(rec))
		headers = append(headers, rec[:hdrLen])
	}
	for i := range sizes {
		if sizes[i] != sizes[0] || !bytes.Equal(headers[i], headers[0]) {
			t.Fatalf("records of types data (1 byte), control, end: %d bytes with headers %x; want them alike", sizes, headers)
		}
	}
	if headers[0][0] != recSealed {
		t.Errorf("header starts with %#x, want %#x", headers[0][0], recSealed)
	}
}

// TestInnerType: what the receiver makes of inner plaintexts a peer with the
// key may send: padding of any length is taken off; no type, an unknown
// type, an end record with content and a control record of other than one
// byte are refused.
func TestInnerType(t *testing.T) {
	for _, tc := range []struct {
		name  string
		inner []byte
		typ   byte   // want, 0: refused
		p     []byte // want
		ctl   bool   // read with ReadControl
	}{
		{"data", []byte("abc\x01"), recData, []byte("abc"), false},
		{"data ending in zeros, padded", []byte("ab\x00\x00\x01\x00\x00\x00"), recData, []byte("ab\x00\x00"), false},
		{"empty data", []byte{recData}, recData, nil, false},
		{"control, padded", append([]byte{7, recControl}, make([]byte, 1000)...), recControl, []byte{7}, true},
		{"end, unpadded", []byte{recEnd}, recEnd, nil, false},
		{"end, padded", []byte{recEnd, 0, 0}, recEnd, nil, false},
		{"all zeros", make([]byte, 5), 0, nil, false},
		{"one zero", []byte{0}, 0, nil, false},
		{"unknown type", []byte("abc\x04"), 0, nil, false},
		{"end with content", []byte("x\x02"), 0, nil, false},
		{"control of two bytes", []byte{1, 2, recControl}, 0, nil, true},
		{"control of no byte", []byte{recControl, 0}, 0, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := conns(t)
			s.OnControl = func(byte) error { return nil }
			c.Raw().Write(sealInner(t, c.out, tc.inner))
			c.Raw().CloseWrite()
			var typ byte
			var p []byte
			var err error
			if tc.ctl {
				var b byte
				b, err = s.ReadControl()
				typ, p = recControl, []byte{b}
			} else {
				typ, p, err = s.next()
			}
			if tc.typ == 0 {
				if !errors.Is(err, ErrBadRecord) {
					t.Errorf("inner %x: type %d, %x, %v; want ErrBadRecord", tc.inner, typ, p, err)
				}
				return
			}
			if err != nil || typ != tc.typ || !bytes.Equal(p, tc.p) {
				t.Errorf("inner %x: type %d, %x, %v; want type %d, %x", tc.inner, typ, p, err, tc.typ, tc.p)
			}
		})
	}
}

// TestPaddingLimit: content, type and padding together may not exceed
// MaxRecord+1 bytes, whatever the split.
func TestPaddingLimit(t *testing.T) {
	for _, n := range []int{maxInner, maxInner + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c, s := conns(t)
			inner := make([]byte, n)
			inner[0] = recEnd // an end record and its padding
			rec := sealInner(t, c.out, inner)
			go func() {
				c.Raw().Write(rec)
				c.Raw().CloseWrite()
			}()
			_, err := io.ReadAll(s)
			if n <= maxInner && err != nil {
				t.Errorf("end record padded to %d bytes: %v, want a clean end", n, err)
			}
			if n > maxInner && !errors.Is(err, ErrBadRecord) {
				t.Errorf("end record padded to %d bytes: %v, want ErrBadRecord", n, err)
			}
		})
	}
}
