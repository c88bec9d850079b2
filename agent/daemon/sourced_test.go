package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/internal/testhub"
)

// TestSourcedWorkloads follows the workloads of a source (package kube's
// pods) through the agent: they are address workloads bound where the
// source says, keep their number while they stay, are replaced as a whole
// set (a repeated set changes nothing; a shorter one removes), give way to
// the operator's workloads, cannot be deleted by the operator, and are not
// saved.
func TestSourcedWorkloads(t *testing.T) {
	h := testhub.Start(t, testhub.Options{})
	dir := t.TempDir()
	a := start(t, dir, h.Ticket(t, authority.TicketOptions{}))
	fs := &fakeSys{}
	fs.set(appVeth, other)
	k := &fakeKernel{}
	a.dp.mu.Lock()
	a.dp.kern, a.dp.sys = k, fs.system()
	a.dp.mu.Unlock()

	pod := Workload{Name: "k8s.default.app", Address: appAddr.String(), Attributes: map[string]string{"k8s:app": "analytics"},
		Bound: &Binding{Ifindex: 11, Interface: "veth-app"}}
	if err := a.ReplaceWorkloads(SourceKubernetes, []Workload{pod}); err != nil {
		t.Fatal(err)
	}
	ws := a.Workloads()
	if len(ws) != 1 || ws[0].Source != SourceKubernetes || ws[0].Bound.String() != "veth-app (ifindex 11)" || ws[0].Attributes["k8s:app"] != "analytics" {
		t.Fatalf("Workloads() = %+v; want the pod's, bound to veth-app, from kubernetes", ws)
	}
	num := ws[0].Number
	if p := k.last(); p.Endpoints[endpoint{Ifindex: 11, Addr: appAddr}] != num || p.Bindings[appAddr] != 11 {
		t.Errorf("plan: endpoints %v bindings %v; want the pod's address bound to 11 as workload %d", p.Endpoints, p.Bindings, num)
	}

	// The same set again (an informer's resync): nothing written.
	plans := len(k.plans)
	if err := a.ReplaceWorkloads(SourceKubernetes, []Workload{pod}); err != nil {
		t.Fatal(err)
	}
	if len(k.plans) != plans {
		t.Errorf("the same set again rewrote the maps (%d plans, want %d)", len(k.plans), plans)
	}

	// Relabelled: same number, new attributes in the plan.
	relabel := pod
	relabel.Attributes = map[string]string{"k8s:app": "web"}
	if err := a.ReplaceWorkloads(SourceKubernetes, []Workload{relabel}); err != nil {
		t.Fatal(err)
	}
	if ws := a.Workloads(); len(ws) != 1 || ws[0].Number != num || ws[0].Attributes["k8s:app"] != "web" {
		t.Errorf("after relabelling: %+v; want workload %d with k8s:app=web", ws, num)
	}
	if len(k.plans) == plans {
		t.Error("relabelling did not rewrite the maps")
	}

	// The operator cannot delete it, and it is not saved.
	if err := a.DeleteWorkload(pod.Name); !errors.Is(err, ErrSourcedWorkload) || !errors.Is(err, ErrInvalidWorkload) {
		t.Errorf("deleting a sourced workload: %v; want ErrSourcedWorkload and ErrInvalidWorkload", err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, workloadsFile)); err != nil || strings.Contains(string(data), pod.Name) {
		t.Errorf("workloads.json (%v) holds the sourced workload:\n%s", err, data)
	}

	// The operator's workload with the same address wins; the pod's comes
	// back when it goes.
	if _, err := a.CreateWorkload(Workload{Name: "hand", Address: appAddr.String(), Attributes: map[string]string{"app": "x"}}); err != nil {
		t.Fatal(err)
	}
	if ws := a.Workloads(); len(ws) != 1 || ws[0].Name != "hand" || ws[0].Source != "" {
		t.Errorf("with the operator's workload on the pod's address: %+v; want only the operator's", ws)
	}
	if err := a.ReplaceWorkloads(SourceKubernetes, []Workload{relabel}); err != nil {
		t.Fatal(err)
	}
	if ws := a.Workloads(); len(ws) != 1 || ws[0].Name != "hand" {
		t.Errorf("the source said its set again: %+v; want only the operator's", ws)
	}
	if err := a.DeleteWorkload("hand"); err != nil {
		t.Fatal(err)
	}
	if ws := a.Workloads(); len(ws) != 1 || ws[0].Name != pod.Name || ws[0].Source != SourceKubernetes {
		t.Errorf("after the operator's workload went: %+v; want the pod's back", ws)
	}

	// An invalid workload is left out and said; the valid ones apply.
	bad := Workload{Name: "bad/name", Address: "10.10.0.9"}
	if err := a.ReplaceWorkloads(SourceKubernetes, []Workload{relabel, bad}); !errors.Is(err, ErrInvalidWorkload) {
		t.Errorf("a set with an invalid workload: %v; want ErrInvalidWorkload", err)
	}
	if ws := a.Workloads(); len(ws) != 1 || ws[0].Name != pod.Name {
		t.Errorf("after a set with an invalid workload: %+v", ws)
	}

	// An empty set (the pod went): removed from the maps.
	if err := a.ReplaceWorkloads(SourceKubernetes, nil); err != nil {
		t.Fatal(err)
	}
	if ws := a.Workloads(); len(ws) != 0 {
		t.Errorf("after the empty set: %+v; want none", ws)
	}
	if p := k.last(); len(p.Endpoints) != 0 || len(p.Bindings) != 0 {
		t.Errorf("plan after the empty set: endpoints %v bindings %v; want none", p.Endpoints, p.Bindings)
	}

	// Restarted: nothing of the source comes back from the state directory.
	if err := a.ReplaceWorkloads(SourceKubernetes, []Workload{pod}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	b := start(t, dir, "")
	defer b.Close()
	if ws := b.Workloads(); len(ws) != 0 {
		t.Errorf("after a restart: %+v; want none until the source says them", ws)
	}
	if !reflect.DeepEqual(a.dp.hidden, map[string]string{}) {
		t.Errorf("hidden = %v; want none", a.dp.hidden)
	}
}
