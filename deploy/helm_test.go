package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/agent/config"
	sluiceloader "github.com/sluicehq/sluice/loader"
)

// The chart, and the manifests its default values render (make manifests).
const (
	chartDir      = "helm/sluice"
	manifestsFile = "kubernetes/sluice.yaml"
	releaseName   = "sluice"
	namespace     = "sluice"
	// envUpdate makes TestManifests write manifestsFile instead of
	// comparing it: make manifests sets it.
	envUpdate       = "SLUICE_UPDATE_MANIFESTS"
	manifestsHeader = "# The Sluice chart (deploy/helm/sluice) rendered with its default values, release\n" +
		"# \"sluice\" in namespace \"sluice\": `make manifests` writes this file, a test keeps\n" +
		"# it equal to the chart. Edit the chart, not this file.\n"
)

// rendered is the chart rendered as `helm template` renders it: the
// manifest, each object decoded strictly, and the notes.
type rendered struct {
	manifest  string
	notes     string
	daemonSet *appsv1.DaemonSet
	stateful  *appsv1.StatefulSet
	services  []*corev1.Service
	configMap *corev1.ConfigMap
	// With kubernetes.workloads (chart_pods_test.go).
	serviceAccount *corev1.ServiceAccount
	clusterRole    *rbacv1.ClusterRole
	binding        *rbacv1.ClusterRoleBinding
}

// render renders the chart with vals (nil: the defaults) through Helm's
// library, client side only (no cluster), and decodes every object into
// its k8s.io/api type; a field the type lacks, or a kind the chart is not
// meant to have, fails.
func render(t *testing.T, vals map[string]any) *rendered {
	t.Helper()
	rel, err := renderRelease(vals)
	if err != nil {
		t.Fatal(err)
	}
	r := &rendered{manifest: rel.Manifest, notes: rel.Info.Notes}
	for i, doc := range strings.Split(rel.Manifest, "\n---\n") {
		doc = strings.TrimPrefix(strings.TrimSpace(doc), "---")
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("object %d: %v\n%s", i, err, doc)
		}
		var obj any
		switch meta.Kind {
		case "DaemonSet":
			r.daemonSet = &appsv1.DaemonSet{}
			obj = r.daemonSet
		case "StatefulSet":
			r.stateful = &appsv1.StatefulSet{}
			obj = r.stateful
		case "Service":
			s := &corev1.Service{}
			r.services = append(r.services, s)
			obj = s
		case "ConfigMap":
			r.configMap = &corev1.ConfigMap{}
			obj = r.configMap
		case "ServiceAccount":
			r.serviceAccount = &corev1.ServiceAccount{}
			obj = r.serviceAccount
		case "ClusterRole":
			r.clusterRole = &rbacv1.ClusterRole{}
			obj = r.clusterRole
		case "ClusterRoleBinding":
			r.binding = &rbacv1.ClusterRoleBinding{}
			obj = r.binding
		default:
			t.Fatalf("object %d: kind %q, which the chart is not meant to render:\n%s", i, meta.Kind, doc)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("object %d (%s) does not decode strictly into its k8s.io/api type: %v\n%s", i, meta.Kind, err, doc)
		}
	}
	return r
}

// renderRelease renders the chart with vals (nil: the defaults) through
// Helm's library, client side only.
func renderRelease(vals map[string]any) (*release.Release, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	inst := action.NewInstall(action.NewConfiguration())
	inst.DryRunStrategy = action.DryRunClient
	inst.Replace = true
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	if vals == nil {
		vals = map[string]any{}
	}
	ri, err := inst.Run(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("render the chart: %w", err)
	}
	rel, ok := ri.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("render the chart: a %T, want a *release.Release", ri)
	}
	return rel, nil
}

// TestChartRendersStrictly: every object of the chart, with its default
// values and with the agent or the hub alone, decodes strictly into its
// k8s.io/api type, and the strict decoding does catch a field that does
// not exist.
func TestChartRendersStrictly(t *testing.T) {
	r := render(t, nil)
	if r.daemonSet == nil || r.stateful == nil || len(r.services) != 1 || r.configMap == nil ||
		r.serviceAccount == nil || r.clusterRole == nil || r.binding == nil {
		t.Fatalf("default values render DaemonSet %v, StatefulSet %v, %d Services, ConfigMap %v, ServiceAccount %v, ClusterRole %v, ClusterRoleBinding %v; want one of each",
			r.daemonSet != nil, r.stateful != nil, len(r.services), r.configMap != nil, r.serviceAccount != nil, r.clusterRole != nil, r.binding != nil)
	}
	if r := render(t, map[string]any{"hub": map[string]any{"enabled": false}}); r.stateful != nil || len(r.services) != 0 || r.daemonSet == nil {
		t.Errorf("hub.enabled=false still renders the hub, or not the agent")
	}
	if r := render(t, map[string]any{"agent": map[string]any{"enabled": false}}); r.daemonSet != nil || r.configMap != nil || r.serviceAccount != nil ||
		r.clusterRole != nil || r.binding != nil || r.stateful == nil {
		t.Errorf("agent.enabled=false still renders the agent, or not the hub")
	}
	var ds appsv1.DaemonSet
	bad := "apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      hostNetwrok: true\n"
	if err := yaml.UnmarshalStrict([]byte(bad), &ds); err == nil || !strings.Contains(err.Error(), "hostNetwrok") {
		t.Errorf("a misspelt field decodes (%v): the strict decoding proves nothing", err)
	}
}

// TestChartLint: helm lint, strict (warnings fail), through the library,
// finds nothing above information.
func TestChartLint(t *testing.T) {
	l := action.NewLint()
	l.Strict = true
	l.Namespace = namespace
	res := l.Run([]string{chartDir}, map[string]any{})
	if len(res.Errors) > 0 {
		t.Errorf("lint errors: %v", errors.Join(res.Errors...))
	}
	for _, m := range res.Messages {
		if m.Severity >= support.WarningSev {
			t.Errorf("lint: %s", m)
		}
	}
	if res.TotalChartsLinted != 1 {
		t.Errorf("linted %d charts, want 1", res.TotalChartsLinted)
	}
}

// TestManifests: deploy/kubernetes is what the chart renders with its
// default values (make manifests writes it).
func TestManifests(t *testing.T) {
	want := manifestsHeader + render(t, nil).manifest
	if !strings.HasSuffix(want, "\n") {
		want += "\n"
	}
	if os.Getenv(envUpdate) != "" {
		if err := os.WriteFile(manifestsFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", manifestsFile)
		return
	}
	got, err := os.ReadFile(manifestsFile)
	if err != nil {
		t.Fatalf("%v (make manifests writes it)", err)
	}
	if string(got) != want {
		t.Errorf("%s differs from what the chart renders: run make manifests\n%s", manifestsFile, firstDiff(string(got), want))
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d: file %q, chart %q", i+1, x, y)
		}
	}
	return ""
}

// TestDaemonSet: the agent's DaemonSet runs it as docs/deploy.md says: on
// the host's network and PID namespace, the host's bpffs and cgroups, its
// state on the node, exactly the capabilities of loader.Capabilities and
// not privileged, probes on the port its --metrics listens on, the ticket
// file it reads coming from the Secret's key, the configuration file it
// reads coming from the ConfigMap (a file the agent accepts), one node at
// a time in a rolling update, system-node-critical, on every node.
func TestDaemonSet(t *testing.T) {
	r := render(t, nil)
	ds := r.daemonSet
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || !spec.HostPID || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v, hostPID %v, dnsPolicy %q; want true, true, ClusterFirstWithHostNet", spec.HostNetwork, spec.HostPID, spec.DNSPolicy)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
		t.Errorf("tolerations %+v, want one that tolerates every taint", spec.Tolerations)
	}
	us := ds.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil || us.RollingUpdate.MaxUnavailable.String() != "1" ||
		us.RollingUpdate.MaxSurge.String() != "0" {
		t.Errorf("updateStrategy %+v, want RollingUpdate maxUnavailable 1, maxSurge 0", us)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Image != "sluice/agent:0.1.0" {
		t.Errorf("image %q, want sluice/agent:<appVersion>", c.Image)
	}
	args := flagValues(t, c.Args)
	if c.Args[0] != "run" {
		t.Errorf("args %v, want agent run", c.Args)
	}

	// Capabilities: exactly the documented set, nothing privileged.
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no securityContext.capabilities")
	}
	var added []string
	for _, cp := range sc.Capabilities.Add {
		added = append(added, "CAP_"+string(cp))
	}
	slices.Sort(added)
	if !slices.Equal(added, sluiceloader.Capabilities) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities add %v drop %v, want add %v (loader.Capabilities) and drop ALL", added, sc.Capabilities.Drop, sluiceloader.Capabilities)
	}
	if sc.Privileged == nil || *sc.Privileged || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("privileged %v, readOnlyRootFilesystem %v; want false, true", sc.Privileged, sc.ReadOnlyRootFilesystem)
	}

	// Mounts: where each comes from and where the agent reads it.
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	hostPath := func(mountPath string) string {
		t.Helper()
		m, ok := mounts[mountPath]
		if !ok {
			t.Errorf("nothing mounted on %s", mountPath)
			return ""
		}
		v := volumes[m.Name]
		if v.HostPath == nil {
			t.Errorf("%s: volume %s is not a hostPath", mountPath, m.Name)
			return ""
		}
		return v.HostPath.Path
	}
	if p := hostPath("/sys/fs/bpf"); p != "/sys/fs/bpf" {
		t.Errorf("/sys/fs/bpf comes from the host's %q", p)
	}
	// HostToContainer, not Bidirectional: the API server allows
	// Bidirectional to privileged containers only; the host mounts bpffs.
	if m := mounts["/sys/fs/bpf"]; m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("/sys/fs/bpf propagation %v, want HostToContainer", m.MountPropagation)
	}
	if p := hostPath("/sys/fs/cgroup"); p != "/sys/fs/cgroup" {
		t.Errorf("/sys/fs/cgroup comes from the host's %q", p)
	}
	if p := hostPath("/run/netns"); p != "/run/netns" {
		t.Errorf("/run/netns comes from the host's %q", p)
	}
	state := args["--state-dir"]
	if p := hostPath(state); p != "/var/lib/sluice" {
		t.Errorf("--state-dir %s comes from the host's %q, want /var/lib/sluice (the node keeps its identity)", state, p)
	}
	if api := args["--api"]; hostPath(filepath.Dir(api)) != "/run/sluice" {
		t.Errorf("--api %s is not on the host's /run/sluice", api)
	}

	// The ticket: the file --ticket reads is the Secret's key.
	ticket := strings.TrimPrefix(args["--ticket"], "@")
	tm, ok := mounts[filepath.Dir(ticket)]
	if !ok || volumes[tm.Name].Secret == nil {
		t.Fatalf("--ticket %s: its directory is no Secret volume", args["--ticket"])
	}
	sv := volumes[tm.Name].Secret
	if sv.SecretName != "sluice-ticket" || len(sv.Items) != 1 || sv.Items[0].Path != filepath.Base(ticket) || sv.Items[0].Key != "ticket" {
		t.Errorf("--ticket %s reads Secret %s items %+v, want key ticket at %s", ticket, sv.SecretName, sv.Items, filepath.Base(ticket))
	}
	if sv.Optional != nil && *sv.Optional {
		t.Errorf("the ticket Secret is optional: a node would start without it and fail to enroll")
	}

	// The configuration: the file --config reads is the ConfigMap's key,
	// and the agent accepts it.
	cfg := args["--config"]
	cm, ok := mounts[filepath.Dir(cfg)]
	if !ok || volumes[cm.Name].ConfigMap == nil || volumes[cm.Name].ConfigMap.Name != r.configMap.Name {
		t.Fatalf("--config %s: its directory is not the ConfigMap %s", cfg, r.configMap.Name)
	}
	data, ok := r.configMap.Data[filepath.Base(cfg)]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", r.configMap.Name, filepath.Base(cfg))
	}
	f, err := config.Parse([]byte(data))
	if err != nil {
		t.Errorf("the ConfigMap's agent.yaml: %v\n%s", err, data)
	} else if f.Datapath != "on" {
		t.Errorf("the ConfigMap's datapath is %q, want on", f.Datapath)
	}
	if ds.Spec.Template.Annotations["checksum/config"] == "" {
		t.Errorf("no checksum/config annotation: a changed ConfigMap would not roll the agents")
	}

	// Probes and metrics: on the port --metrics listens on.
	_, port, err := net.SplitHostPort(args["--metrics"])
	if err != nil {
		t.Fatalf("--metrics %q: %v", args["--metrics"], err)
	}
	checkProbes(t, c, port)
	ann := ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != port || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("prometheus annotations %v, want scrape on port %s at /metrics", ann, port)
	}
}

// checkProbes: readiness on /readyz and liveness on /healthz, both on the
// named port that is port.
func checkProbes(t *testing.T, c corev1.Container, port string) {
	t.Helper()
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, p := range []struct {
		probe *corev1.Probe
		path  string
	}{{c.ReadinessProbe, "/readyz"}, {c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: no httpGet probe", p.path)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || strconv.Itoa(int(ports[g.Port.String()])) != port {
			t.Errorf("probe %s on port %s (%d), want %s on %s", g.Path, g.Port.String(), ports[g.Port.String()], p.path, port)
		}
	}
}

// flagValues maps each --flag in args to the value after it ("" for a
// flag followed by another).
func flagValues(t *testing.T, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "--") {
			continue
		}
		if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
			out[args[i]] = "" // a boolean flag
			continue
		}
		out[args[i]] = args[i+1]
		i++
	}
	return out
}

// TestHubStatefulSet: the hub keeps its project on a volume claim, made
// once by the init container for the address agents dial, listens on the
// port its Service exposes (and only that one: the admin socket stays a
// unix socket in the project), probes on its --metrics port, and runs as
// a user with no capability.
func TestHubStatefulSet(t *testing.T) {
	r := render(t, nil)
	ss := r.stateful
	spec := ss.Spec.Template.Spec
	if len(ss.Spec.VolumeClaimTemplates) != 1 || len(spec.Containers) != 1 || len(spec.InitContainers) != 1 {
		t.Fatalf("%d claims, %d containers, %d init containers", len(ss.Spec.VolumeClaimTemplates), len(spec.Containers), len(spec.InitContainers))
	}
	claim := ss.Spec.VolumeClaimTemplates[0].Name
	c, ic := spec.Containers[0], spec.InitContainers[0]
	args, iargs := flagValues(t, c.Args), flagValues(t, ic.Args)
	project := args["--project"]
	if iargs["--dir"] != project || !slices.Contains(ic.Args, "--exist-ok") || ic.Command[0] != "/usr/bin/agentctl" {
		t.Errorf("init container %v %v, want agentctl project init --exist-ok --dir %s", ic.Command, ic.Args, project)
	}
	if iargs["--hub-address"] != "sluice-hub.sluice.svc:4443" {
		t.Errorf("project hub address %q, want the Service's name", iargs["--hub-address"])
	}
	for _, cc := range []corev1.Container{c, ic} {
		onClaim := false
		for _, m := range cc.VolumeMounts {
			if m.Name == claim && strings.HasPrefix(project, m.MountPath+"/") {
				onClaim = true
			}
		}
		if !onClaim {
			t.Errorf("%s: the project %s is not on the volume claim %s", cc.Name, project, claim)
		}
		sc := cc.SecurityContext
		if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: securityContext %+v, want every capability dropped, no escalation", cc.Name, sc)
		}
	}
	if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("the hub's pod may run as root")
	}
	if _, ok := args["--admin"]; ok {
		t.Errorf("the hub's admin socket is moved: %v", c.Args)
	}
	_, listen, err := net.SplitHostPort(args["--listen"])
	if err != nil {
		t.Fatal(err)
	}
	_, metrics, err := net.SplitHostPort(args["--metrics"])
	if err != nil {
		t.Fatal(err)
	}
	checkProbes(t, c, metrics)
	svc := r.services[0]
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != "hub" || strconv.Itoa(int(svc.Spec.Ports[0].Port)) != listen {
		t.Errorf("Service ports %+v, want only the hub's port %s", svc.Spec.Ports, listen)
	}
	for _, p := range c.Ports {
		if p.Name == "hub" && strconv.Itoa(int(p.ContainerPort)) != listen {
			t.Errorf("container port hub is %d, --listen %s", p.ContainerPort, args["--listen"])
		}
	}
	for k, v := range svc.Spec.Selector {
		if ss.Spec.Template.Labels[k] != v {
			t.Errorf("the Service selects %s=%s, which the hub's pods lack", k, v)
		}
	}
	if ss.Spec.ServiceName != svc.Name {
		t.Errorf("serviceName %q, the Service is %q", ss.Spec.ServiceName, svc.Name)
	}
	if !strings.Contains(r.notes, "agentctl ticket create") || !strings.Contains(r.notes, "create secret generic sluice-ticket") {
		t.Errorf("NOTES.txt does not say how to make the ticket Secret:\n%s", r.notes)
	}
}

// TestChartValues: values a user sets reach the objects (image, ports,
// ticket Secret, configuration), and the config "on" left unquoted,
// which YAML makes a boolean, is caught by the agent's own check.
func TestChartValues(t *testing.T) {
	r := render(t, map[string]any{
		"image": map[string]any{"repository": "registry.example.com/sluice", "tag": "1.2.3"},
		"agent": map[string]any{
			"metricsPort":  9999,
			"ticketSecret": map[string]any{"name": "nodes", "key": "t"},
			"config":       map[string]any{"datapath": true},
		},
		"hub": map[string]any{"address": "hub.example.com:443"},
	})
	c := r.daemonSet.Spec.Template.Spec.Containers[0]
	args := flagValues(t, c.Args)
	if c.Image != "registry.example.com/sluice:1.2.3" || args["--metrics"] != ":9999" || args["--ticket"] != "@/etc/sluice/ticket/t" {
		t.Errorf("image %s, args %v", c.Image, c.Args)
	}
	checkProbes(t, c, "9999")
	if ia := flagValues(t, r.stateful.Spec.Template.Spec.InitContainers[0].Args); ia["--hub-address"] != "hub.example.com:443" {
		t.Errorf("hub.address not used: %v", ia)
	}
	if _, err := config.Parse([]byte(r.configMap.Data["agent.yaml"])); err == nil {
		t.Errorf("datapath: true was accepted by the agent's configuration check")
	}
	if !bytes.Contains([]byte(r.manifest), []byte("secretName: nodes")) {
		t.Errorf("ticketSecret.name not used")
	}
}
