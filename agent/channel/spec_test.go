package channel

import (
	"bytes"
	"encoding/hex"
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

func TestSpecKeys(t *testing.T) {
	for _, v := range []struct {
		secret  []byte
		gen     uint64
		key, iv string
	}{
		{specKM[:32], 0, "768b914b8d5747b7be71d2d2481cc694", "f31ea45058de2609880b7b3b"},
		{specKM[:32], 1, "22156067513d8af3123c81530d87829f", "5e05751aed7612e36f6c1277"},
		{specKM[32:], 0, "cf885cbb3f190db9e53a2a66e7ea5143", "b7a4d84d00bfae2e00ca31b5"},
		{specKM[32:], 1, "89d85fd705a9789051f88cfe2e8e7b1c", "5b005d79a1e0ef6e967bf60b"},
	} {
		key, iv, err := recordKey(v.secret, v.gen)
		if err != nil || hex.EncodeToString(key) != v.key || hex.EncodeToString(iv) != v.iv {
			t.Errorf("generation %d of secret %x: key %x iv %x (%v), want %s %s", v.gen, v.secret[:4], key, iv, err, v.key, v.iv)
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
	{0, recData, []byte("hello"), "010000159f1c673f5be1cb046b8141aabbc90098699ce4ea1b"},
	{1, recControl, []byte{0x10}, "030000114adf79ad1945b3a7ca34981b73bb623520"},
	{2, recEnd, nil, "02000010ae13aa11d0a1685b5b0c6c6bfe4c51ce"},
	{1 << 20, recData, []byte("hello"), "010000151f08e9238b1837de375b9eb1efc8468be2f22c5236"},
}

func TestSpecRecordsSealed(t *testing.T) {
	out, err := newDirection(specKM[:32])
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{out: out}
	for _, v := range specRecords {
		out.seq = v.seq
		buf := make([]byte, hdrLen+len(v.p)+tagLen)
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
