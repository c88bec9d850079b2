package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/wire"
)

// A pod as a workload:
//
//	name        k8s.<namespace>.<pod> (a namespace is a DNS label: no dot,
//	            so the name is unambiguous); longer than a workload name
//	            may be (63): its first 54 characters, "-" and 8 hex digits
//	            of the SHA-256 of <namespace>/<pod>
//	address     the pod's IPv4 address (status.podIPs)
//	attributes  k8s:<label key>=<value> for every label, and
//	            k8s:namespace, k8s:serviceaccount, k8s:pod
//
// Only pods of the node, running, with an IPv4 address and their own
// network namespace (not hostNetwork, whose address is the node's) are
// workloads.
//
// A label is not an attribute when "k8s:"+key is not a valid attribute name
// (wire.CheckAttribute: at most 128 characters, which a label key with a
// long prefix exceeds) or when its key is one of the reserved names
// (namespace, serviceaccount, pod): a label cannot forge the pod's
// namespace or service account. Such labels are left out, never
// rewritten, so that no two labels map to one attribute; Skipped says
// which.

// Prefix starts the name of every attribute a pod gives its workload.
const Prefix = "k8s:"

// Attributes the pod's metadata gives, which no label may set.
const (
	AttrNamespace      = Prefix + "namespace"
	AttrServiceAccount = Prefix + "serviceaccount"
	AttrPod            = Prefix + "pod"
)

// maxName is the longest workload name (portal.CheckName).
const maxName = 63

// Mapped is a pod as a workload.
type Mapped struct {
	Workload daemon.Workload
	// Skipped lists the label keys that are not attributes, and why.
	Skipped []string
}

// Why a pod is no workload (Map's second result).
const (
	notOnNode   = "scheduled on another node"
	hostNetwork = "uses the host's network"
	notRunning  = "not running"
	noAddress   = "has no IPv4 address"
)

// Map turns a pod of node into a workload, or says why it is none.
func Map(p *corev1.Pod, node string) (Mapped, string) {
	switch {
	case p.Spec.NodeName != node:
		return Mapped{}, notOnNode
	case p.Spec.HostNetwork:
		return Mapped{}, hostNetwork
	case p.Status.Phase != corev1.PodRunning:
		return Mapped{}, notRunning
	}
	addr, ok := podIPv4(p)
	if !ok {
		return Mapped{}, noAddress
	}
	m := Mapped{Workload: daemon.Workload{Name: WorkloadName(p.Namespace, p.Name), Address: addr.String(), Source: daemon.SourceKubernetes}}
	attrs := map[string]string{AttrNamespace: p.Namespace, AttrPod: p.Name}
	if sa := p.Spec.ServiceAccountName; sa != "" {
		attrs[AttrServiceAccount] = sa
	}
	keys := make([]string, 0, len(p.Labels))
	for k := range p.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		name, v := Prefix+k, p.Labels[k]
		switch name {
		case AttrNamespace, AttrServiceAccount, AttrPod:
			m.Skipped = append(m.Skipped, k+": reserved for the pod's own "+k)
			continue
		}
		if err := wire.CheckAttribute(name, v); err != nil {
			m.Skipped = append(m.Skipped, k+": "+err.Error())
			continue
		}
		attrs[name] = v
	}
	m.Workload.Attributes = attrs
	return m, ""
}

// podIPv4 returns the pod's first IPv4 address.
func podIPv4(p *corev1.Pod) (netip.Addr, bool) {
	ips := []string{p.Status.PodIP}
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err == nil && a.Is4() && !a.IsUnspecified() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// WorkloadName is the workload name of pod name in namespace ns.
func WorkloadName(ns, name string) string {
	n := "k8s." + ns + "." + name
	if len(n) <= maxName {
		return n
	}
	sum := sha256.Sum256([]byte(ns + "/" + name))
	return n[:maxName-9] + "-" + hex.EncodeToString(sum[:4])
}
