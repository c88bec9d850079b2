package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// latencyBuckets span a loopback handshake (a millisecond) to one across
// continents through a loaded hub (seconds), in seconds.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Timings records the portals' connection setup and channel handshake
// times as histograms: it is the portal.Timings of an agent with metrics.
// Its methods are called once per connection or new channel.
type Timings struct {
	handshake, setup *prometheus.HistogramVec
}

// NewTimings returns Timings whose histograms are registered with reg.
func NewTimings(reg prometheus.Registerer) *Timings {
	t := &Timings{
		handshake: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "inlet_handshake_duration_seconds",
			Help:    "Time a new channel of the inlet took from asking the hub for a data session (or dialing the outlet's agent) to the end of its TLS handshake.",
			Buckets: latencyBuckets,
		}, []string{"portal"}),
		setup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "inlet_connection_setup_duration_seconds",
			Help:    "Time from accepting a connection of the inlet to a channel (new or warm) whose outlet was asked to open its target.",
			Buckets: latencyBuckets,
		}, []string{"portal"}),
	}
	reg.MustRegister(t.handshake, t.setup)
	return t
}

// Handshake records a new channel's handshake time.
func (t *Timings) Handshake(inlet string, d time.Duration) {
	t.handshake.WithLabelValues(inlet).Observe(d.Seconds())
}

// Setup records a connection's setup time.
func (t *Timings) Setup(inlet string, d time.Duration) {
	t.setup.WithLabelValues(inlet).Observe(d.Seconds())
}
