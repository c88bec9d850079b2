// Package authority is the project's trust anchor. It runs inside the hub: it
// holds the project's signing key, issues enrollment tickets, redeems them
// against proof of possession of a node's key, and issues the short-lived
// credentials that bind a node's key to its attributes. Its records
// (members, used tickets, the member-state generation) are in a
// store.Store (agent/hub/authority/store): the project's hub.db, a bbolt
// file (bolt.go, store.go, backup.go).
//
// It is not the relay (agent/hub), which never holds the authority's key,
// and not what an agent reads of it (tickets and statements are
// agent/wire's).
package authority

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/identity"
)

// Files in a project directory.
const (
	ProjectFile   = "project.json"
	AuthorityKey  = "authority.key"
	AuthorityCert = "authority.pem"
	HubKey        = "hub.key"
	HubCert       = "hub.pem"
	DatabaseFile  = "hub.db"
)

// Lifetimes of the long-lived certificates made by Init.
const (
	authorityLifetime = 10 * 365 * 24 * time.Hour
	hubCertLifetime   = 365 * 24 * time.Hour
)

// ErrProjectExists is returned by Init for a directory that already holds a project.
var ErrProjectExists = errors.New("directory already holds a project")

// Project is a project directory loaded into memory.
type Project struct {
	Dir        string
	ID         string
	HubAddress string

	Key     ed25519.PrivateKey // the authority's signing key
	Cert    *x509.Certificate  // the authority's self-signed certificate
	HubKey  ed25519.PrivateKey
	HubCert *x509.Certificate
}

type projectFile struct {
	ID         string    `json:"id"`
	HubAddress string    `json:"hub_address"`
	Created    time.Time `json:"created"`
}

// Init creates a project in dir: authority key and certificate, hub key and a
// certificate for the host of hubAddress, the project ID, and the hub's
// database (CreateDatabase).
func Init(dir, hubAddress string) (*Project, error) {
	host, err := checkHubAddress(hubAddress)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, ProjectFile)); err == nil {
		return nil, fmt.Errorf("init project in %s: %w", dir, ErrProjectExists)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("init project: %w", err)
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("init project: %w", err)
	}
	p := &Project{Dir: dir, ID: hex.EncodeToString(raw[:]), HubAddress: hubAddress}
	if _, p.Key, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, fmt.Errorf("init project: %w", err)
	}
	if _, p.HubKey, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, fmt.Errorf("init project: %w", err)
	}
	caDER, err := credential.NewAuthority(p.Key, p.ID, authorityLifetime)
	if err != nil {
		return nil, err
	}
	if p.Cert, err = x509.ParseCertificate(caDER); err != nil {
		return nil, fmt.Errorf("init project: %w", err)
	}
	hubDER, err := credential.IssueServer(p.Cert, p.Key, p.HubKey.Public(), host, hubCertLifetime)
	if err != nil {
		return nil, err
	}
	if p.HubCert, err = x509.ParseCertificate(hubDER); err != nil {
		return nil, fmt.Errorf("init project: %w", err)
	}
	meta, _ := json.MarshalIndent(projectFile{ID: p.ID, HubAddress: hubAddress, Created: time.Now().UTC()}, "", "  ")
	steps := []error{
		identity.WriteKey(filepath.Join(dir, AuthorityKey), p.Key),
		identity.WriteKey(filepath.Join(dir, HubKey), p.HubKey),
		identity.WriteFileAtomic(filepath.Join(dir, AuthorityCert), credential.EncodePEM(caDER), 0o644),
		identity.WriteFileAtomic(filepath.Join(dir, HubCert), credential.EncodePEM(hubDER, caDER), 0o644),
	}
	if err := errors.Join(steps...); err != nil {
		return nil, fmt.Errorf("init project: %w", err)
	}
	// The hub's database is made here, once: the hub never creates it.
	if err := CreateDatabase(p); err != nil {
		return nil, fmt.Errorf("init project: %w", err)
	}
	// project.json last: its presence marks a complete project.
	if err := identity.WriteFileAtomic(filepath.Join(dir, ProjectFile), append(meta, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("init project: %w", err)
	}
	return p, nil
}

// Load reads a project directory made by Init, the authority's key
// included: what the authority needs.
func Load(dir string) (*Project, error) {
	p, err := LoadRelay(dir)
	if err != nil {
		return nil, err
	}
	if p.Key, err = identity.ReadKey(filepath.Join(dir, AuthorityKey)); err != nil {
		return nil, fmt.Errorf("load project: %w", err)
	}
	if !p.Key.Public().(ed25519.PublicKey).Equal(p.Cert.PublicKey) {
		return nil, fmt.Errorf("load project: %s is not the key of %s", AuthorityKey, AuthorityCert)
	}
	return p, nil
}

// LoadRelay reads what a relay needs of a project directory: the project's
// ID, the authority's certificate (public) and the hub's own key and
// certificate. It never reads the authority's key, which a relay must not
// hold (ExportRelay makes such a directory); Key stays nil.
func LoadRelay(dir string) (*Project, error) {
	data, err := os.ReadFile(filepath.Join(dir, ProjectFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load project: %s has no %s (create one with: agentctl project init --dir %s --hub-address HOST:PORT)", dir, ProjectFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("load project: %w", err)
	}
	var meta projectFile
	if err := json.Unmarshal(data, &meta); err != nil {
		return nil, fmt.Errorf("load project %s: %w", ProjectFile, err)
	}
	p := &Project{Dir: dir, ID: meta.ID, HubAddress: meta.HubAddress}
	if p.HubKey, err = identity.ReadKey(filepath.Join(dir, HubKey)); err != nil {
		return nil, fmt.Errorf("load project: %w", err)
	}
	ca, err := credential.ReadPEMFile(filepath.Join(dir, AuthorityCert))
	if err != nil {
		return nil, fmt.Errorf("load project: %w", err)
	}
	hub, err := credential.ReadPEMFile(filepath.Join(dir, HubCert))
	if err != nil {
		return nil, fmt.Errorf("load project: %w", err)
	}
	p.Cert, p.HubCert = ca[0], hub[0]
	if _, ok := p.Cert.PublicKey.(ed25519.PublicKey); !ok {
		return nil, fmt.Errorf("load project: %s holds no Ed25519 authority certificate", AuthorityCert)
	}
	return p, nil
}

// relayFiles are the files of a project directory a relay needs.
var relayFiles = []string{ProjectFile, AuthorityCert, HubKey, HubCert}

// ExportRelay copies into out, a new directory, what a relay of the project
// in dir needs and nothing else: no authority key, no database.
func ExportRelay(dir, out string) error {
	if _, err := LoadRelay(dir); err != nil {
		return err
	}
	if err := os.Mkdir(out, 0o700); err != nil {
		return fmt.Errorf("export relay files: %w", err)
	}
	for _, f := range relayFiles {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("export relay files: %w", err)
		}
		mode := fs.FileMode(0o644)
		if f == HubKey {
			mode = 0o600
		}
		if err := identity.WriteFileAtomic(filepath.Join(out, f), data, mode); err != nil {
			return fmt.Errorf("export relay files: %w", err)
		}
	}
	return nil
}

// AuthorityPublicKey returns the key that signs tickets and credentials.
func (p *Project) AuthorityPublicKey() ed25519.PublicKey {
	return p.Key.Public().(ed25519.PublicKey)
}

func checkHubAddress(addr string) (host string, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("parse hub address %q: want HOST:PORT, e.g. hub.example.com:4443: %w", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("parse hub address %q: port %q is not a number from 1 to 65535", addr, port)
	}
	if host == "" {
		return "", fmt.Errorf("parse hub address %q: the host is empty; name the address agents dial, e.g. 203.0.113.7:4443", addr)
	}
	return host, nil
}
