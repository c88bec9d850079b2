package channel

import (
	"bytes"
	"encoding/hex"
	"os"
	"testing"
)

// The known answers of docs/channel.md ("Test vectors"). They were checked
// against an implementation written from the document alone (Python's
// hmac and cryptography's AESGCM), not from this code.
var specKM = func() []byte {
	km := make([]byte, 64)
	for i := range km {
		km[i] = byte(i)
	}
	return km
}()

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// specKeys are the keys of docs/channel.md: per direction, generations 0
// and 1 of the ratchet.
var specKeys = []struct {
	dir             int // 0: client → server, 1: server → client
	gen             uint64
	secret, key, iv string
}{
	{0, 0, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "cc34fe26685e7ac712a6e57bead9ed6d", "13be3af313c87cc8a54b0c27"},
	{0, 1, "d93b6f8c21284feda12d7a0248cf75107f4c220af4f667ef927fb2530bc5f2a7", "4890e98b56a4fa6cb5d778e94c5f5499", "2b08ec2f903ea1843b60b319"},
	{1, 0, "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f", "bceae9ebee8bd6182b93374081bc6c05", "1079246612861200ee3f2fba"},
	{1, 1, "5529ee8f67720ac2f414e6165b4e5366c623a821e3deb70781215e3fa33982c9", "0711b2b4ca5eb188a6161006f4fd3757", "d69db37cfefa881737721035"},
}

// TestSpecKeys checks each generation's key and IV, and the ratchet's next
// secret, from the secret of the table's row.
func TestSpecKeys(t *testing.T) {
	for i, v := range specKeys {
		key, iv, next, err := generation(unhex(t, v.secret))
		if err != nil || hex.EncodeToString(key) != v.key || hex.EncodeToString(iv) != v.iv {
			t.Errorf("generation %d of direction %d: key %x iv %x (%v), want %s %s", v.gen, v.dir, key, iv, err, v.key, v.iv)
		}
		if i+1 < len(specKeys) && specKeys[i+1].dir == v.dir && hex.EncodeToString(next) != specKeys[i+1].secret {
			t.Errorf("generation %d of direction %d: next secret %x, want %s", v.gen, v.dir, next, specKeys[i+1].secret)
		}
	}
}

// TestSpecRatchet: a direction at generation g holds g's IV and g+1's
// secret; the secrets of g and earlier generations, and the exported bytes
// it started from, are nowhere in its state.
func TestSpecRatchet(t *testing.T) {
	for _, half := range [][]byte{specKM[:32], specKM[32:]} {
		d, err := newDirection(bytes.Clone(half))
		if err != nil {
			t.Fatal(err)
		}
		earlier := [][]byte{half}
		secret := half
		for g := range uint64(5) {
			d.seq = g << d.shift
			if _, err := d.nonce(); err != nil || d.gen != g {
				t.Fatalf("generation %d: %v, at %d", g, err, d.gen)
			}
			_, iv, next, err := generation(secret)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d.iv[:], iv) || !bytes.Equal(d.next[:], next) {
				t.Errorf("generation %d: state holds IV %x and next secret %x, want %x and %x", g, d.iv, d.next, iv, next)
			}
			for i, e := range earlier {
				if bytes.Contains(d.next[:], e[:8]) || bytes.Contains(d.iv[:], e[:8]) {
					t.Errorf("generation %d: the state still holds generation %d's secret", g, i)
				}
			}
			earlier = append(earlier, next)
			secret = next
		}
	}
}

// specRecords are the client's records of the vectors, in order of their
// sequence numbers.
var specRecords = []struct {
	seq uint64
	typ byte
	p   []byte
	rec string
}{
	{0, recData, []byte("hello"), "8000001625458e1bcc8847913cdcecb8e104c66c450b1eef0e60"},
	{1, recControl, []byte{0x10}, "80000012c60ba0d3416530909cb7bdbd9ccc00d406ba"},
	{2, recEnd, nil, "800000125d36865f65d7fff816cb493d819194a820ef"},
	{1 << 20, recData, []byte("hello"), "800000160d11a4b77c0cc8e524b16073da8b4e33134d5e916585"},
}

func TestSpecRecordsSealed(t *testing.T) {
	out, err := newDirection(specKM[:32])
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{out: out}
	for _, v := range specRecords {
		out.seq = v.seq
		buf := make([]byte, overhead+1+len(v.p))
		copy(buf[hdrLen:], v.p)
		rec, err := c.seal(v.typ, buf, len(v.p))
		if err != nil || hex.EncodeToString(rec) != v.rec {
			t.Errorf("record %d sealed as %x (%v), want %s", v.seq, rec, err, v.rec)
		}
	}
}

func TestSpecRecordsOpened(t *testing.T) {
	craw, sraw := pair(t)
	s, err := newConn(sraw, specKM, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range specRecords {
		s.in.seq = v.seq
		if _, err := craw.Write(unhex(t, v.rec)); err != nil {
			t.Fatal(err)
		}
		typ, p, err := s.next()
		if err != nil || typ != v.typ || !bytes.Equal(p, v.p) {
			t.Errorf("record %d opened as type %d %q (%v), want type %d %q", v.seq, typ, p, err, v.typ, v.p)
		}
	}
}

// TestSpecVectorsInDocument: the vectors above are the ones
// docs/channel.md publishes.
func TestSpecVectorsInDocument(t *testing.T) {
	doc, err := os.ReadFile("../../docs/channel.md")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, v := range specKeys {
		want = append(want, v.key, v.iv)
		if v.gen > 0 {
			want = append(want, v.secret)
		}
	}
	for _, v := range specRecords {
		want = append(want, v.rec)
	}
	for _, w := range want {
		if !bytes.Contains(doc, []byte("`"+w+"`")) {
			t.Errorf("docs/channel.md does not publish the vector %s", w)
		}
	}
}
