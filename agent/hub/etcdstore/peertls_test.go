package etcdstore_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/hub/etcdstore"
)

// TestPeerPortRefusesAgents: the project's CA signs agents' credentials
// too, yet an agent's credential is no peer: a member's peer port refuses
// a client presenting one, or none, and serves one with the project's peer
// certificate.
func TestPeerPortRefusesAgents(t *testing.T) {
	p := newProject(t)
	dir := t.TempDir()
	peer := etcdstore.Peer{Name: "a", URL: fmt.Sprintf("https://127.0.0.1:%d", freePorts(t, 1)[0])}
	files, err := etcdstore.IssuePeerFiles(filepath.Join(dir, "tls"), p.ID, p.Cert, p.Key, peer.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	m, err := etcdstore.StartMember(etcdstore.MemberOptions{Dir: filepath.Join(dir, "etcd"), Name: "a", Peers: []etcdstore.Peer{peer},
		Token: p.ID, PeerTLS: files}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	der, err := credential.Issue(p.Cert, p.Key, credential.Request{PublicKey: pub, ProjectID: p.ID, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	agentCert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	peerCert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.Cert)
	get := func(certs []tls.Certificate) error {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
		resp, err := c.Get(peer.URL + "/members")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	if err := get([]tls.Certificate{peerCert}); err != nil {
		t.Fatalf("a peer's certificate on the peer port: %v", err)
	}
	if err := get([]tls.Certificate{agentCert}); err == nil {
		t.Fatal("an agent's credential was served on the peer port")
	}
	if err := get(nil); err == nil {
		t.Fatal("a client without a certificate was served on the peer port")
	}
}
