package etcdstore

// Peer traffic between the hubs' etcd members is TLS both ways on
// certificates the project authority issues: every hub of a cluster holds
// the project's key (--role both), so each issues its own peer certificate
// at start, and trusts the project's CA. The CA also signs agents'
// credentials; a peer certificate is told apart by its common name
// (PeerCommonName), which the authority never gives a node, and etcd
// checks it (AllowedCNs). etcd's auto-TLS is not used: its self-signed
// certificates encrypt but authenticate no one, so anyone who reaches the
// peer port could join the cluster.

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// PeerFiles are the PEM files of peer TLS.
type PeerFiles struct{ Cert, Key, CA string }

// PeerCommonName is the subject common name of a project's peer
// certificates.
func PeerCommonName(projectID string) string { return "sluice etcd peer " + projectID }

// peerLifetime is the validity of a peer certificate; it is issued anew at
// every start of the hub.
const peerLifetime = 365 * 24 * time.Hour

// IssuePeerFiles issues this member's peer certificate for the host of
// its peer URL (and ListenPeer's), signed by the project's CA (caKey,
// ca), and writes it, its key and the CA into dir.
func IssuePeerFiles(dir, projectID string, ca *x509.Certificate, caKey ed25519.PrivateKey, peerURL, listen string) (PeerFiles, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return PeerFiles{}, fmt.Errorf("issue peer certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return PeerFiles{}, fmt.Errorf("issue peer certificate: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: PeerCommonName(projectID)},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(peerLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, raw := range []string{peerURL, "https://" + listen} {
		u, err := url.Parse(raw)
		if err != nil || u.Hostname() == "" {
			continue
		}
		if ip := net.ParseIP(u.Hostname()); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, u.Hostname())
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return PeerFiles{}, fmt.Errorf("issue peer certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return PeerFiles{}, fmt.Errorf("issue peer certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return PeerFiles{}, fmt.Errorf("issue peer certificate: %w", err)
	}
	f := PeerFiles{Cert: filepath.Join(dir, "peer.pem"), Key: filepath.Join(dir, "peer.key"), CA: filepath.Join(dir, "ca.pem")}
	for _, w := range []struct {
		path, kind string
		der        []byte
	}{{f.Cert, "CERTIFICATE", der}, {f.Key, "PRIVATE KEY", pk}, {f.CA, "CERTIFICATE", ca.Raw}} {
		if err := os.WriteFile(w.path, pem.EncodeToMemory(&pem.Block{Type: w.kind, Bytes: w.der}), 0o600); err != nil {
			return PeerFiles{}, fmt.Errorf("issue peer certificate: %w", err)
		}
	}
	return f, nil
}
