// Package identity holds a node's Ed25519 key: created once on the host, stored
// 0600 in the state directory, never sent anywhere.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// KeyFile is the name of the private key file inside a state directory.
const KeyFile = "identity.key"

// ErrBadPermissions is returned when a key file is readable by group or others.
var ErrBadPermissions = errors.New("identity key file is readable by other users")

// Identity is a node's signing key and the ID derived from its public key.
type Identity struct {
	key ed25519.PrivateKey
	id  string
}

// New generates a fresh identity that lives only in memory.
func New() (*Identity, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	return FromKey(key), nil
}

// FromKey wraps an existing private key.
func FromKey(key ed25519.PrivateKey) *Identity {
	return &Identity{key: key, id: NodeID(key.Public().(ed25519.PublicKey))}
}

// LoadOrCreate reads the key in dir, or creates it (0600) when dir has none.
// created reports whether a new identity was made.
func LoadOrCreate(dir string) (id *Identity, created bool, err error) {
	path := filepath.Join(dir, KeyFile)
	id, err = Load(path)
	if err == nil {
		return id, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create state directory: %w", err)
	}
	id, err = New()
	if err != nil {
		return nil, false, err
	}
	if err := WriteKey(path, id.key); err != nil {
		return nil, false, err
	}
	return id, true, nil
}

// Load reads an identity key file written by WriteKey.
func Load(path string) (*Identity, error) {
	key, err := ReadKey(path)
	if err != nil {
		return nil, err
	}
	return FromKey(key), nil
}

// ReadKey reads a PEM PKCS#8 Ed25519 private key and refuses files that group or
// others can read.
func ReadKey(path string) (ed25519.PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("read key %s (mode %04o, want 0600): %w", path, st.Mode().Perm(), ErrBadPermissions)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("read key %s: no PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key %s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parse key %s: not an Ed25519 key", path)
	}
	return key, nil
}

// WriteKey writes key as PEM PKCS#8 with mode 0600, atomically.
func WriteKey(path string, key ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	return WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// WriteFileAtomic writes data to a temporary file in the same directory and
// renames it over path, so readers never see a partial file.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(perm)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	return nil
}

// NodeID derives the stable, printable node ID of a public key: the first 16
// bytes of its SHA-256, in hex.
func NodeID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:16])
}

// ID is the node ID.
func (i *Identity) ID() string { return i.id }

// PrivateKey returns the signing key. It never leaves the process.
func (i *Identity) PrivateKey() ed25519.PrivateKey { return i.key }

// PublicKey returns the public half of the key.
func (i *Identity) PublicKey() ed25519.PublicKey { return i.key.Public().(ed25519.PublicKey) }

// SelfSigned returns a TLS certificate for the node key signed by itself. It
// lets a node prove possession of its key in a TLS handshake (CertificateVerify)
// before it holds any credential.
func (i *Identity) SelfSigned() (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: i.id},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, i.PublicKey(), i.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create self-signed certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: i.key}, nil
}

// RequireNodeKey is a tls.Config.VerifyPeerCertificate that accepts any
// certificate with an Ed25519 key: the handshake proves the peer holds a
// node key, and what the key may do is for the caller to decide.
func RequireNodeKey(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) == 0 {
		return errors.New("no client certificate")
	}
	c, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return fmt.Errorf("parse client certificate: %w", err)
	}
	if _, ok := c.PublicKey.(ed25519.PublicKey); !ok {
		return errors.New("client key is not Ed25519")
	}
	return nil
}
