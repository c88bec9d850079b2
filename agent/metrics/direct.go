package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/hub"
	"github.com/sluicehq/sluice/agent/portal"
)

// Direct paths (docs/direct-paths.md): the agent's channels by path, its
// direct attempts by outcome and its peers by path; the hub's punches.
var (
	channelsByPath = desc("channels_opened_total",
		"Secure channels the agent's inlets opened, by path: direct (straight to the peer agent) or relayed (through the hub).", "path")
	directAttempts = desc("direct_attempts_total",
		"Direct path attempts of the agent's inlets, by outcome: ok, failed (fell back to the hub) or not_offered (the hub offered none).", "outcome")
	directBreaks = desc("direct_breaks_total",
		"Direct channels whose connection broke (reset or timed out under the channel): their peer went relayed.")
	peersByPath = desc("peers",
		"Peer agents of the agent's inlets, by the path of their channels now: direct or relayed.", "path")
	hubPunches = desc("hub_punches_total",
		"Direct paths the hub coordinated (an owner's port passed on to the inlet).")
	hubDirect = desc("hub_direct_sessions_total",
		"Data sessions whose inlet said they went direct: the hub relayed none of their bytes.")
)

var agentDirectDescs = []*prometheus.Desc{channelsByPath, directAttempts, directBreaks, peersByPath}

func collectDirect(ch chan<- prometheus.Metric, st daemon.Status) {
	c := st.DirectPaths
	counter(ch, channelsByPath, c.ChannelsDirect, portal.PathDirect)
	counter(ch, channelsByPath, c.ChannelsRelayed, portal.PathRelayed)
	counter(ch, directAttempts, c.AttemptsOK, "ok")
	counter(ch, directAttempts, c.AttemptsFailed, "failed")
	counter(ch, directAttempts, c.NotOffered, "not_offered")
	counter(ch, directBreaks, c.Breaks)
	n := map[string]int{portal.PathDirect: 0, portal.PathRelayed: 0}
	for _, p := range st.Peers {
		n[p.Path]++
	}
	for path, v := range n {
		gauge(ch, peersByPath, float64(v), path)
	}
}

var hubDirectDescs = []*prometheus.Desc{hubPunches, hubDirect}

func collectHubDirect(ch chan<- prometheus.Metric, st hub.Stats) {
	counter(ch, hubPunches, st.Punches)
	counter(ch, hubDirect, st.Direct)
}
