package config

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

// fakeAgent keeps objects as an agent would, and the calls it received.
type fakeAgent struct {
	c     Current
	calls []string
	fail  string // a call that fails
}

func (f *fakeAgent) call(s string) error {
	f.calls = append(f.calls, s)
	if s == f.fail {
		return errors.New("refused")
	}
	return nil
}

func (f *fakeAgent) Relays(context.Context) ([]apitype.RelayInfo, error) {
	var out []apitype.RelayInfo
	for _, r := range f.c.Relays {
		out = append(out, apitype.RelayInfo{Name: r, Claimed: true})
	}
	return out, nil
}

func (f *fakeAgent) Inlets(context.Context) ([]apitype.InletInfo, error) {
	var out []apitype.InletInfo
	for _, in := range f.c.Inlets {
		out = append(out, apitype.InletInfo{Inlet: apitype.Inlet{InletSpec: in.spec(), Listening: in.From}, State: apitype.StateRunning})
	}
	return out, nil
}

func (f *fakeAgent) Outlets(context.Context) ([]apitype.OutletInfo, error) {
	var out []apitype.OutletInfo
	for _, o := range f.c.Outlets {
		out = append(out, apitype.OutletInfo{Outlet: apitype.Outlet{OutletSpec: o.spec()}, State: apitype.StateRunning})
	}
	return out, nil
}

func (f *fakeAgent) Workloads(context.Context) ([]apitype.WorkloadInfo, error) {
	var out []apitype.WorkloadInfo
	for i, w := range f.c.Workloads {
		a := w.spec()
		a.Bound = &apitype.Binding{Ifindex: 7, Interface: "veth0"} // the agent's, not the file's
		out = append(out, apitype.WorkloadInfo{Workload: a, Number: uint32(i + 1)})
	}
	return out, nil
}

func (f *fakeAgent) CreateRelay(_ context.Context, name string) (apitype.RelayInfo, error) {
	if err := f.call("create relay " + name); err != nil {
		return apitype.RelayInfo{}, err
	}
	f.c.Relays = append(f.c.Relays, name)
	return apitype.RelayInfo{Name: name}, nil
}

func (f *fakeAgent) DeleteRelay(_ context.Context, name string) error {
	f.c.Relays = slices.DeleteFunc(f.c.Relays, func(r string) bool { return r == name })
	return f.call("delete relay " + name)
}

func (f *fakeAgent) CreateInlet(_ context.Context, s apitype.InletSpec) (apitype.Inlet, error) {
	if err := f.call("create inlet " + s.Name); err != nil {
		return apitype.Inlet{}, err
	}
	f.c.Inlets = append(f.c.Inlets, inletOf(s))
	return apitype.Inlet{InletSpec: s}, nil
}

func (f *fakeAgent) DeleteInlet(_ context.Context, name string) error {
	f.c.Inlets = slices.DeleteFunc(f.c.Inlets, func(in Inlet) bool { return in.Name == name })
	return f.call("delete inlet " + name)
}

func (f *fakeAgent) CreateOutlet(_ context.Context, s apitype.OutletSpec) (apitype.Outlet, error) {
	if err := f.call("create outlet " + s.Name); err != nil {
		return apitype.Outlet{}, err
	}
	f.c.Outlets = append(f.c.Outlets, outletOf(s))
	return apitype.Outlet{OutletSpec: s}, nil
}

func (f *fakeAgent) DeleteOutlet(_ context.Context, name string) error {
	f.c.Outlets = slices.DeleteFunc(f.c.Outlets, func(o Outlet) bool { return o.Name == name })
	return f.call("delete outlet " + name)
}

func (f *fakeAgent) CreateWorkload(_ context.Context, w apitype.Workload) (apitype.WorkloadInfo, error) {
	if err := f.call("create workload " + w.Name); err != nil {
		return apitype.WorkloadInfo{}, err
	}
	f.c.Workloads = append(f.c.Workloads, workloadOf(w))
	return apitype.WorkloadInfo{Workload: w}, nil
}

func (f *fakeAgent) DeleteWorkload(_ context.Context, name string) error {
	f.c.Workloads = slices.DeleteFunc(f.c.Workloads, func(w Workload) bool { return w.Name == name })
	return f.call("delete workload " + name)
}

// apply parses file, plans against a and applies the plan; it returns the
// lines apply prints.
func apply(t *testing.T, a *fakeAgent, file string) []string {
	t.Helper()
	f, err := Parse([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := Read(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	if err := Diff(f, cur).Apply(context.Background(), a, func(s Step) { lines = append(lines, s.String()) }); err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestApplyCreatesThenNoChanges(t *testing.T) {
	a := &fakeAgent{}
	got := apply(t, a, example)
	want := []string{"created workload app", "created relay postgres", "created outlet db", "created inlet pg", "created inlet pg-transparent"}
	if !slices.Equal(got, want) {
		t.Errorf("first apply:\n got %q\nwant %q", got, want)
	}
	a.calls = nil
	if got := apply(t, a, example); len(got) != 0 || len(a.calls) != 0 {
		t.Errorf("second apply changed %q (calls %q), want no changes", got, a.calls)
	}
}

// TestPlanOrder: every deletion comes before every creation; inlets go
// down first and come up last; an update is a deletion then a creation
// and says what differs.
func TestPlanOrder(t *testing.T) {
	a := &fakeAgent{}
	apply(t, a, example)
	a.calls = nil
	next := strings.NewReplacer(
		"    to: postgres:5432\n", "    to: postgres:5433\n", // update outlet db
		"    outlet_node: 0123456789abcdef0123456789abcdef\n", "", // update inlet pg
		"relays: [postgres]", "relays: [postgres, mysql]",
	).Replace(example)
	next = strings.Replace(next, "workloads:\n", "workloads:\n  - name: other\n    interface: veth9\n", 1)
	got := apply(t, a, next)
	want := []string{
		"deleted inlet pg (update: outlet_node differs)",
		"deleted outlet db (update: to differs)",
		"created workload other",
		"created relay mysql",
		"created outlet db (update: to differs)",
		"created inlet pg (update: outlet_node differs)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("apply:\n got %q\nwant %q", got, want)
	}
	// Deleting everything the file lists: inlets first, workloads last.
	a.calls = nil
	got = apply(t, a, "relays: []\ninlets: []\noutlets: []\nworkloads: []\n")
	want = []string{"deleted inlet pg-transparent", "deleted inlet pg", "deleted outlet db",
		"deleted relay postgres", "deleted relay mysql", "deleted workload app", "deleted workload other"}
	if !slices.Equal(got, want) {
		t.Errorf("delete all:\n got %q\nwant %q", got, want)
	}
}

// TestPlanWorkloadChangeClosesLocalPolicies: while a workload is missing
// it is the unknown workload, which a policy like env != "prod" admits; so
// an inlet with allow_local that stays is closed before the workload
// changes and opened again after, and inlets without one are untouched.
func TestPlanWorkloadChangeClosesLocalPolicies(t *testing.T) {
	a := &fakeAgent{}
	start := strings.Replace(example, `allow_local: app == "analytics"`, `allow_local: app != "batch"`, 1)
	apply(t, a, start)
	a.calls = nil
	got := apply(t, a, strings.Replace(start, "app: analytics", "app: batch", 1))
	want := []string{
		"deleted inlet pg-transparent (workload app changes)",
		"deleted workload app (update: attributes differ)",
		"created workload app (update: attributes differ)",
		"created inlet pg-transparent (workload app changes)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("apply:\n got %q\nwant %q", got, want)
	}
}

// TestPlanLeavesUnlistedKinds: a file without a kind leaves that kind
// alone; get's file for one kind applies back with no changes.
func TestPlanLeavesUnlistedKinds(t *testing.T) {
	a := &fakeAgent{}
	apply(t, a, example)
	a.calls = nil
	if got := apply(t, a, "relays: [postgres]\n"); len(got) != 0 {
		t.Errorf("relays-only file changed %q", got)
	}
	for _, kind := range Kinds {
		cur, _ := Read(context.Background(), a)
		out, err := Marshal(FromCurrent(cur, kind))
		if err != nil {
			t.Fatal(err)
		}
		if got := apply(t, a, string(out)); len(got) != 0 {
			t.Errorf("get %s | apply changed %q; file:\n%s", kind, got, out)
		}
	}
}

// TestApplyStopsAtFailure: the failing step is named, nothing after it
// runs, and a second apply finishes the work.
func TestApplyStopsAtFailure(t *testing.T) {
	a := &fakeAgent{fail: "create outlet db"}
	f, _ := Parse([]byte(example))
	cur, _ := Read(context.Background(), a)
	err := Diff(f, cur).Apply(context.Background(), a, nil)
	if err == nil || !strings.Contains(err.Error(), "create outlet db: refused") {
		t.Fatalf("err = %v", err)
	}
	if slices.Contains(a.calls, "create inlet pg") {
		t.Errorf("apply went on after the failure: %q", a.calls)
	}
	a.fail = ""
	got := apply(t, a, example)
	if want := []string{"created outlet db", "created inlet pg", "created inlet pg-transparent"}; !slices.Equal(got, want) {
		t.Errorf("second apply: %q", got)
	}
}

// TestDryRunPlan: a plan read without Apply changes nothing, and says what
// it would do.
func TestDryRunPlan(t *testing.T) {
	a := &fakeAgent{}
	apply(t, a, example)
	a.calls = nil
	f, _ := Parse([]byte("outlets: []\n"))
	cur, _ := Read(context.Background(), a)
	var got []string
	for _, s := range Diff(f, cur).Steps {
		got = append(got, s.Planned())
	}
	if want := []string{"would delete outlet db"}; !slices.Equal(got, want) || len(a.calls) != 0 {
		t.Errorf("plan %q, calls %q; want %q and no calls", got, a.calls, want)
	}
}
