package kube

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/sluicehq/sluice/agent/daemon"
)

// store records the sets the source gives.
type store struct {
	mu    sync.Mutex
	sets  [][]daemon.Workload
	calls int
	ch    chan struct{}
}

func newStore() *store { return &store{ch: make(chan struct{}, 1)} }

func (s *store) ReplaceWorkloads(source string, ws []daemon.Workload) error {
	if source != daemon.SourceKubernetes {
		return errors.New("wrong source " + source)
	}
	s.mu.Lock()
	s.sets = append(s.sets, append([]daemon.Workload(nil), ws...))
	s.calls++
	s.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
	default:
	}
	return nil
}

func (s *store) last() ([]daemon.Workload, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sets) == 0 {
		return nil, 0
	}
	return s.sets[len(s.sets)-1], s.calls
}

// await waits until the last set satisfies ok, and returns how long that took.
func (s *store) await(t *testing.T, what string, ok func([]daemon.Workload) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(10 * time.Second)
	for {
		if ws, n := s.last(); n > 0 && ok(ws) {
			return time.Since(start)
		}
		select {
		case <-s.ch:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			ws, _ := s.last()
			t.Fatalf("%s: the workloads are still %+v", what, ws)
		}
	}
}

// resolver answers for the addresses a test gives it.
type resolver struct {
	mu    sync.Mutex
	known map[netip.Addr]*daemon.Binding
	asked map[netip.Addr]int
}

func (r *resolver) resolve(a netip.Addr) (*daemon.Binding, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked[a]++
	if b, ok := r.known[a]; ok {
		return b, nil
	}
	return nil, ErrNoInterface
}

func (r *resolver) set(a string, b *daemon.Binding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.known[netip.MustParseAddr(a)] = b
}

// fieldSelectors records the field selectors of the pod lists and watches.
func fieldSelectors(c *fake.Clientset) func() []string {
	var (
		mu  sync.Mutex
		got []string
	)
	record := func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		switch a := a.(type) {
		case k8stesting.ListAction:
			got = append(got, a.GetListRestrictions().Fields.String())
		case k8stesting.WatchAction:
			got = append(got, a.GetWatchRestrictions().Fields.String())
		}
		return false, nil, nil
	}
	c.PrependReactor("list", "pods", record)
	c.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
		record(a)
		return false, nil, nil
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

func run(t *testing.T, s *Source) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func named(ws []daemon.Workload) map[string]daemon.Workload {
	m := map[string]daemon.Workload{}
	for _, w := range ws {
		m[w.Name] = w
	}
	return m
}

// TestSourceFollowsPods drives the informer with client-go's fake
// clientset: only this node's running pods with an address become
// workloads, bound where the resolver says; a relabel reaches the store
// within a second; a pod that stops running, loses its address or is
// deleted leaves the set; resyncs give the same set again, never a
// duplicate or a gap.
func TestSourceFollowsPods(t *testing.T) {
	appVeth := &daemon.Binding{Ifindex: 21, Interface: "veth-app"}
	host := pod("host", "192.0.2.10", nil)
	host.Spec.HostNetwork = true
	pending := pod("pending", "", nil)
	pending.Status.Phase = corev1.PodPending
	elsewhere := pod("elsewhere", "10.10.0.9", map[string]string{"app": "analytics"})
	elsewhere.Spec.NodeName = "node-b"
	cs := fake.NewClientset(pod("app", "10.10.0.2", map[string]string{"app": "analytics"}), host, pending, elsewhere)
	selectors := fieldSelectors(cs)
	r := &resolver{known: map[netip.Addr]*daemon.Binding{netip.MustParseAddr("10.10.0.2"): appVeth}, asked: map[netip.Addr]int{}}
	st := newStore()
	s, err := New(Options{Client: cs.CoreV1().Pods(""), Node: node, Store: st, Resolve: r.resolve, Resync: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(); !errors.Is(err, ErrNotSynced) {
		t.Errorf("Ready before Run: %v; want ErrNotSynced", err)
	}
	run(t, s)
	st.await(t, "the app pod", func(ws []daemon.Workload) bool { return len(ws) == 1 })
	ws, _ := st.last()
	want := daemon.Workload{Name: "k8s.analysis.app", Address: "10.10.0.2", Bound: appVeth, Source: daemon.SourceKubernetes,
		Attributes: map[string]string{"k8s:app": "analytics", "k8s:namespace": "analysis", "k8s:serviceaccount": "reader", "k8s:pod": "app"}}
	if !reflect.DeepEqual(ws[0], want) {
		t.Errorf("workload %+v; want %+v", ws[0], want)
	}
	if err := s.Ready(); err != nil {
		t.Errorf("Ready after the list: %v", err)
	}
	// The API server is asked only for this node's pods (the fake ignores
	// the selector: Map leaves the other node's pod out as well).
	for _, f := range selectors() {
		if f != "spec.nodeName="+node {
			t.Errorf("a list or watch with field selector %q; want spec.nodeName=%s", f, node)
		}
	}
	if len(selectors()) == 0 {
		t.Error("no list or watch recorded")
	}

	// Resyncs (every 20ms) give the same set: one workload, same binding,
	// looked up once.
	_, before := st.last()
	st.await(t, "resyncs", func([]daemon.Workload) bool { _, n := st.last(); return n >= before+3 })
	st.mu.Lock()
	for _, set := range st.sets {
		if len(set) != 1 || !reflect.DeepEqual(set[0], want) {
			t.Errorf("a set %+v; want only %+v", set, want)
		}
	}
	st.mu.Unlock()
	r.mu.Lock()
	n := r.asked[netip.MustParseAddr("10.10.0.2")]
	r.mu.Unlock()
	if n != 1 {
		t.Errorf("the app's interface was looked up %d times; want once (kept while its address is)", n)
	}

	ctx := context.Background()
	pods := cs.CoreV1().Pods("analysis")
	update := func(p *corev1.Pod) {
		t.Helper()
		if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Relabelled.
	took := func() time.Duration {
		update(pod("app", "10.10.0.2", map[string]string{"app": "web"}))
		return st.await(t, "relabelled", func(ws []daemon.Workload) bool {
			return len(ws) == 1 && ws[0].Attributes["k8s:app"] == "web"
		})
	}()
	t.Logf("a relabel reached the store in %v", took)

	// A second pod, whose interface is found only later: listed unbound
	// meanwhile, bound when found.
	if _, err := pods.Create(ctx, pod("db", "10.10.0.3", map[string]string{"app": "db"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st.await(t, "the db pod, unbound", func(ws []daemon.Workload) bool {
		w, ok := named(ws)["k8s.analysis.db"]
		return ok && w.Bound == nil
	})
	r.set("10.10.0.3", &daemon.Binding{Ifindex: 22, Interface: "veth-db"})
	st.await(t, "the db pod, bound", func(ws []daemon.Workload) bool {
		w := named(ws)["k8s.analysis.db"]
		return w.Bound != nil && w.Bound.Interface == "veth-db"
	})

	// Not running, then back with no address, then deleted.
	done := pod("db", "10.10.0.3", map[string]string{"app": "db"})
	done.Status.Phase = corev1.PodSucceeded
	update(done)
	st.await(t, "the db pod succeeded", func(ws []daemon.Workload) bool { _, ok := named(ws)["k8s.analysis.db"]; return len(ws) == 1 && !ok })
	update(pod("db", "10.10.0.3", nil))
	st.await(t, "the db pod running again", func(ws []daemon.Workload) bool { return len(ws) == 2 })
	update(pod("db", "", nil))
	st.await(t, "the db pod without its IP", func(ws []daemon.Workload) bool { return len(ws) == 1 })
	if err := pods.Delete(ctx, "app", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	st.await(t, "the app pod deleted", func(ws []daemon.Workload) bool { return len(ws) == 0 })
}

// TestSourceUnreachable: with no API server at the address, the source is
// not ready, says why through the logger it was given, and keeps trying;
// nothing is given to the store.
func TestSourceUnreachable(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	// 127.0.0.1:1: nothing listens there.
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, server, err := Client(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	st := newStore()
	s, err := New(Options{Client: c, Node: node, Store: st, Log: zap.New(core), Server: server})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	deadline := time.Now().Add(10 * time.Second)
	for logs.FilterMessageSnippet("cannot list the pods").Len() < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := logs.FilterMessageSnippet("cannot list the pods").Len(); n < 2 {
		t.Fatalf("%d errors logged in 10s; want the first failure and a retry", n)
	}
	err = s.Ready()
	if !errors.Is(err, ErrNotSynced) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Ready: %v; want ErrNotSynced saying the connection was refused", err)
	}
	e := logs.FilterMessageSnippet("cannot list the pods").All()[0]
	if e.Level != zap.ErrorLevel || e.ContextMap()["server"] != "http://127.0.0.1:1" {
		t.Errorf("logged %v %q %v; want an error naming the server", e.Level, e.Message, e.ContextMap())
	}
	if _, n := st.last(); n != 0 {
		t.Errorf("the store was given %d sets before the pods were listed", n)
	}
}

func TestNewNeedsNode(t *testing.T) {
	if _, err := New(Options{Client: fake.NewClientset().CoreV1().Pods(""), Store: newStore()}); err == nil || !strings.Contains(err.Error(), "NODE_NAME") {
		t.Errorf("New without a node: %v", err)
	}
	if _, _, err := Client(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("Client with a missing kubeconfig: %v", err)
	}
}

// TestSourceOneByAddress: of two running pods with one address, the one
// not being deleted is the workload (a terminating pod whose address the
// CNI gave to a new pod); two live pods with one address are neither (and
// logged), until one goes.
func TestSourceOneByAddress(t *testing.T) {
	old := pod("old", "10.10.0.2", map[string]string{"app": "old"})
	now := metav1.Now()
	old.DeletionTimestamp = &now
	cs := fake.NewClientset(old, pod("new", "10.10.0.2", map[string]string{"app": "new"}),
		pod("twin-a", "10.10.0.5", nil), pod("twin-b", "10.10.0.5", nil))
	core, logs := observer.New(zap.InfoLevel)
	st := newStore()
	r := &resolver{known: map[netip.Addr]*daemon.Binding{}, asked: map[netip.Addr]int{}}
	s, err := New(Options{Client: cs.CoreV1().Pods(""), Node: node, Store: st, Resolve: r.resolve, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	st.await(t, "the new pod only", func(ws []daemon.Workload) bool {
		return len(ws) == 1 && ws[0].Name == "k8s.analysis.new" && ws[0].Attributes["k8s:app"] == "new"
	})
	if n := logs.FilterMessageSnippet("several running pods have one address").Len(); n != 1 {
		t.Errorf("the twins were logged %d times; want once", n)
	}
	if err := cs.CoreV1().Pods("analysis").Delete(context.Background(), "twin-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	st.await(t, "twin-a once alone", func(ws []daemon.Workload) bool {
		_, ok := named(ws)["k8s.analysis.twin-a"]
		return len(ws) == 2 && ok
	})
}
