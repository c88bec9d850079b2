package kube

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/portal"
)

const node = "node-a"

// pod is a running pod of node with an address and labels.
func pod(name, ip string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "analysis", Name: name, UID: types.UID("uid-" + name), Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: "reader"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func TestMap(t *testing.T) {
	p := pod("app-1", "10.10.0.2", map[string]string{"app": "analytics", "app.kubernetes.io/part-of": "bank"})
	m, why := Map(p, node)
	want := daemon.Workload{Name: "k8s.analysis.app-1", Address: "10.10.0.2", Source: daemon.SourceKubernetes, Attributes: map[string]string{
		"k8s:app": "analytics", "k8s:app.kubernetes.io/part-of": "bank",
		"k8s:namespace": "analysis", "k8s:serviceaccount": "reader", "k8s:pod": "app-1"}}
	if why != "" || !reflect.DeepEqual(m.Workload, want) || len(m.Skipped) != 0 {
		t.Errorf("Map = %+v, %q; want %+v", m, why, want)
	}

	// Dual stack: the IPv4 address, wherever it is listed.
	dual := pod("dual", "fd00::2", nil)
	dual.Status.PodIPs = []corev1.PodIP{{IP: "fd00::2"}, {IP: "10.10.0.7"}}
	if m, _ := Map(dual, node); m.Workload.Address != "10.10.0.7" {
		t.Errorf("dual-stack pod: address %q; want 10.10.0.7", m.Workload.Address)
	}

	none := []struct {
		name string
		edit func(*corev1.Pod)
		why  string
	}{
		{"another node's", func(p *corev1.Pod) { p.Spec.NodeName = "node-b" }, notOnNode},
		{"unscheduled", func(p *corev1.Pod) { p.Spec.NodeName = "" }, notOnNode},
		{"hostNetwork", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, hostNetwork},
		{"pending", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }, notRunning},
		{"succeeded", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }, notRunning},
		{"without an IP", func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil }, noAddress},
		{"IPv6 only", func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "fd00::2", []corev1.PodIP{{IP: "fd00::2"}} }, noAddress},
		{"a bad IP", func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "10.10.0", nil }, noAddress},
	}
	for _, c := range none {
		p := pod("x", "10.10.0.3", map[string]string{"app": "analytics"})
		c.edit(p)
		if m, why := Map(p, node); why != c.why {
			t.Errorf("%s pod: Map = %+v, %q; want none because %q", c.name, m, why, c.why)
		}
	}
}

// TestMapLabelsCannotForge: a label cannot set the attributes the pod's
// metadata gives, and a label whose attribute name would be invalid is
// left out, never rewritten.
func TestMapLabelsCannotForge(t *testing.T) {
	long := strings.Repeat("a", 120) + ".example.com/app"
	p := pod("app-1", "10.10.0.2", map[string]string{
		"namespace": "kube-system", "serviceaccount": "admin", "pod": "other",
		long: "x", "tier": "db",
	})
	m, _ := Map(p, node)
	a := m.Workload.Attributes
	if a["k8s:namespace"] != "analysis" || a["k8s:serviceaccount"] != "reader" || a["k8s:pod"] != "app-1" {
		t.Errorf("labels forged the pod's metadata: %v", a)
	}
	if _, ok := a[Prefix+long]; ok || a["k8s:tier"] != "db" || len(a) != 4 {
		t.Errorf("attributes %v; want the metadata and k8s:tier only", a)
	}
	if len(m.Skipped) != 4 {
		t.Errorf("Skipped = %q; want the three reserved keys and the long one", m.Skipped)
	}
	// No service account: no attribute (never an empty one).
	p.Spec.ServiceAccountName = ""
	if m, _ := Map(p, node); m.Workload.Attributes["k8s:serviceaccount"] != "" {
		t.Errorf("a pod without a service account: %v", m.Workload.Attributes)
	}
}

func TestWorkloadName(t *testing.T) {
	short := WorkloadName("analysis", "app-1")
	long1 := WorkloadName("analysis", strings.Repeat("p", 80)+"-1")
	long2 := WorkloadName("analysis", strings.Repeat("p", 80)+"-2")
	for _, n := range []string{short, long1, long2} {
		if err := portal.CheckName("workload", n, daemon.ErrInvalidWorkload); err != nil {
			t.Error(err)
		}
	}
	if short != "k8s.analysis.app-1" || long1 == long2 || len(long1) != maxName {
		t.Errorf("names %q %q %q", short, long1, long2)
	}
	// The longest namespace and pod names Kubernetes allows still make a name.
	if err := portal.CheckName("workload", WorkloadName(strings.Repeat("n", 63), strings.Repeat("p", 253)), daemon.ErrInvalidWorkload); err != nil {
		t.Error(err)
	}
}
