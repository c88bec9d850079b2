package kube

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/agent/daemon"
)

// TestClientListsAndWatches drives the source through Client's REST client
// (a scheme of core/v1 and meta/v1 only) against an HTTP server that
// answers as the API server does, in JSON: the pods it lists become
// workloads, a pod it sends on the watch updates them, and every request
// asks for this node's pods only, as sluice-agent, with a plain list then
// a watch (no watch-list streaming: sendInitialEvents is never set).
func TestClientListsAndWatches(t *testing.T) {
	typed := func(p *corev1.Pod) *corev1.Pod {
		p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
		return p
	}
	var (
		mu       sync.Mutex
		requests []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mu.Lock()
		requests = append(requests, fmt.Sprintf("%s %s watch=%s fieldSelector=%s sendInitialEvents=%s agent=%s",
			r.Method, r.URL.Path, q.Get("watch"), q.Get("fieldSelector"), q.Get("sendInitialEvents"), r.UserAgent()))
		mu.Unlock()
		if r.URL.Path != "/api/v1/pods" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if q.Get("watch") == "" {
			json.NewEncoder(w).Encode(corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"},
				ListMeta: metav1.ListMeta{ResourceVersion: "1"},
				Items:    []corev1.Pod{*typed(pod("app", "10.10.0.2", map[string]string{"app": "analytics"}))}})
			return
		}
		relabelled := typed(pod("app", "10.10.0.2", map[string]string{"app": "web"}))
		relabelled.ResourceVersion = "2"
		json.NewEncoder(w).Encode(map[string]any{"type": "MODIFIED", "object": relabelled})
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close) // after the source stops (run), which ends the watch
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {}}]
current-context: c
`, srv.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	c, server, err := Client(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if server != srv.URL {
		t.Errorf("server %q; want %q", server, srv.URL)
	}
	st := newStore()
	bound := &daemon.Binding{Ifindex: 21, Interface: "veth-app"}
	s, err := New(Options{Client: c, Node: node, Store: st, Server: server,
		Resolve: func(netip.Addr) (*daemon.Binding, error) { return bound, nil }})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	st.await(t, "the app pod, relabelled by the watch", func(ws []daemon.Workload) bool {
		return len(ws) == 1 && ws[0].Name == "k8s.analysis.app" && ws[0].Attributes["k8s:app"] == "web"
	})
	if err := s.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"GET /api/v1/pods watch= fieldSelector=spec.nodeName=" + node + " sendInitialEvents= agent=sluice-agent",
		"GET /api/v1/pods watch=true fieldSelector=spec.nodeName=" + node + " sendInitialEvents= agent=sluice-agent",
	}
	if len(requests) < 2 || requests[0] != want[0] || requests[1] != want[1] {
		t.Errorf("requests %q; want a list then a watch: %q", requests, want)
	}
}
