package channel

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// direction is one direction's keys and record counter. Its keys come from
// a ratchet: each generation's secret gives that generation's key and IV
// and the next generation's secret, and is erased once it has, so that the
// state held at generation g opens nothing of earlier generations.
type direction struct {
	next   [32]byte // generation gen+1's secret: gen's and earlier ones are erased
	shift  uint     // a new key generation every 1<<shift records: rekeyLog (tests lower it)
	gen    uint64
	aead   cipher.AEAD
	iv     [12]byte
	seq    uint64
	nonceb [12]byte // the last nonce: one per direction, not one per record
}

// newDirection starts a direction at generation 0 from its exported
// secret, which the caller erases.
func newDirection(secret []byte) (*direction, error) {
	d := &direction{shift: rekeyLog}
	copy(d.next[:], secret)
	return d, d.ratchet()
}

// generation derives, from generation g's secret, g's key and IV and
// generation g+1's secret (docs/channel.md, "Keys").
func generation(secret []byte) (key, iv, next []byte, err error) {
	km, err := hkdf.Expand(sha256.New, secret, keyLabel, 16+12)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("derive record key: %w", err)
	}
	if next, err = hkdf.Expand(sha256.New, secret, nextLabel, 32); err != nil {
		return nil, nil, nil, fmt.Errorf("derive record key: %w", err)
	}
	return km[:16], km[16:], next, nil
}

// ratchet installs the keys of the generation whose secret d.next holds,
// keeps the following generation's secret in its place and erases the
// rest. The caller sets d.gen.
func (d *direction) ratchet() error {
	key, iv, next, err := generation(d.next[:])
	if err != nil {
		return err
	}
	defer clear(key[:cap(key)]) // the IV after it too: copied below
	defer clear(next)
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("derive record key: %w", err)
	}
	if d.aead, err = cipher.NewGCM(block); err != nil {
		return fmt.Errorf("derive record key: %w", err)
	}
	copy(d.iv[:], iv)
	copy(d.next[:], next)
	return nil
}

// rekey moves on to generation g, the next one: the ratchet turns one
// generation at a time, as the sequence number runs.
func (d *direction) rekey(g uint64) error {
	if g != d.gen+1 {
		return fmt.Errorf("derive record key: generation %d after %d: %w", g, d.gen, ErrBadRecord)
	}
	if err := d.ratchet(); err != nil {
		return err
	}
	d.gen = g
	return nil
}

// nonce returns the next record's nonce, moving to the next key generation
// when it is due. The last sequence number is never used: past it the
// nonces would start again under generation 0's key.
func (d *direction) nonce() ([]byte, error) {
	if d.seq == maxSeq {
		return nil, fmt.Errorf("channel direction used up its %d records: %w", uint64(maxSeq), ErrBadRecord)
	}
	if g := d.seq >> d.shift; g != d.gen {
		// The ratchet turns: from now on this direction cannot seal
		// or open a record of an earlier generation.
		if err := d.rekey(g); err != nil {
			return nil, err
		}
	}
	d.nonceb = d.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], d.seq)
	for i := range s {
		d.nonceb[4+i] ^= s[i]
	}
	d.seq++
	return d.nonceb[:], nil
}
