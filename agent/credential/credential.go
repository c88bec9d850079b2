// Package credential issues and verifies Sluice credentials: short-lived X.509
// certificates that bind a node's Ed25519 key to its project and attributes.
//
// A credential is an ordinary certificate, so crypto/tls, openssl and Wireshark
// can read it:
//
//	Subject CN   the node ID (see identity.NodeID)
//	URI SAN      sluice://PROJECT/node/NODEID
//	extension    AttributesOID: SEQUENCE OF SEQUENCE { UTF8String name, UTF8String value }
//	extension    GenerationOID: INTEGER, the project's member-state generation
//	             at the node's last change (absent: 0)
//	extension    RelaysOID: SEQUENCE OF UTF8String, the relay names the node
//	             may claim (absent: none)
//
// The issuer is the project authority, a self-signed Ed25519 CA certificate.
package credential

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/agent/identity"
)

// AttributesOID identifies the certificate extension that carries attributes.
// It sits in a private-enterprise arc reserved for Sluice; it is not critical,
// so other TLS stacks accept the certificate and ignore the extension.
var AttributesOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 64217, 1, 1}

// GenerationOID identifies the extension that carries the member-state
// generation the credential was issued at. Not critical either.
var GenerationOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 64217, 1, 2}

// RelaysOID identifies the extension that lists the relay names the node may
// claim, so that a relay checks a claim without the authority's database.
var RelaysOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 64217, 1, 3}

// Sentinel errors callers branch on.
var (
	// ErrUntrusted means the chain does not lead to the project authority.
	ErrUntrusted = errors.New("credential is not signed by the project authority")
	// ErrExpired means the credential is outside its validity period.
	ErrExpired = errors.New("credential has expired")
	// ErrWrongProject means the credential belongs to another project.
	ErrWrongProject = errors.New("credential belongs to another project")
	// ErrMalformed means the certificate is not a Sluice credential.
	ErrMalformed = errors.New("certificate is not a Sluice credential")
)

// Credential is a parsed node certificate.
type Credential struct {
	Cert       *x509.Certificate
	NodeID     string
	ProjectID  string
	Attributes map[string]string
	// Generation is the project's member-state generation of the node's
	// record when the credential was issued: a newer word from the
	// authority about the node makes the credential stale.
	Generation uint64
	// Relays are the relay names the node's tickets allow it to claim.
	Relays []string
}

// Expires returns the end of the credential's validity.
func (c *Credential) Expires() time.Time { return c.Cert.NotAfter }

type attribute struct {
	Name  string `asn1:"utf8"`
	Value string `asn1:"utf8"`
}

// Request describes a node credential to issue.
type Request struct {
	PublicKey  ed25519.PublicKey
	ProjectID  string
	Attributes map[string]string
	Generation uint64        // the member record's generation
	Relays     []string      // relay names the node may claim
	Lifetime   time.Duration // required
	Now        time.Time     // zero means time.Now()
}

// Issue signs a node credential with the authority's key and returns its DER.
func Issue(ca *x509.Certificate, caKey crypto.Signer, req Request) ([]byte, error) {
	if len(req.PublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("issue credential: public key has %d bytes, want %d", len(req.PublicKey), ed25519.PublicKeySize)
	}
	if req.Lifetime <= 0 {
		return nil, fmt.Errorf("issue credential: lifetime %v is not positive", req.Lifetime)
	}
	ext, err := marshalAttributes(req.Attributes)
	if err != nil {
		return nil, fmt.Errorf("issue credential: %w", err)
	}
	if req.Generation > math.MaxInt64 {
		return nil, fmt.Errorf("issue credential: generation %d out of range", req.Generation)
	}
	genExt, err := asn1.Marshal(int64(req.Generation))
	if err != nil {
		return nil, fmt.Errorf("issue credential: %w", err)
	}
	extra := []pkix.Extension{{Id: AttributesOID, Value: ext}, {Id: GenerationOID, Value: genExt}}
	if len(req.Relays) > 0 {
		relays, err := asn1.Marshal(req.Relays)
		if err != nil {
			return nil, fmt.Errorf("issue credential: relays: %w", err)
		}
		extra = append(extra, pkix.Extension{Id: RelaysOID, Value: relays})
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	nodeID := identity.NodeID(req.PublicKey)
	tmpl := &x509.Certificate{
		SerialNumber:    randomSerial(),
		Subject:         pkix.Name{CommonName: nodeID, Organization: []string{"sluice " + req.ProjectID}},
		NotBefore:       now.Add(-time.Minute), // tolerate small clock skew
		NotAfter:        now.Add(req.Lifetime),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:            []*url.URL{NodeURI(req.ProjectID, nodeID)},
		ExtraExtensions: extra,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, req.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("issue credential: %w", err)
	}
	return der, nil
}

// NodeURI is the URI SAN that names a node of a project.
func NodeURI(projectID, nodeID string) *url.URL {
	return &url.URL{Scheme: "sluice", Host: projectID, Path: "/node/" + nodeID}
}

// Parse reads the Sluice fields of a certificate without verifying it.
func Parse(cert *x509.Certificate) (*Credential, error) {
	var project, node string
	for _, u := range cert.URIs {
		if u.Scheme == "sluice" && strings.HasPrefix(u.Path, "/node/") {
			project, node = u.Host, strings.TrimPrefix(u.Path, "/node/")
		}
	}
	if node == "" {
		return nil, fmt.Errorf("parse credential: no sluice:// URI: %w", ErrMalformed)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok || identity.NodeID(pub) != node {
		return nil, fmt.Errorf("parse credential: node ID does not match the key: %w", ErrMalformed)
	}
	attrs := map[string]string{}
	var gen int64
	var relays []string
	for _, e := range cert.Extensions {
		// Each extension exactly in the encoding Issue makes: what
		// encoding/asn1 tolerates (other string types, more elements) or a
		// map would hide (a name twice) is refused, not dropped.
		switch {
		case e.Id.Equal(AttributesOID):
			var list []attribute
			rest, err := asn1.Unmarshal(e.Value, &list)
			if canon, merr := asn1.Marshal(list); err != nil || len(rest) > 0 || merr != nil || !bytes.Equal(canon, e.Value) {
				return nil, fmt.Errorf("parse credential attributes: %w", ErrMalformed)
			}
			for _, a := range list {
				if _, dup := attrs[a.Name]; dup {
					return nil, fmt.Errorf("parse credential attributes: %q twice: %w", a.Name, ErrMalformed)
				}
				attrs[a.Name] = a.Value
			}
		case e.Id.Equal(GenerationOID):
			rest, err := asn1.Unmarshal(e.Value, &gen)
			if canon, merr := asn1.Marshal(gen); err != nil || len(rest) > 0 || gen < 0 || merr != nil || !bytes.Equal(canon, e.Value) {
				return nil, fmt.Errorf("parse credential generation: %w", ErrMalformed)
			}
		case e.Id.Equal(RelaysOID):
			rest, err := asn1.Unmarshal(e.Value, &relays)
			if canon, merr := asn1.Marshal(relays); err != nil || len(rest) > 0 || slices.Contains(relays, "") || merr != nil || !bytes.Equal(canon, e.Value) {
				return nil, fmt.Errorf("parse credential relays: %w", ErrMalformed)
			}
		}
	}
	return &Credential{Cert: cert, NodeID: node, ProjectID: project, Attributes: attrs, Generation: uint64(gen), Relays: relays}, nil
}

// ParseDER parses a DER certificate as a credential, without verifying it.
func ParseDER(der []byte) (*Credential, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse credential: %w", err)
	}
	return Parse(cert)
}

func marshalAttributes(attrs map[string]string) ([]byte, error) {
	names := make([]string, 0, len(attrs))
	for k := range attrs {
		names = append(names, k)
	}
	sort.Strings(names)
	list := make([]attribute, 0, len(names))
	for _, k := range names {
		list = append(list, attribute{Name: k, Value: attrs[k]})
	}
	b, err := asn1.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("marshal attributes: %w", err)
	}
	return b, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand never fails on Linux; keep serials unique regardless.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// NewAuthority creates the self-signed CA certificate of a project.
func NewAuthority(key ed25519.PrivateKey, projectID string, lifetime time.Duration) ([]byte, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "sluice authority " + projectID},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create authority certificate: %w", err)
	}
	return der, nil
}

// IssueServer signs the hub's TLS server certificate for host (an IP or DNS name).
func IssueServer(ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, host string, lifetime time.Duration) ([]byte, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "sluice hub " + host},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("issue hub certificate: %w", err)
	}
	return der, nil
}

// EncodePEM returns the PEM form of DER certificates.
func EncodePEM(ders ...[]byte) []byte {
	var out []byte
	for _, d := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	return out
}

// DecodePEM returns the certificates in PEM data, in order.
func DecodePEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("parse certificates: no PEM CERTIFICATE block")
	}
	return certs, nil
}

// ReadPEMFile reads the certificates in a PEM file.
func ReadPEMFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	certs, err := DecodePEM(data)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return certs, nil
}
