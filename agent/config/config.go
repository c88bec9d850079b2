// Package config is the agent's declarative configuration: the YAML file
// that `agent run --config` starts from and reloads on SIGHUP, and that
// `agentctl apply -f` makes a running agent match; the plan that turns the
// agent's relays, inlets, outlets and workloads into the file's (plan.go);
// and the file that `agentctl get -o yaml` prints (get.go).
//
// It links only the API's types (agent/api/apitype), the policy parser and
// the YAML library, so that agentctl can use it without linking the agent.
// docs/config.md describes the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/sluicehq/sluice/agent/policy"
)

// ErrInvalid means the file is not a valid configuration: it does not
// parse, has a field this version does not know, or a value that is wrong.
// Nothing was applied.
var ErrInvalid = errors.New("invalid configuration")

// Datapath modes (File.Datapath), as `agent run --datapath` takes them.
const (
	DatapathAuto = "auto"
	DatapathOn   = "on"
	DatapathOff  = "off"
)

// File is a configuration file. The first fields are the agent's own
// settings, which `agent run --config` reads at start (its flags override
// them) and which apply and reload ignore; the lists are the objects the
// agent must have. A list that is absent (nil) is not managed: apply leaves
// that kind alone. A list that is present, even empty (`inlets: []`), is
// the whole truth for its kind: what it does not name is deleted.
type File struct {
	// Hub, if set, is the HOST:PORT of the hub the agent must be enrolled
	// with: the ticket names the hub, and `agent run` refuses to start when
	// the agent's hub is another one.
	Hub        string `yaml:"hub,omitempty" json:"hub,omitempty"`
	TicketFile string `yaml:"ticket_file,omitempty" json:"ticket_file,omitempty"` // file holding the enrollment ticket (--ticket @FILE)
	StateDir   string `yaml:"state_dir,omitempty" json:"state_dir,omitempty"`     // --state-dir
	API        string `yaml:"api,omitempty" json:"api,omitempty"`                 // unix socket of the local API (--api)
	Datapath   string `yaml:"datapath,omitempty" json:"datapath,omitempty"`       // auto, on or off (--datapath)
	// Kubernetes makes the pods of the agent's node workloads (agent run
	// --kubernetes; docs/kubernetes-workloads.md).
	Kubernetes *Kubernetes `yaml:"kubernetes,omitempty" json:"kubernetes,omitempty"`

	Relays    *[]string   `yaml:"relays,omitempty" json:"relays,omitempty"`
	Outlets   *[]Outlet   `yaml:"outlets,omitempty" json:"outlets,omitempty"`
	Inlets    *[]Inlet    `yaml:"inlets,omitempty" json:"inlets,omitempty"`
	Workloads *[]Workload `yaml:"workloads,omitempty" json:"workloads,omitempty"`
}

// Kubernetes is the agent's `kubernetes:` settings.
type Kubernetes struct {
	Enabled    bool   `yaml:"enabled" json:"enabled"`                           // --kubernetes
	NodeName   string `yaml:"node_name,omitempty" json:"node_name,omitempty"`   // --node-name (default $NODE_NAME)
	Kubeconfig string `yaml:"kubeconfig,omitempty" json:"kubeconfig,omitempty"` // --kubeconfig (default: in-cluster)
}

// Outlet is an outlet, as `agentctl tcp-outlet create` takes it.
type Outlet struct {
	Name  string `yaml:"name" json:"name"`
	To    string `yaml:"to" json:"to"`       // target HOST:PORT
	Allow string `yaml:"allow" json:"allow"` // policy on the inlet agent's attributes
}

// Inlet is an inlet, explicit or transparent, as `agentctl tcp-inlet
// create` takes it.
type Inlet struct {
	Name        string `yaml:"name" json:"name"`
	From        string `yaml:"from" json:"from"`
	Via         string `yaml:"via,omitempty" json:"via,omitempty"`
	Direct      string `yaml:"direct,omitempty" json:"direct,omitempty"`
	Outlet      string `yaml:"outlet,omitempty" json:"outlet,omitempty"`
	Allow       string `yaml:"allow" json:"allow"`
	OutletNode  string `yaml:"outlet_node,omitempty" json:"outlet_node,omitempty"`
	Transparent bool   `yaml:"transparent,omitempty" json:"transparent,omitempty"`
	AllowLocal  string `yaml:"allow_local,omitempty" json:"allow_local,omitempty"`
}

// Workload is a local container, as `agentctl workload create` takes it.
type Workload struct {
	Name       string            `yaml:"name" json:"name"`
	Address    string            `yaml:"address,omitempty" json:"address,omitempty"`
	Interface  string            `yaml:"interface,omitempty" json:"interface,omitempty"`
	Cgroup     string            `yaml:"cgroup,omitempty" json:"cgroup,omitempty"`
	Attributes map[string]string `yaml:"attributes,omitempty" json:"attributes,omitempty"`
}

// Parse reads a configuration and checks all of it: unknown fields,
// values of the wrong type, and values no agent would take (a missing
// name, a name given twice, a policy that does not parse) are errors
// that match ErrInvalid and say the field and, where the YAML library
// gives it, the line.
func Parse(data []byte) (*File, error) {
	if err := noAliases(data); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, yamlMessage(err))
	}
	var f File
	err := yaml.UnmarshalWithOptions(data, &f, yaml.Strict())
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, yamlMessage(err))
	}
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, locate(data, err))
	}
	return &f, nil
}

// noAliases refuses aliases (*name): a configuration needs none, and a
// few lines of nested aliases expand into gigabytes (the "billion laughs").
func noAliases(data []byte) error {
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		return err
	}
	var found *ast.AliasNode
	for _, doc := range file.Docs {
		ast.Walk(aliasFinder{&found}, doc)
		if found != nil {
			return fmt.Errorf("line %d: an alias (%s): a configuration file takes no anchors or aliases",
				found.GetToken().Position.Line, found.String())
		}
	}
	return nil
}

type aliasFinder struct{ found **ast.AliasNode }

func (v aliasFinder) Visit(n ast.Node) ast.Visitor {
	if a, ok := n.(*ast.AliasNode); ok && *v.found == nil {
		*v.found = a
	}
	if *v.found != nil {
		return nil
	}
	return v
}

// yamlMessage is the library's error on one line: "line L: message".
func yamlMessage(err error) string {
	var ye yaml.Error
	if errors.As(err, &ye) {
		msg := ye.GetMessage()
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			return fmt.Sprintf("line %d: %s", tk.Position.Line, msg)
		}
		return msg
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

// fieldError is a wrong value at a path in the file (inlets[1].allow).
type fieldError struct {
	path string
	err  error
}

func (e *fieldError) Error() string { return e.path + ": " + e.err.Error() }

func errAt(path string, format string, args ...any) error {
	return &fieldError{path: path, err: fmt.Errorf(format, args...)}
}

// locate prefixes a fieldError with the line of its field.
func locate(data []byte, err error) string {
	var fe *fieldError
	if !errors.As(err, &fe) {
		return err.Error()
	}
	file, perr := parser.ParseBytes(data, 0)
	if perr != nil {
		return err.Error()
	}
	for p := fe.path; p != ""; p = parent(p) {
		path, perr := yaml.PathString("$." + p)
		if perr != nil {
			continue
		}
		if n, perr := path.FilterFile(file); perr == nil && n != nil && n.GetToken() != nil {
			return fmt.Sprintf("line %d: %s", n.GetToken().Position.Line, err)
		}
	}
	return err.Error()
}

// parent is the path above p: inlets[1].allow → inlets[1] → inlets → "".
func parent(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// check reports the first wrong value in the file.
func (f *File) check() error {
	switch f.Datapath {
	case "", DatapathAuto, DatapathOn, DatapathOff:
	default:
		return errAt("datapath", "%q: want auto, on or off", f.Datapath)
	}
	if f.Hub != "" {
		if err := checkHostPort(f.Hub); err != nil {
			return errAt("hub", "%w", err)
		}
	}
	if f.Relays != nil {
		seen := map[string]bool{}
		for i, r := range *f.Relays {
			path := fmt.Sprintf("relays[%d]", i)
			if r == "" {
				return errAt(path, "empty relay name")
			}
			if seen[r] {
				return errAt(path, "relay %q is listed twice", r)
			}
			seen[r] = true
		}
	}
	if err := checkEach(f.Outlets, "outlets", func(o Outlet) string { return o.Name }, checkOutlet); err != nil {
		return err
	}
	if err := checkEach(f.Inlets, "inlets", func(in Inlet) string { return in.Name }, checkInlet); err != nil {
		return err
	}
	return checkEach(f.Workloads, "workloads", func(w Workload) string { return w.Name }, checkWorkload)
}

// checkEach checks each item of a list: a name, given once, and the item's
// own check.
func checkEach[T any](items *[]T, kind string, name func(T) string, check func(string, T) error) error {
	if items == nil {
		return nil
	}
	seen := map[string]bool{}
	for i, it := range *items {
		path := fmt.Sprintf("%s[%d]", kind, i)
		n := name(it)
		switch {
		case n == "":
			return errAt(path+".name", "required: the name is how apply finds the object again")
		case seen[n]:
			return errAt(path+".name", "%q is listed twice", n)
		}
		seen[n] = true
		if err := check(path, it); err != nil {
			return err
		}
	}
	return nil
}

func checkOutlet(path string, o Outlet) error {
	if err := checkHostPort(o.To); err != nil {
		return errAt(path+".to", "%w", err)
	}
	return checkPolicy(path+".allow", o.Allow, true)
}

func checkInlet(path string, in Inlet) error {
	if in.Transparent {
		ap, err := netip.ParseAddrPort(in.From)
		if err != nil || !ap.Addr().Is4() || ap.Addr().IsUnspecified() || ap.Port() == 0 {
			return errAt(path+".from", "%q: a transparent inlet needs the service's IPv4 address and a port, e.g. 10.200.0.10:5432", in.From)
		}
		if in.AllowLocal == "" {
			return errAt(path+".allow_local", "required for a transparent inlet (policies are default deny)")
		}
	} else if err := checkHostPort(in.From); err != nil {
		return errAt(path+".from", "%w", err)
	}
	switch {
	case in.Via != "" && in.Direct != "":
		return errAt(path, "give one of via and direct, not both")
	case in.Via == "" && in.Direct == "":
		return errAt(path+".via", "required: the relay name of the outlet's agent (or direct: HOST:PORT)")
	case in.Direct != "":
		if err := checkHostPort(in.Direct); err != nil {
			return errAt(path+".direct", "%w", err)
		}
	}
	if err := checkPolicy(path+".allow", in.Allow, true); err != nil {
		return err
	}
	return checkPolicy(path+".allow_local", in.AllowLocal, false)
}

func checkWorkload(path string, w Workload) error {
	n := 0
	for _, s := range []string{w.Address, w.Interface, w.Cgroup} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return errAt(path, "give exactly one of address, interface or cgroup")
	}
	if w.Address != "" {
		ip, err := netip.ParseAddr(w.Address)
		if err != nil || !ip.Is4() || ip.IsUnspecified() {
			return errAt(path+".address", "%q: want the container's IPv4 address, e.g. 10.10.0.2", w.Address)
		}
	}
	for k := range w.Attributes {
		if k == "" {
			return errAt(path+".attributes", "an attribute has an empty name")
		}
	}
	return nil
}

func checkHostPort(s string) error {
	if s == "" {
		return errors.New("required: HOST:PORT")
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return fmt.Errorf("%q: want HOST:PORT", s)
	}
	return nil
}

func checkPolicy(path, expr string, required bool) error {
	if expr == "" {
		if required {
			return errAt(path, "required: a policy (default deny), e.g. postgres-outlet; see docs/policy.md")
		}
		return nil
	}
	if _, err := policy.Parse(expr); err != nil {
		return &fieldError{path: path, err: err}
	}
	return nil
}

// Marshal writes f as YAML that Parse reads back to the same File.
func Marshal(f *File) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b, yaml.IndentSequence(true))
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("encode configuration: %w", err)
	}
	return b.Bytes(), nil
}
