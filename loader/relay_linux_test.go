package loader_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/testenv"
)

// Callers that only know the library's sentinel still see what is missing.
func TestRelayNotSupportedWrapsEbpf(t *testing.T) {
	if !errors.Is(loader.ErrRelayNotSupported, ebpf.ErrNotSupported) {
		t.Error("ErrRelayNotSupported does not wrap ebpf.ErrNotSupported")
	}
}

// This machine runs the sockmap relay: it loads, attaches and closes.
// Package maps tests it with sockets.
func TestOpenRelay(t *testing.T) {
	testenv.RequireRoot(t)
	r, err := loader.OpenRelay(loader.RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := r.Maps()
	if m.RelayPeers.Type() != ebpf.SockHash || m.RelayFlows.Type() != ebpf.Hash || m.RelayHubs.Type() != ebpf.Hash || m.RelayOverflows.Type() != ebpf.RingBuf {
		t.Errorf("relay maps of types %v, %v, %v, %v", m.RelayPeers.Type(), m.RelayFlows.Type(), m.RelayHubs.Type(), m.RelayOverflows.Type())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}
