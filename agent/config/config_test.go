package config

import (
	"errors"
	"strings"
	"testing"
)

const example = `# every field
hub: hub.example.net:7443
ticket_file: /etc/sluice/ticket
state_dir: /var/lib/sluice
api: /run/sluice/agent.sock
datapath: auto
relays: [postgres]
outlets:
  - name: db
    to: postgres:5432
    allow: analysis
inlets:
  - name: pg
    from: 127.0.0.1:15432
    via: postgres
    outlet: db
    allow: bank
    outlet_node: 0123456789abcdef0123456789abcdef
  - name: pg-transparent
    transparent: true
    from: 10.200.0.10:5432
    via: postgres
    allow: postgres-outlet
    allow_local: app == "analytics"
workloads:
  - name: app
    address: 10.10.0.2
    attributes:
      app: analytics
`

func TestParseExample(t *testing.T) {
	f, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if f.Hub != "hub.example.net:7443" || f.TicketFile != "/etc/sluice/ticket" || f.StateDir != "/var/lib/sluice" ||
		f.API != "/run/sluice/agent.sock" || f.Datapath != "auto" {
		t.Errorf("agent settings: %+v", f)
	}
	if len(*f.Relays) != 1 || len(*f.Outlets) != 1 || len(*f.Inlets) != 2 || len(*f.Workloads) != 1 {
		t.Fatalf("lists: %+v", f)
	}
	in := (*f.Inlets)[1]
	if !in.Transparent || in.AllowLocal != `app == "analytics"` || in.From != "10.200.0.10:5432" {
		t.Errorf("transparent inlet: %+v", in)
	}
	if (*f.Workloads)[0].Attributes["app"] != "analytics" {
		t.Errorf("workload: %+v", (*f.Workloads)[0])
	}
	// Marshal writes what Parse reads back.
	out, err := Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Parse(out)
	if err != nil {
		t.Fatalf("parse marshalled file: %v\n%s", err, out)
	}
	if p := Diff(g, currentOf(f)); !p.Empty() {
		t.Errorf("marshalled file differs: %v\n%s", p.Steps, out)
	}
}

// TestParseAbsentAndEmpty: an absent list is not managed, an empty one is.
func TestParseAbsentAndEmpty(t *testing.T) {
	f, err := Parse([]byte("inlets: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Inlets == nil || len(*f.Inlets) != 0 || f.Outlets != nil || f.Relays != nil || f.Workloads != nil {
		t.Errorf("got %+v", f)
	}
}

// TestParseStrict: each wrong file is refused with the line and the field
// or the value that is wrong.
func TestParseStrict(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"unknown top-level field", "relays: [a]\nhubb: x:1\n", `line 2: unknown field "hubb"`},
		{"unknown inlet field", "inlets:\n  - name: a\n    from: 127.0.0.1:1\n    via: r\n    allow: x\n    alow_local: y\n", `line 6: unknown field "alow_local"`},
		{"wrong type", "relays: postgres\n", "line 1:"},
		{"duplicate key", "relays: [a]\nrelays: [b]\n", `line 2: mapping key "relays" already defined`},
		{"syntax", "relays: [a\n", "line 1:"},
		{"alias", "outlets:\n  - &o\n    name: a\n    to: db:1\n    allow: a\n  - *o\n", "line 6: an alias"},
		// Nine to the seventh strings, were aliases expanded.
		{"billion laughs", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" +
			"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n" +
			"g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nrelays: [*g]\n", "line 2: an alias (*a)"},
		{"bad datapath", "datapath: maybe\n", `line 1: datapath: "maybe": want auto, on or off`},
		{"missing name", "outlets:\n  - to: db:5432\n    allow: a\n", "line 2: outlets[0].name: required"},
		{"name twice", "outlets:\n  - name: a\n    to: db:5432\n    allow: a\n  - name: a\n    to: db:5432\n    allow: a\n", `line 5: outlets[1].name: "a" is listed twice`},
		{"relay twice", "relays:\n  - a\n  - a\n", `line 3: relays[1]: relay "a" is listed twice`},
		{"bad policy", "outlets:\n  - name: a\n    to: db:5432\n    allow: 'x and'\n", `line 4: outlets[0].allow: parse policy "x and"`},
		{"no allow", "outlets:\n  - name: a\n    to: db:5432\n", "line 2: outlets[0].allow: required"},
		{"bad to", "outlets:\n  - name: a\n    to: db\n    allow: a\n", `line 3: outlets[0].to: "db": want HOST:PORT`},
		{"transparent without allow_local", "inlets:\n  - name: a\n    transparent: true\n    from: 10.200.0.1:5432\n    via: r\n    allow: x\n", "inlets[0].allow_local: required"},
		{"transparent on 0.0.0.0", "inlets:\n  - name: a\n    transparent: true\n    from: 0.0.0.0:5432\n    via: r\n    allow: x\n    allow_local: y\n", "line 4: inlets[0].from:"},
		{"via and direct", "inlets:\n  - name: a\n    from: 127.0.0.1:1\n    via: r\n    direct: h:1\n    allow: x\n", "line 2: inlets[0]: give one of via and direct"},
		{"neither via nor direct", "inlets:\n  - name: a\n    from: 127.0.0.1:1\n    allow: x\n", "line 2: inlets[0].via: required"},
		{"two selectors", "workloads:\n  - name: w\n    address: 10.0.0.2\n    interface: veth0\n", "line 2: workloads[0]: give exactly one"},
		{"bad address", "workloads:\n  - name: w\n    address: fe80::1\n", `line 3: workloads[0].address: "fe80::1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.file))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("err is more than one line: %q", err)
			}
		})
	}
}

// currentOf is what an agent that matched f would have.
func currentOf(f *File) Current {
	var c Current
	if f.Relays != nil {
		c.Relays = *f.Relays
	}
	if f.Inlets != nil {
		c.Inlets = *f.Inlets
	}
	if f.Outlets != nil {
		c.Outlets = *f.Outlets
	}
	if f.Workloads != nil {
		c.Workloads = *f.Workloads
	}
	return c
}
