package deploy_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/sluicehq/sluice/agent/config"
)

// workloadsOff is the chart's values with kubernetes.workloads false.
var workloadsOff = map[string]any{"kubernetes": map[string]any{"workloads": false}}

// agentConfig is the ConfigMap's agent.yaml, read by the agent's own
// parser (strict: a field it does not know fails).
func agentConfig(t *testing.T, r *rendered) *config.File {
	t.Helper()
	data, ok := r.configMap.Data["agent.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no agent.yaml", r.configMap.Name)
	}
	f, err := config.Parse([]byte(data))
	if err != nil {
		t.Fatalf("the agent refuses the ConfigMap's agent.yaml: %v\n%s", err, data)
	}
	return f
}

// nodeNameEnv is the agent container's NODE_NAME variables.
func nodeNameEnv(c corev1.Container) []corev1.EnvVar {
	var out []corev1.EnvVar
	for _, e := range c.Env {
		if e.Name == "NODE_NAME" {
			out = append(out, e)
		}
	}
	return out
}

// TestChartPodWorkloads: kubernetes.workloads, on by default, enables the
// pod source in the agent's configuration file (and nothing on the command
// line overrides it or names another node or API server), gives the agent
// its node's name from the downward API, and runs it as a ServiceAccount,
// its token mounted, that a ClusterRoleBinding binds to a ClusterRole
// granting get, list and watch on pods and nothing else. Off, or with the
// agent off, none of these objects exist and the agent does not watch pods.
func TestChartPodWorkloads(t *testing.T) {
	r := render(t, nil)
	spec := r.daemonSet.Spec.Template.Spec
	c := spec.Containers[0]

	if k := agentConfig(t, r).Kubernetes; k == nil || !k.Enabled || k.NodeName != "" || k.Kubeconfig != "" {
		t.Errorf("agent.yaml kubernetes: %+v, want enabled, node and API server left to NODE_NAME and the service account", k)
	}
	for _, a := range c.Args {
		if n, _, _ := strings.Cut(a, "="); slices.Contains([]string{"--kubernetes", "--node-name", "--kubeconfig"}, n) {
			t.Errorf("args %v: %s overrides the configuration file's kubernetes:", c.Args, a)
		}
	}
	env := nodeNameEnv(c)
	if len(env) != 1 || env[0].Value != "" || env[0].ValueFrom == nil || env[0].ValueFrom.FieldRef == nil ||
		env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME %+v, want one, from fieldRef spec.nodeName", env)
	}

	// The pod runs as the ServiceAccount the binding names, with its token.
	sa, crb, cr := r.serviceAccount, r.binding, r.clusterRole
	if sa == nil || crb == nil || cr == nil {
		t.Fatalf("ServiceAccount %v, ClusterRoleBinding %v, ClusterRole %v; want each", sa != nil, crb != nil, cr != nil)
	}
	if sa.Name != "sluice-agent" || sa.Namespace != namespace || spec.ServiceAccountName != sa.Name {
		t.Errorf("DaemonSet serviceAccountName %q, ServiceAccount %s/%s; want sluice-agent in %s", spec.ServiceAccountName, sa.Namespace, sa.Name, namespace)
	}
	if spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken ||
		sa.AutomountServiceAccountToken != nil && !*sa.AutomountServiceAccountToken {
		t.Errorf("the service account's token is not mounted (pod %v, ServiceAccount %v): the agent cannot authenticate",
			spec.AutomountServiceAccountToken, sa.AutomountServiceAccountToken)
	}
	want := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}
	if len(crb.Subjects) != 1 || crb.Subjects[0] != want {
		t.Errorf("ClusterRoleBinding subjects %+v, want only %+v", crb.Subjects, want)
	}
	if ref := crb.RoleRef; ref.APIGroup != rbacv1.GroupName || ref.Kind != "ClusterRole" || ref.Name != cr.Name {
		t.Errorf("ClusterRoleBinding roleRef %+v, want ClusterRole %s", ref, cr.Name)
	}

	// The role reads pods and nothing else.
	wantRule := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}
	if len(cr.Rules) != 1 || cr.AggregationRule != nil || !equalRule(cr.Rules[0], wantRule) {
		t.Errorf("ClusterRole rules %+v, aggregation %+v; want exactly %+v", cr.Rules, cr.AggregationRule, wantRule)
	}

	if !strings.Contains(r.notes, "docs/kubernetes-workloads.md") {
		t.Errorf("NOTES.txt does not say the pods are workloads:\n%s", r.notes)
	}

	// Off: no pod source, no identity, no token.
	off := render(t, workloadsOff)
	if off.serviceAccount != nil || off.clusterRole != nil || off.binding != nil {
		t.Errorf("kubernetes.workloads=false still renders ServiceAccount %v, ClusterRole %v, ClusterRoleBinding %v",
			off.serviceAccount != nil, off.clusterRole != nil, off.binding != nil)
	}
	if strings.Contains(off.notes, "docs/kubernetes-workloads.md") {
		t.Errorf("kubernetes.workloads=false: NOTES.txt says the pods are workloads")
	}
	ospec := off.daemonSet.Spec.Template.Spec
	oc := ospec.Containers[0]
	if k := agentConfig(t, off).Kubernetes; k != nil {
		t.Errorf("kubernetes.workloads=false: agent.yaml has kubernetes: %+v", k)
	}
	if slices.ContainsFunc(oc.Args, func(a string) bool { return strings.HasPrefix(a, "--kubernetes") }) || len(nodeNameEnv(oc)) != 0 {
		t.Errorf("kubernetes.workloads=false: args %v, env %+v", oc.Args, oc.Env)
	}
	if ospec.ServiceAccountName != "" || ospec.AutomountServiceAccountToken == nil || *ospec.AutomountServiceAccountToken {
		t.Errorf("kubernetes.workloads=false: serviceAccountName %q, automountServiceAccountToken %v; want none, false",
			ospec.ServiceAccountName, ospec.AutomountServiceAccountToken)
	}

	// The hub alone: no agent, so no agent's ServiceAccount or RBAC.
	if h := render(t, map[string]any{"agent": map[string]any{"enabled": false}}); h.serviceAccount != nil || h.clusterRole != nil || h.binding != nil {
		t.Errorf("agent.enabled=false still renders the agent's ServiceAccount or RBAC")
	}
}

// equalRule compares two rules, the order of their lists aside.
func equalRule(a, b rbacv1.PolicyRule) bool {
	same := func(x, y []string) bool {
		x, y = slices.Clone(x), slices.Clone(y)
		slices.Sort(x)
		slices.Sort(y)
		return slices.Equal(x, y)
	}
	return same(a.APIGroups, b.APIGroups) && same(a.Resources, b.Resources) && same(a.Verbs, b.Verbs) &&
		same(a.ResourceNames, b.ResourceNames) && same(a.NonResourceURLs, b.NonResourceURLs)
}

// TestChartPodWorkloadsRefused: values that would leave the agent and its
// RBAC disagreeing are refused at render time, saying which: a quoted
// "false" (a string, which a template takes as true), and
// agent.config.kubernetes, which kubernetes.workloads owns.
func TestChartPodWorkloadsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"quoted false", map[string]any{"kubernetes": map[string]any{"workloads": "false"}}, "kubernetes.workloads: false (string): want true or false"},
		{"agent.config.kubernetes", map[string]any{"agent": map[string]any{"config": map[string]any{"kubernetes": map[string]any{"enabled": true}}}},
			"agent.config.kubernetes: set kubernetes.workloads instead"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := renderRelease(tc.vals); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("rendered (%v), want the error %q", err, tc.want)
			}
		})
	}
}

// TestChartConfigStrict: the ConfigMap's agent.yaml is read by the agent's
// parser strictly, so a key the chart (or a user's agent.config) misspells
// fails rather than being ignored.
func TestChartConfigStrict(t *testing.T) {
	r := render(t, map[string]any{"agent": map[string]any{"config": map[string]any{"datapth": "on"}}})
	if _, err := config.Parse([]byte(r.configMap.Data["agent.yaml"])); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "datapth") {
		t.Errorf("a misspelt key in agent.yaml: %v, want it refused by name", err)
	}
}

// TestAgentReadsChartConfig: the agent binary, started with the
// ConfigMap's agent.yaml as the DaemonSet starts it but without NODE_NAME,
// refuses to start for want of the node's name: the file does enable the
// pod source in the agent itself. With kubernetes.workloads off the same
// file asks for no node name.
func TestAgentReadsChartConfig(t *testing.T) {
	run := func(t *testing.T, vals map[string]any) string {
		t.Helper()
		dir := t.TempDir()
		cfg := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(cfg, []byte(render(t, vals).configMap.Data["agent.yaml"]), 0o644); err != nil {
			t.Fatal(err)
		}
		// --datapath off: the data path needs root, and is not what this
		// test is about; the other flags are the DaemonSet's, in dir.
		cmd := exec.Command(filepath.Join(bin, "agent"), "run", "--config", cfg, "--state-dir", filepath.Join(dir, "state"),
			"--api", filepath.Join(dir, "agent.sock"), "--datapath", "off")
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, "NODE_NAME=") && !strings.HasPrefix(e, "KUBERNETES_") {
				cmd.Env = append(cmd.Env, e)
			}
		}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("the agent ran with no ticket:\n%s", out)
		}
		return string(out)
	}
	const noNode = "--kubernetes: no node name: give --node-name or set $NODE_NAME"
	if out := run(t, nil); !strings.Contains(out, noNode) {
		t.Errorf("kubernetes.workloads on, no NODE_NAME: the agent said\n%s\nwant %q", out, noNode)
	}
	if out := run(t, workloadsOff); strings.Contains(out, "NODE_NAME") || !strings.Contains(out, "ticket") {
		t.Errorf("kubernetes.workloads off: the agent said\n%s\nwant it to ask for a ticket, not a node name", out)
	}
}
