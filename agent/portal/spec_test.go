package portal_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/policy"
	"github.com/sluicehq/sluice/agent/portal"
)

// Specifications are checked before anything else: these tests need no hub.

func TestInvalidInletSpecs(t *testing.T) {
	m := portal.New(portal.Options{})
	t.Cleanup(func() { m.Close() })
	good := portal.InletSpec{Name: "pg", From: "127.0.0.1:0", Via: "db", Allow: "postgres-outlet"}
	for _, c := range []struct {
		name string
		edit func(*portal.InletSpec)
		hint string
	}{
		{"empty name", func(s *portal.InletSpec) { s.Name = "" }, "inlet name"},
		{"name with a space", func(s *portal.InletSpec) { s.Name = "my inlet" }, "inlet name"},
		{"name starting with a dash", func(s *portal.InletSpec) { s.Name = "-pg" }, "inlet name"},
		{"name too long", func(s *portal.InletSpec) { s.Name = strings.Repeat("a", 64) }, "inlet name"},
		{"address without port", func(s *portal.InletSpec) { s.From = "127.0.0.1" }, "--from"},
		{"port out of range", func(s *portal.InletSpec) { s.From = "127.0.0.1:65536" }, "--from"},
		{"port not a number", func(s *portal.InletSpec) { s.From = "127.0.0.1:pg" }, "--from"},
		{"bad relay name", func(s *portal.InletSpec) { s.Via = "DB" }, "--via"},
		{"empty relay name", func(s *portal.InletSpec) { s.Via = "" }, "--via"},
		{"both via and direct", func(s *portal.InletSpec) { s.Direct = "10.0.0.1:4444" }, "give one"},
		{"direct without port", func(s *portal.InletSpec) { s.Via, s.Direct = "", "10.0.0.1" }, "--direct"},
		{"bad outlet name", func(s *portal.InletSpec) { s.Outlet = "a/b" }, "outlet name"},
		{"empty allow", func(s *portal.InletSpec) { s.Allow = "" }, "default deny"},
		{"bad policy", func(s *portal.InletSpec) { s.Allow = "postgres-outlet and" }, "position"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := good
			c.edit(&spec)
			_, err := m.AddInlet(spec)
			if !errors.Is(err, portal.ErrInvalid) {
				t.Fatalf("AddInlet(%+v): %v, want ErrInvalid", spec, err)
			}
			if !strings.Contains(err.Error(), c.hint) {
				t.Errorf("error %q does not mention %q", err, c.hint)
			}
		})
	}
	if n := len(m.Inlets()); n != 0 {
		t.Errorf("%d inlets after invalid specs, want 0", n)
	}
	if _, err := m.AddInlet(good); err != nil {
		t.Errorf("the valid spec: %v", err)
	}
}

func TestInvalidOutletSpecs(t *testing.T) {
	m := portal.New(portal.Options{})
	t.Cleanup(func() { m.Close() })
	good := portal.OutletSpec{Name: "pg", To: "localhost:5432", Allow: "postgres-inlet"}
	for _, c := range []struct {
		name string
		edit func(*portal.OutletSpec)
		hint string
	}{
		{"empty name", func(s *portal.OutletSpec) { s.Name = "" }, "outlet name"},
		{"name with a slash", func(s *portal.OutletSpec) { s.Name = "a/b" }, "outlet name"},
		{"address without port", func(s *portal.OutletSpec) { s.To = "localhost" }, "--to"},
		{"port out of range", func(s *portal.OutletSpec) { s.To = "localhost:70000" }, "--to"},
		{"empty allow", func(s *portal.OutletSpec) { s.Allow = "" }, "default deny"},
		{"bad policy", func(s *portal.OutletSpec) { s.Allow = "env == " }, "position"},
		{"unbalanced policy", func(s *portal.OutletSpec) { s.Allow = "(a or b" }, "position"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := good
			c.edit(&spec)
			_, err := m.AddOutlet(spec)
			if !errors.Is(err, portal.ErrInvalid) {
				t.Fatalf("AddOutlet(%+v): %v, want ErrInvalid", spec, err)
			}
			if !strings.Contains(err.Error(), c.hint) {
				t.Errorf("error %q does not mention %q", err, c.hint)
			}
		})
	}
	if n := len(m.Outlets()); n != 0 {
		t.Errorf("%d outlets after invalid specs, want 0", n)
	}
}

func TestPolicySyntaxErrorIsKept(t *testing.T) {
	m := portal.New(portal.Options{})
	t.Cleanup(func() { m.Close() })
	_, err := m.AddOutlet(portal.OutletSpec{Name: "pg", To: "localhost:5432", Allow: "a and"})
	var se *policy.SyntaxError
	if !errors.Is(err, portal.ErrInvalid) || !errors.Is(err, policy.ErrSyntax) || !errors.As(err, &se) {
		t.Errorf("error %v, want both ErrInvalid and a *policy.SyntaxError", err)
	}
}

func TestDuplicateAndMissingNames(t *testing.T) {
	m := portal.New(portal.Options{})
	t.Cleanup(func() { m.Close() })
	in := portal.InletSpec{Name: "pg", From: "127.0.0.1:0", Via: "db", Allow: "true"}
	info, err := m.AddInlet(in)
	if err != nil {
		t.Fatal(err)
	}
	if info.Listening == "" || strings.HasSuffix(info.Listening, ":0") {
		t.Errorf("inlet listens on %q, want the bound address", info.Listening)
	}
	in.From = "127.0.0.1:0"
	if _, err := m.AddInlet(in); !errors.Is(err, portal.ErrExists) {
		t.Errorf("second inlet pg: %v, want ErrExists", err)
	}
	out := portal.OutletSpec{Name: "pg", To: "127.0.0.1:5432", Allow: "true"}
	if _, err := m.AddOutlet(out); err != nil {
		t.Fatalf("an outlet may share an inlet's name: %v", err)
	}
	if _, err := m.AddOutlet(out); !errors.Is(err, portal.ErrExists) {
		t.Errorf("second outlet pg: %v, want ErrExists", err)
	}
	if got := m.Inlets(); len(got) != 1 || got[0].Name != "pg" || got[0].Listening != info.Listening {
		t.Errorf("inlets %+v, want pg on %s", got, info.Listening)
	}
	if err := m.RemoveInlet("nope"); !errors.Is(err, portal.ErrNotFound) {
		t.Errorf("RemoveInlet(nope): %v, want ErrNotFound", err)
	}
	if err := m.RemoveOutlet("nope"); !errors.Is(err, portal.ErrNotFound) {
		t.Errorf("RemoveOutlet(nope): %v, want ErrNotFound", err)
	}
	if err := m.RemoveInlet("pg"); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveOutlet("pg"); err != nil {
		t.Fatal(err)
	}
	// The names are free again.
	if _, err := m.AddInlet(in); err != nil {
		t.Errorf("re-adding inlet pg: %v", err)
	}
	if _, err := m.AddOutlet(out); err != nil {
		t.Errorf("re-adding outlet pg: %v", err)
	}
}
