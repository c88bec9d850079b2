package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/metrics"
	"github.com/sluicehq/sluice/agent/portal"
)

// metricsFlags is --metrics of agent run and agent hub.
type metricsFlags struct{ addr string }

func (m *metricsFlags) register(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&m.addr, "metrics", "",
		"serve Prometheus metrics on `ADDR` (HOST:PORT, e.g. 127.0.0.1:9464) at /metrics, with /healthz (alive) and /readyz ("+what+"; 503 with the reason otherwise) on the same listener (default: none; docs/operations.md lists the metrics)")
}

// metricsServer is the listener of --metrics. The collector and the
// readiness check of the agent or hub it reports on are added once that
// exists (start): until then /readyz says "starting"; once stop is called,
// "stopping". A nil *metricsServer (no --metrics) does nothing.
type metricsServer struct {
	srv      *http.Server
	reg      *prometheus.Registry
	ready    atomic.Pointer[func() error]
	stopping atomic.Bool
}

// serveMetrics listens on m.addr, if set, and serves the Go and process
// metrics there until start adds the rest.
func serveMetrics(m metricsFlags, log *zap.Logger) (*metricsServer, error) {
	if m.addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", m.addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: listen on %s: %w", m.addr, err)
	}
	s := &metricsServer{reg: metrics.NewRegistry()}
	s.srv = &http.Server{Handler: metrics.Handler(s.reg, s.check), ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	log.Info("serving metrics and health", zap.String("metrics", "http://"+ln.Addr().String()+"/metrics"))
	return s, nil
}

// timings returns the portals' Timings, registered with the server's
// registry; nil without --metrics.
func (s *metricsServer) timings() portal.Timings {
	if s == nil {
		return nil
	}
	return metrics.NewTimings(s.reg)
}

// start adds c to the metrics and makes ready the readiness check.
func (s *metricsServer) start(c prometheus.Collector, ready func() error) {
	if s == nil {
		return
	}
	s.reg.MustRegister(c)
	s.ready.Store(&ready)
}

func (s *metricsServer) check() error {
	if s.stopping.Load() {
		return metrics.ErrStopping
	}
	f := s.ready.Load()
	if f == nil {
		return metrics.ErrStarting
	}
	return (*f)()
}

// stop makes /readyz say "stopping"; the listener still serves.
func (s *metricsServer) stop() {
	if s != nil {
		s.stopping.Store(true)
	}
}

// Close closes the listener.
func (s *metricsServer) Close() error {
	if s == nil {
		return nil
	}
	if err := s.srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
