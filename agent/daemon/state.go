// Package daemon is the agent: it owns the node identity, keeps the link to
// the hub, holds the current credential and runs the portals the operator
// configured through the local API. Agent wires its parts together, each
// with its own state and lock (see Agent): credentials, the configuration
// store, the data path controller and the member reviewer; the portals
// themselves, and the one registry of them, are package portal's Manager.
package daemon

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/portal"
)

// Files in an agent's state directory, besides identity.KeyFile.
const (
	enrollmentFile = "enrollment.json"
	authorityFile  = "authority.pem"
	credentialFile = "credential.pem"
	portalsFile    = "portals.json"
)

// ErrNotEnrolled means the state directory has no enrollment and no ticket was given.
var ErrNotEnrolled = errors.New("agent is not enrolled")

// enrollment is what an agent remembers of its project.
type enrollment struct {
	Hub string `json:"hub"`
	// Hubs are every hub of the project, from the ticket (Hub first);
	// empty for a ticket of one hub.
	Hubs         []string          `json:"hubs,omitempty"`
	Project      string            `json:"project"`
	AuthorityKey ed25519.PublicKey `json:"authority_key"`
	Node         string            `json:"node"`
	// Tickets are the IDs of the tickets this state directory redeemed
	// (or found used up or expired once enrolled): --ticket ignores them.
	Tickets []string `json:"tickets,omitempty"`
}

// config is the operator's configuration, restored on restart.
type config struct {
	Relays  []string            `json:"relays"`
	Inlets  []portal.InletSpec  `json:"inlets"`
	Outlets []portal.OutletSpec `json:"outlets"`
}

func readJSON(path string, v any) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("parse %s: %w", path, err)
	}
	return true, nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	return identity.WriteFileAtomic(path, append(data, '\n'), 0o600)
}

// tlsCertificate pairs a credential with the node key for crypto/tls.
func tlsCertificate(der []byte, key ed25519.PrivateKey) (*tls.Certificate, *credential.Credential, error) {
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse credential: %w", err)
	}
	cred, err := credential.Parse(leaf)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, cred, nil
}
