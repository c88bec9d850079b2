package credential

import (
	"errors"
	"testing"
)

// TestAttributesEncodingIsStrict: the attributes extension is read only in
// the encoding Issue makes. Before, encoding/asn1's leniency let a signed
// credential carry attributes that Sluice read differently from other
// readers: a second value for a name silently replaced the first, elements
// after a name and value were dropped, and names or values of other string
// types were taken as UTF-8 (FuzzAttributes).
func TestAttributesEncodingIsStrict(t *testing.T) {
	p := newFuzzPKI(t)
	for _, tc := range []struct {
		name string
		ext  []byte
	}{
		{"a name twice", []byte{0x30, 0x10, 0x30, 0x06, 0x0c, 0x01, 'a', 0x0c, 0x01, 'b', 0x30, 0x06, 0x0c, 0x01, 'a', 0x0c, 0x01, 'c'}},
		{"a third element", []byte{0x30, 0x0a, 0x30, 0x08, 0x0c, 0x01, 'a', 0x0c, 0x01, 'b', 0x05, 0x00}},
		{"a PrintableString name", []byte{0x30, 0x08, 0x30, 0x06, 0x13, 0x01, 'a', 0x0c, 0x01, 'b'}},
		{"a non-minimal length", []byte{0x30, 0x81, 0x08, 0x30, 0x06, 0x0c, 0x01, 'a', 0x0c, 0x01, 'b'}},
	} {
		if c, err := p.v.Verify([][]byte{p.leaf(t, tc.ext)}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, %v; want ErrMalformed", tc.name, c, err)
		}
	}
	ok := []byte{0x30, 0x08, 0x30, 0x06, 0x0c, 0x01, 'a', 0x0c, 0x01, 'b'}
	if c, err := p.v.Verify([][]byte{p.leaf(t, ok)}); err != nil || len(c.Attributes) != 1 || c.Attributes["a"] != "b" {
		t.Errorf("a=b: %v, %v", c, err)
	}
}
