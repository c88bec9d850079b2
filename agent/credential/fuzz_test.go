package credential

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"maps"
	"math/big"
	"net/url"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/agent/identity"
)

// A fixed authority and node, so that certificates are the same from one
// fuzzing run to the next (Ed25519 signatures are deterministic).
type fuzzPKI struct {
	caKey   ed25519.PrivateKey
	ca      *x509.Certificate
	nodeKey ed25519.PublicKey
	v       *Verifier
}

var fuzzTime = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func newFuzzPKI(tb testing.TB) *fuzzPKI {
	caKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sluice authority fuzz"},
		NotBefore: fuzzTime.Add(-time.Hour), NotAfter: fuzzTime.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	node := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	return &fuzzPKI{caKey: caKey, ca: ca, nodeKey: node,
		v: &Verifier{Root: ca, ProjectID: "fuzz", Now: func() time.Time { return fuzzTime }}}
}

// leaf signs a node credential as Issue does, with ext as the attributes
// extension's value (nil: no extension).
func (p *fuzzPKI) leaf(tb testing.TB, ext []byte) []byte {
	node := identity.NodeID(p.nodeKey)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject:   pkix.Name{CommonName: node, Organization: []string{"sluice fuzz"}},
		NotBefore: fuzzTime.Add(-time.Minute), NotAfter: fuzzTime.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs: []*url.URL{NodeURI("fuzz", node)}}
	if ext != nil {
		tmpl.ExtraExtensions = []pkix.Extension{{Id: AttributesOID, Value: ext}}
	}
	der, err := x509.CreateCertificate(nil, tmpl, p.ca, p.nodeKey, p.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// FuzzAttributes puts arbitrary bytes in the attributes extension of a
// credential the authority signed, and checks what Verify makes of them
// against a strict reading of the format (package doc): DER, SEQUENCE OF
// SEQUENCE { UTF8String name, UTF8String value }, nothing more, each name
// once. Verify accepts exactly those, with exactly those attributes, and
// refuses the rest with ErrMalformed; it never panics.
func FuzzAttributes(f *testing.F) {
	p := newFuzzPKI(f)
	for _, attrs := range []map[string]string{
		{},
		{"postgres-inlet": "true"},
		{"env": "prod", "team": "ünïcode", "empty": ""},
	} {
		ext, err := marshalAttributes(attrs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ext)
	}
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x08, 0x30, 0x06, 0x0c, 0x01, 'a', 0x0c, 0x01, 'b'})
	f.Add([]byte{0x30, 0x0a, 0x30, 0x08, 0x0c, 0x01, 'a', 0x0c, 0x01, 'b', 0x05, 0x00})                                   // a third element
	f.Add([]byte{0x30, 0x10, 0x30, 0x06, 0x0c, 0x01, 'a', 0x0c, 0x01, 'b', 0x30, 0x06, 0x0c, 0x01, 'a', 0x0c, 0x01, 'c'}) // a name twice
	f.Add([]byte{0x30, 0x08, 0x30, 0x06, 0x13, 0x01, 'a', 0x0c, 0x01, 'b'})                                               // PrintableString
	f.Add([]byte{0x30, 0x81, 0x08, 0x30, 0x06, 0x0c, 0x01, 'a', 0x0c, 0x01, 'b'})                                         // long form length
	f.Add([]byte{0x30, 0x08, 0x30, 0x06, 0x0c, 0x01, 0xff, 0x0c, 0x01, 'b'})                                              // not UTF-8
	f.Fuzz(func(t *testing.T, ext []byte) {
		c, err := p.v.Verify([][]byte{p.leaf(t, ext)})
		want, werr := strictAttributes(ext)
		switch {
		case err != nil && werr == nil:
			t.Fatalf("extension %x of attributes %q refused: %v", ext, want, err)
		case err != nil:
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("extension %x (%v): %v does not wrap ErrMalformed", ext, werr, err)
			}
		case werr != nil:
			t.Fatalf("extension %x accepted as %q, but it is not the format: %v", ext, c.Attributes, werr)
		case !maps.Equal(c.Attributes, want):
			t.Fatalf("extension %x read as %q, want %q", ext, c.Attributes, want)
		}
	})
}

// strictAttributes reads an attributes extension by the letter of its
// format, independently of encoding/asn1.
func strictAttributes(ext []byte) (map[string]string, error) {
	list, rest, err := derTLV(ext, 0x30)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, errors.New("bytes after the list")
	}
	attrs := map[string]string{}
	for len(list) > 0 {
		var pair []byte
		if pair, list, err = derTLV(list, 0x30); err != nil {
			return nil, err
		}
		name, rest, err := derTLV(pair, 0x0c)
		if err != nil {
			return nil, err
		}
		value, rest, err := derTLV(rest, 0x0c)
		if err != nil {
			return nil, err
		}
		if len(rest) != 0 {
			return nil, errors.New("more than a name and a value")
		}
		if !utf8.Valid(name) || !utf8.Valid(value) {
			return nil, errors.New("not UTF-8")
		}
		if _, dup := attrs[string(name)]; dup {
			return nil, errors.New("a name twice")
		}
		attrs[string(name)] = string(value)
	}
	return attrs, nil
}

// derTLV reads one DER element of the given tag (low tag numbers only) and
// returns its contents and what follows it.
func derTLV(b []byte, tag byte) (contents, rest []byte, err error) {
	if len(b) < 2 || b[0] != tag {
		return nil, nil, errors.New("wrong tag")
	}
	n, hdr := int(b[1]), 2
	if n >= 0x80 {
		k := n & 0x7f
		if k == 0 || k > 3 || len(b) < 2+k || b[2] == 0 {
			return nil, nil, errors.New("bad length")
		}
		n = 0
		for _, c := range b[2 : 2+k] {
			n = n<<8 | int(c)
		}
		if n < 0x80 {
			return nil, nil, errors.New("long form for a short length")
		}
		hdr += k
	}
	if len(b)-hdr < n {
		return nil, nil, errors.New("truncated")
	}
	return b[hdr : hdr+n], b[hdr+n:], nil
}

// FuzzParseDER feeds arbitrary bytes as a peer's certificate to ParseDER
// and Verify. Neither may panic; Verify's errors are among its sentinels or
// the parser's; whatever Verify accepts is a genuine credential, with the
// same signed content.
func FuzzParseDER(f *testing.F) {
	p := newFuzzPKI(f)
	genuine := map[string]bool{}
	for _, attrs := range []map[string]string{{"postgres-inlet": "true"}, {"env": "prod", "a": "b"}} {
		ext, err := marshalAttributes(attrs)
		if err != nil {
			f.Fatal(err)
		}
		der := p.leaf(f, ext)
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			f.Fatal(err)
		}
		genuine[string(cert.RawTBSCertificate)] = true
		f.Add(der)
	}
	f.Add(p.ca.Raw)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, der []byte) {
		ParseDER(der)
		c, err := p.v.Verify([][]byte{der})
		if err != nil {
			return
		}
		if !genuine[string(c.Cert.RawTBSCertificate)] {
			t.Fatalf("Verify accepted a certificate the authority did not sign: %x", der)
		}
		if c.NodeID != identity.NodeID(p.nodeKey) || c.ProjectID != "fuzz" {
			t.Fatalf("Verify read node %q of project %q", c.NodeID, c.ProjectID)
		}
	})
}
