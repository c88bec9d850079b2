package server

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/flowlog"
)

// observedBackend is a Backend with a flow log.
type observedBackend struct {
	fakeBackend
	log *flowlog.Log
}

func (o *observedBackend) Flows() *flowlog.Log { return o.log }

var errEnough = errors.New("enough")

// TestObserveStreams checks GET /v1/observe through the client: the past
// events that pass the filters, then the new ones, as they are recorded.
func TestObserveStreams(t *testing.T) {
	b := &observedBackend{log: flowlog.New(16)}
	b.log.Record(flowlog.Event{Type: flowlog.TypeOpen, Portal: "pg", Verdict: flowlog.Allowed, Workload: "app"})
	b.log.Record(flowlog.Event{Type: flowlog.TypeRefused, Portal: "pg", Verdict: flowlog.Refused, By: flowlog.ByKernel, Reason: "workload not allowed"})
	b.log.Record(flowlog.Event{Type: flowlog.TypeRefused, Portal: "web", Verdict: flowlog.Refused})
	c := serve(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []apitype.FlowEvent
	err := c.Observe(ctx, apitype.ObserveQuery{Portal: "pg", Verdict: "refused", Last: 10, Follow: true}, func(e apitype.FlowEvent) error {
		got = append(got, e)
		if len(got) == 1 {
			// Recorded while the stream is open: it follows.
			b.log.Record(flowlog.Event{Type: flowlog.TypeOpen, Portal: "pg", Verdict: flowlog.Allowed})
			b.log.Record(flowlog.Event{Type: flowlog.TypeRefused, Portal: "pg", Verdict: flowlog.Refused, Client: "new"})
		}
		if len(got) == 2 {
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		t.Fatalf("Observe: %v (events %+v)", err, got)
	}
	if got[0].Reason != "workload not allowed" || got[0].By != "kernel" || got[1].Client != "new" {
		t.Errorf("events %+v, want the kernel's refusal then the new one", got)
	}
	// Without follow, the stream ends after the past events.
	got = nil
	err = c.Observe(ctx, apitype.ObserveQuery{Last: 2}, func(e apitype.FlowEvent) error { got = append(got, e); return nil })
	if err != nil || len(got) != 2 || got[1].Client != "new" {
		t.Errorf("last 2 without follow: %+v, %v", got, err)
	}
}

func TestObserveBadQuery(t *testing.T) {
	c := serve(t, &observedBackend{log: flowlog.New(0)})
	for _, q := range []apitype.ObserveQuery{{Verdict: "maybe"}, {Last: -1}} {
		err := c.Observe(context.Background(), q, func(apitype.FlowEvent) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "want") {
			t.Errorf("%+v: %v, want a clear error", q, err)
		}
	}
}

// TestObserveSlowClientLoses checks that a client that does not read never
// holds up recording: the events past its queue are dropped, and it is
// told how many once it reads again.
func TestObserveSlowClientLoses(t *testing.T) {
	b := &observedBackend{log: flowlog.New(0)}
	sock := serveSocket(t, b)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A raw request whose answer nobody reads for now.
	if _, err := conn.Write([]byte("GET /v1/observe?follow=true HTTP/1.1\r\nHost: agent\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// Once a marker comes through, the handler has subscribed.
	buf := make([]byte, 1<<20)
	var seen strings.Builder
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(seen.String(), "marker"); {
		if time.Now().After(deadline) {
			t.Fatal("the stream never started")
		}
		b.log.Record(flowlog.Event{Type: flowlog.TypeOpen, Portal: "marker"})
		conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := conn.Read(buf); err == nil {
			seen.Write(buf[:n])
		}
	}
	big := strings.Repeat("x", 4096) // enough to fill the socket's buffers
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 * flowlog.DefaultQueue {
			b.log.Record(flowlog.Event{Type: flowlog.TypeOpen, Reason: big})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("recording blocked on an observer that does not read")
	}
	// Now read: somewhere in the stream a "lost" event counts the drops.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !strings.Contains(seen.String(), `"type":"lost"`) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no lost event in the stream: %v", err)
		}
		seen.Write(buf[:n])
	}
}
