package scenario_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluicehq/sluice/testenv"
	"github.com/sluicehq/sluice/testenv/scenario"
)

// fakeAPIServer answers the requests of the agent's pod informer (GET
// /api/v1/pods, a list, then ?watch=true) from client-go's fake clientset,
// applying the field selector as the API server does, in JSON. No real
// kube-apiserver can be built here: it lives only in k8s.io/kubernetes,
// whose go.mod replaces its k8s.io/* staging modules with local paths, so
// neither `go install` nor a require of it builds (docs/kubernetes-workloads.md).
type fakeAPIServer struct {
	pods    *fake.Clientset
	watches atomic.Int32 // watches being served
	lists   atomic.Int32
}

func (f *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != "/api/v1/pods" {
		http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`, http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	sel, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil || q.Get("sendInitialEvents") == "true" {
		http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"BadRequest","code":400}`, http.StatusBadRequest)
		return
	}
	match := func(p *corev1.Pod) bool { return sel.Matches(fields.Set{"spec.nodeName": p.Spec.NodeName}) }
	typed := func(p *corev1.Pod) *corev1.Pod {
		p = p.DeepCopy()
		p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
		return p
	}
	w.Header().Set("Content-Type", "application/json")
	if q.Get("watch") != "true" && q.Get("watch") != "1" {
		f.lists.Add(1)
		l, err := f.pods.CoreV1().Pods("").List(r.Context(), metav1.ListOptions{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: "1"}}
		for i := range l.Items {
			if match(&l.Items[i]) {
				out.Items = append(out.Items, *typed(&l.Items[i]))
			}
		}
		json.NewEncoder(w).Encode(out)
		return
	}
	wi, err := f.pods.CoreV1().Pods("").Watch(r.Context(), metav1.ListOptions{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer wi.Stop()
	f.watches.Add(1)
	defer f.watches.Add(-1)
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod || !match(p) {
				continue
			}
			if enc.Encode(struct {
				Type   string      `json:"type"`
				Object *corev1.Pod `json:"object"`
			}{string(ev.Type), typed(p)}) != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}
}

const podNode = "analysis-node"

// newPod is a running pod of podNode with an address and labels.
func newPod(name, ip string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: podNode, ServiceAccountName: "reader"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

// workloadRow is a workload as `agentctl workload list -o json` shows it.
type workloadRow struct {
	Name       string            `json:"name"`
	Address    string            `json:"address"`
	Attributes map[string]string `json:"attributes"`
	Source     string            `json:"source"`
	Bound      *struct {
		Interface string `json:"interface"`
	} `json:"bound"`
}

func workloads(t *testing.T, ctx context.Context, s *scenario.Scenario) map[string]workloadRow {
	t.Helper()
	out, err := s.Analysis.Ctl(ctx, "workload", "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []workloadRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("workload list: %v:\n%s", err, out)
	}
	m := map[string]workloadRow{}
	for _, r := range rows {
		m[r.Name] = r
	}
	return m
}

// awaitWorkloads polls the agent's workloads until ok holds.
func awaitWorkloads(t *testing.T, ctx context.Context, s *scenario.Scenario, what string, ok func(map[string]workloadRow) bool) map[string]workloadRow {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ws := workloads(t, ctx, s)
		if ok(ws) {
			return ws
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: workloads are %+v", what, ws)
		}
	}
}

// TestKubernetesPods: an agent run with --kubernetes turns the pods of its
// node, as the API server lists them, into workloads that a transparent
// inlet's --allow-local 'k8s:app == "analytics"' sees: the analytics pod
// (the seed's app container) gets through, another pod is refused in the
// kernel; a relabel refuses the app within a second (measured); deleting
// the pod removes its workload. The operator's workload on the same
// address wins while it exists.
func TestKubernetesPods(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end scenario skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := testenv.NewT(t)
	if _, err := os.Stat(filepath.Join(appDir, "node_modules", "pg")); err != nil {
		t.Fatalf("the Node.js app's dependencies are missing: run `make app-deps` (%v)", err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	s, err := scenario.New(env, scenario.Options{Bin: bin, AppDir: appDir, Mode: scenario.Transparent, Progress: func(m string) { t.Log(m) },
		AgentArgs: map[string][]string{"analysis": {"--kubernetes", "--kubeconfig", kubeconfig, "--node-name", podNode}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close scenario: %v", err)
		}
	})
	// The API server listens on the analysis host's loopback, where the agent runs.
	ln, err := s.Seed.AnalysisHost.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := &fakeAPIServer{pods: fake.NewClientset()}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	if err := os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://%s"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {}}]
current-context: c
`, ln.Addr()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); api.watches.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent never watched the pods (%d lists):\n%s", api.lists.Load(), s.Analysis.Proc.Output())
		}
	}

	other, err := s.Seed.AddContainer(s.Seed.AnalysisHost, "other", "10.10.0.3")
	if err != nil {
		t.Fatal(err)
	}
	waitSteered(t, s, other)
	app := s.Seed.App
	// Each pod says something to the host first: on a bridge, its
	// neighbour entry and the bridge's FDB entry name its veth.
	for _, ct := range []*testenv.Container{app, other} {
		if c, err := ct.NS.DialTCP(ctx, testenv.SeedAnalysisGW+":9", 2*time.Second); err == nil {
			c.Close()
		}
	}
	pods := api.pods.CoreV1().Pods("default")
	for _, p := range []*corev1.Pod{
		newPod("analytics", app.Addr, map[string]string{"app": "analytics", "tier": "batch"}),
		newPod("web", other.Addr, map[string]string{"app": "web"}),
		func() *corev1.Pod { // another node's: never listed
			p := newPod("elsewhere", "10.10.0.4", map[string]string{"app": "analytics"})
			p.Spec.NodeName = "bank-node"
			return p
		}(),
	} {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// The operator's workload "app" (scenario.Start made it) has the
	// analytics pod's address: it wins, the pod's is left out.
	ws := awaitWorkloads(t, ctx, s, "the web pod", func(ws map[string]workloadRow) bool { _, ok := ws["k8s.default.web"]; return ok })
	if _, ok := ws["k8s.default.analytics"]; ok || ws[scenario.AppWorkload].Source != "" {
		t.Errorf("with the operator's workload on the pod's address: %+v; want the operator's only", ws)
	}
	if err := s.DisallowApp(ctx); err != nil {
		t.Fatal(err)
	}
	ws = awaitWorkloads(t, ctx, s, "the analytics pod", func(ws map[string]workloadRow) bool { _, ok := ws["k8s.default.analytics"]; return ok })
	got := ws["k8s.default.analytics"]
	want := map[string]string{"k8s:app": "analytics", "k8s:tier": "batch", "k8s:namespace": "default", "k8s:serviceaccount": "reader", "k8s:pod": "analytics"}
	if got.Source != "kubernetes" || got.Address != app.Addr || got.Bound == nil || got.Bound.Interface != app.Veth || fmt.Sprint(got.Attributes) != fmt.Sprint(want) {
		t.Errorf("the analytics pod's workload: %+v (bound %+v); want %s bound to %s from kubernetes with %v", got, got.Bound, app.Addr, app.Veth, want)
	}
	if w := ws["k8s.default.web"]; w.Bound == nil || w.Bound.Interface != other.Veth {
		t.Errorf("the web pod's workload: %+v; want bound to %s", w, other.Veth)
	}
	if _, ok := ws["k8s.default.elsewhere"]; ok {
		t.Error("a pod of another node is a workload")
	}
	if out := s.Analysis.Proc.Output(); strings.Contains(out, "host-side interface is not found yet") {
		t.Errorf("a pod's interface was not found from the route, the neighbour and the FDB:\n%s", out)
	}
	if _, err := s.Analysis.Ctl(ctx, "workload", "delete", "k8s.default.web"); err == nil || !strings.Contains(err.Error(), "kubernetes") {
		t.Errorf("deleting a pod's workload by hand: %v; want refused, naming its source", err)
	}

	// The transparent inlet again, for the pods' label.
	if _, err := s.Analysis.Ctl(ctx, "tcp-inlet", "delete", scenario.TransparentInlet); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Analysis.Ctl(ctx, "tcp-inlet", "create", "--transparent", "--name", scenario.TransparentInlet, "--from", scenario.ServiceAddr,
		"--outlet", scenario.PostgresOutlet, "--via", scenario.BankRelay, "--allow", "postgres-outlet", "--allow-local", `k8s:app == "analytics"`); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Psql(ctx, app.NS, scenario.ServiceIP, scenario.ServicePort, "SELECT 1"); err != nil || got != "1" {
		t.Fatalf("the analytics pod through the service: %q, %v", got, err)
	}
	before := inletCounters(t, ctx, s.Analysis)
	t.Logf("the web pod: refused in %v", refused(t, ctx, other.NS))
	if after := inletCounters(t, ctx, s.Analysis); after.Refused != before.Refused+1 || after.Steered != before.Steered {
		t.Errorf("kernel counters %+v -> %+v; want one more refused, none steered", before, after)
	}

	// Relabelled: refused within a second, its open session closed.
	relabel := func(app string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := pods.Update(ctx, newPod("analytics", s.Seed.App.Addr, map[string]string{"app": app, "tier": "batch"}), metav1.UpdateOptions{})
			return err
		}
	}
	sess, err := openSession(ctx, app.NS)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := relabel("web")(ctx); err != nil {
		t.Fatal(err)
	}
	took, err := waitRefused(ctx, app.NS, start, 3*policyWithin)
	t.Logf("relabelled app=web: new connections refused %v after the update", took)
	if err != nil || took > policyWithin {
		t.Errorf("new connections refused %v after the relabel (%v); want within %v", took, err, policyWithin)
	}
	sess.SetReadDeadline(start.Add(policyWithin))
	if _, err := sess.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("the open session after the relabel: %v; want closed within %v", err, policyWithin)
	}
	sess.Close()
	if err := relabel("analytics")(ctx); err != nil {
		t.Fatal(err)
	}
	expectBack(t, ctx, s)

	// Deleted: its workload goes, and the app is refused.
	if err := pods.Delete(ctx, "analytics", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	awaitWorkloads(t, ctx, s, "the analytics pod deleted", func(ws map[string]workloadRow) bool {
		_, ok := ws["k8s.default.analytics"]
		return !ok && len(ws) == 1
	})
	refused(t, ctx, app.NS)
}
