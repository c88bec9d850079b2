package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/portal"
)

// portalCounters are a portal's counters as the daemon reports them.
type portalCounters = portal.CounterValues

// Agent is what the agent's collector reads at each scrape
// (*daemon.Agent).
type Agent interface {
	Status() daemon.Status
	Datapath() daemon.DatapathStatus
}

// Portal kinds, the kind label.
const (
	KindInlet  = "inlet"
	KindOutlet = "outlet"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

var (
	portalUp = desc("portal_up",
		"Whether the portal runs (1) or is configured but failed to start (0).", "portal", "kind")
	connAccepted = desc("portal_connections_accepted_total",
		"Connections the portal accepted (an inlet from the app, an outlet from an inlet's channel).", "portal", "kind")
	connRefused = desc("portal_connections_refused_total",
		"Connections the portal refused, by reason: policy (the peer's attributes, on either side) or local (the inlet's --allow-local).", "portal", "kind", "reason")
	connFailed = desc("portal_connections_failed_total",
		"Connections that failed for another reason than a refusal (hub or outlet unreachable, connection limit, target down).", "portal", "kind")
	connActive = desc("portal_connections_active",
		"Connections the portal carries now.", "portal", "kind")
	portalBytes = desc("portal_bytes_total",
		"Plaintext bytes the portal carried, by direction: to_service or from_service.", "portal", "kind", "direction")
	channelsOpened = desc("inlet_channels_opened_total",
		"Secure channels the inlet opened (each one a TLS handshake with the outlet's agent).", "portal")
	warmReused = desc("inlet_warm_reuses_total",
		"Connections of the inlet that a warm channel carried, without a new handshake.", "portal")
	warmChannels = desc("inlet_warm_channels",
		"Warm channels of the inlet waiting for a connection now.", "portal")

	kernSteered = desc("datapath_steered_total",
		"Connections the kernel steered into the agent for the transparent portal.", "portal")
	kernRefused = desc("datapath_refused_total",
		"Connections to the portal's service the kernel refused with a reset (policy, spoofed source or no listener).", "portal")
	kernSpoofed = desc("datapath_spoofed_total",
		"Of the kernel's refusals, packets whose source address is bound to another interface.", "portal")
	kernNoListener = desc("datapath_no_listener_total",
		"Of the kernel's refusals, connections refused because no agent listened.", "portal")
	kernPackets = desc("datapath_packets_total",
		"Packets from allowed workloads to the portal's service, as the kernel counted them.", "portal")
	kernBytes = desc("datapath_bytes_total",
		"Bytes of those packets.", "portal")
	kernEnabled = desc("datapath_enabled",
		"Whether the BPF data path runs in this agent (1) or not (0).")

	credExpiry = desc("credential_expiry_timestamp_seconds",
		"When the agent's current credential expires, in seconds since the Unix epoch.")
	hubConnected = desc("hub_connected",
		"Whether the agent's control connection to the hub is up (1) or not (0).")
	memberStale = desc("member_state_stale",
		"Whether the agent's view of the project's member state is stale (1): connections that outlive their credential are then reset.")
	memberGeneration = desc("member_state_generation",
		"The project's member-state generation up to which the agent has heard every word of the authority.")
)

// AgentCollector reads an agent's counters at each scrape.
type AgentCollector struct{ a Agent }

// NewAgentCollector returns the collector of a's metrics.
func NewAgentCollector(a Agent) *AgentCollector { return &AgentCollector{a: a} }

// Describe sends every metric's description.
func (c *AgentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{portalUp, connAccepted, connRefused, connFailed, connActive, portalBytes,
		channelsOpened, warmReused, warmChannels, kernSteered, kernRefused, kernSpoofed, kernNoListener, kernPackets,
		kernBytes, kernEnabled, credExpiry, hubConnected, memberStale, memberGeneration} {
		ch <- d
	}
	for _, d := range agentDirectDescs {
		ch <- d
	}
}

// Collect reads the agent's state and sends its metrics.
func (c *AgentCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.Status()
	for _, in := range st.Inlets {
		collectPortal(ch, in.Name, KindInlet, in.State, in.Counters)
		if in.State != daemon.StateRunning {
			continue
		}
		counter(ch, channelsOpened, in.Channels, in.Name)
		counter(ch, warmReused, in.WarmReused, in.Name)
		gauge(ch, warmChannels, float64(in.Warm), in.Name)
	}
	for _, o := range st.Outlets {
		collectPortal(ch, o.Name, KindOutlet, o.State, o.Counters)
	}
	if !st.Credential.Expires.IsZero() {
		gauge(ch, credExpiry, float64(st.Credential.Expires.UnixMilli())/1e3)
	}
	gauge(ch, hubConnected, boolValue(st.Hub.Connected))
	gauge(ch, memberStale, boolValue(st.Hub.Stale))
	gauge(ch, memberGeneration, float64(st.Hub.MemberGeneration))
	collectDirect(ch, st)
	collectKernel(ch, c.a.Datapath())
}

func collectPortal(ch chan<- prometheus.Metric, name, kind, state string, v portalCounters) {
	gauge(ch, portalUp, boolValue(state == daemon.StateRunning), name, kind)
	if state != daemon.StateRunning {
		return
	}
	counter(ch, connAccepted, v.Accepted, name, kind)
	counter(ch, connRefused, v.Refused-v.RefusedLocal, name, kind, "policy")
	if kind == KindInlet {
		counter(ch, connRefused, v.RefusedLocal, name, kind, "local")
	}
	counter(ch, connFailed, v.Failed, name, kind)
	gauge(ch, connActive, float64(v.Active), name, kind)
	counter(ch, portalBytes, v.BytesIn, name, kind, "to_service")
	counter(ch, portalBytes, v.BytesOut, name, kind, "from_service")
}

// collectKernel sends the kernel's per-portal counters, read from the BPF
// maps through the daemon's data path status (only loader and maps touch
// BPF objects).
func collectKernel(ch chan<- prometheus.Metric, dp daemon.DatapathStatus) {
	gauge(ch, kernEnabled, boolValue(dp.Enabled))
	if !dp.Enabled {
		return
	}
	if dp.Error != "" {
		ch <- prometheus.NewInvalidMetric(kernSteered, errString(dp.Error))
		return
	}
	for _, p := range dp.Portals {
		k := p.Counters
		counter(ch, kernSteered, int64(k.Steered), p.Inlet)
		counter(ch, kernRefused, int64(k.Refused), p.Inlet)
		counter(ch, kernSpoofed, int64(k.Spoofed), p.Inlet)
		counter(ch, kernNoListener, int64(k.NoListener), p.Inlet)
		counter(ch, kernPackets, int64(k.Packets), p.Inlet)
		counter(ch, kernBytes, int64(k.Bytes), p.Inlet)
	}
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v int64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// errString is an error with a fixed text.
type errString string

func (e errString) Error() string { return "read the data path's counters: " + string(e) }
