package portal

import (
	"maps"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/sluicehq/sluice/agent/credential"
	"github.com/sluicehq/sluice/agent/flowlog"
	"github.com/sluicehq/sluice/agent/pipe"
)

// The flow log (Options.Flows): one event when a connection opens (the
// outlet connected to its target), one when it ends (bytes, duration, what
// ended it), or one when it is refused, by whom and why. A connection that
// fails before it opened has only its close event, with the error.
//
//	inlet:  accept ──> session (warm: open now; cold: open at the outlet's status)
//	        ──> pipe.Run ──> close | refused (the outlet's policy on a cold channel)
//	outlet: channel ──> authorize ──> dial target ──> open ──> pipe.Run ──> close

// flow is one connection's entry in the flow log.
type flow struct {
	log    *flowlog.Log
	base   flowlog.Event // Portal, Direction, Workload, Client, Target, Peer
	client string        // set by the outlet once it dialed
	start  time.Time
	once   sync.Once // the open event
	open   bool      // the open event was recorded (after once)
}

// inletFlow starts the entry of an inlet's connection from app.
func (m *Manager) inletFlow(in *inlet, app *net.TCPConn, info ConnInfo) *flow {
	return &flow{log: m.opts.Flows, start: time.Now(), base: flowlog.Event{
		Portal: in.spec.Name, Direction: flowlog.Inlet, Workload: m.workloadName(info.Workload),
		Client: info.App.String(), Target: addrPort(app.LocalAddr()).String(),
	}}
}

// outletFlow starts the entry of a connection an inlet's agent asked of o.
func (m *Manager) outletFlow(o *outlet, peer *credential.Credential) *flow {
	f := &flow{log: m.opts.Flows, start: time.Now(), base: flowlog.Event{
		Portal: o.spec.Name, Direction: flowlog.Outlet, Target: o.spec.To,
	}}
	f.peer(peer)
	return f
}

// inletRefused records a connection refused before it was served.
func (m *Manager) inletRefused(in *inlet, app *net.TCPConn, info ConnInfo, by string, err error) {
	m.inletFlow(in, app, info).refused(by, err)
}

// transparentRefused records a connection the transparent listener
// accepted and the local policy refused (it changed since the kernel let
// the SYN through).
func (m *Manager) transparentRefused(c *net.TCPConn, err error) {
	m.mu.Lock()
	in := m.serviceLocked(addrPort(c.LocalAddr()))
	m.mu.Unlock()
	if in != nil {
		m.inletRefused(in, c, ConnInfo{App: addrPort(c.RemoteAddr())}, flowlog.ByLocalPolicy, err)
	}
}

func (m *Manager) workloadName(n uint32) string {
	switch {
	case n == 0:
		return ""
	case m.opts.WorkloadName != nil:
		if name := m.opts.WorkloadName(n); name != "" {
			return name
		}
	}
	return "#" + strconv.FormatUint(uint64(n), 10)
}

// peer names the node at the other end.
func (f *flow) peer(c *credential.Credential) {
	if c == nil {
		return
	}
	f.base.Peer = c.NodeID
	f.base.PeerAttributes = maps.Clone(c.Attributes)
}

func (f *flow) event(typ, verdict string) flowlog.Event {
	e := f.base
	e.Type, e.Verdict = typ, verdict
	if f.client != "" {
		e.Client = f.client
	}
	return e
}

// opened records the open event, once.
func (f *flow) opened() {
	if f.log == nil {
		return
	}
	f.once.Do(func() {
		f.open = true
		f.log.Record(f.event(flowlog.TypeOpen, flowlog.Allowed))
	})
}

// refused records the connection's refusal.
func (f *flow) refused(by string, err error) {
	if f.log == nil {
		return
	}
	e := f.event(flowlog.TypeRefused, flowlog.Refused)
	e.By, e.Reason = by, err.Error()
	f.log.Record(e)
}

// closed records the end of the connection (with res's bytes and error).
func (f *flow) closed(res pipe.Result) {
	if f.log == nil {
		return
	}
	e := f.event(flowlog.TypeClose, flowlog.Allowed)
	e.BytesSent, e.BytesReceived = res.AToB, res.BToA
	e.Duration = time.Since(f.start).Seconds()
	if res.Err != nil {
		e.Error = res.Err.Error()
	}
	f.log.Record(e)
}

// ended records how a connection whose stream ran ended: refused, if the
// outlet's policy refused a new channel's first connection before it
// opened; else closed.
func (f *flow) ended(res pipe.Result) {
	if f.log == nil {
		return
	}
	f.once.Do(func() {}) // no open event from now on
	if !f.open && res.Err != nil && refusedByPolicy(explainRemote(res.Err)) {
		f.refused(flowlog.ByPolicy, explainRemote(res.Err))
		return
	}
	f.closed(res)
}
