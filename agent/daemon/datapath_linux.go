//go:build linux

package daemon

// The transparent path:
//
//	app ──SYN to service──> TC on its veth (services, endpoints, verdicts)
//	    ──allowed──> bpf_sk_assign to the transparent listener (127.0.0.1:N)
//	    ──accept (portal.Manager.AcceptTransparent)──>
//	       accepted: Flows.Take: which workload opened it
//	                 accel.pair (if on): the agent's writes skip TCP from here on
//	       admitTransparent: the plan still allows it? else reset
//	    ──> portal manager: the inlet serving the service
//
// Denied connections are reset in the kernel; the agent never sees them.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/pipe"
	"github.com/sluicehq/sluice/loader"
	"github.com/sluicehq/sluice/maps"
)

// bpfKernel is the loaded data path and the transparent listener.
type bpfKernel struct {
	dp     *loader.Datapath
	maps   *maps.Set
	ln     *net.TCPListener
	log    *zap.Logger
	cancel context.CancelFunc
	// adopted is the pinned services map as this agent found it.
	adopted map[netip.AddrPort]uint32
	accel   *accel         // nil when socket acceleration is off
	accelIs string         // "on", or "off" and why
	ring    *maps.Refusals // nil if it could not be opened
	// routed: routed veths are followed, so the kernel's backstop rules
	// refuse unmarked packets to transparent services (loader.SetBackstop).
	routed bool
	wg     sync.WaitGroup
}

// openKernel probes the kernel, loads the data path, starts the transparent
// listener and follows the bridges and routed veths.
func openKernel(o kernelOptions) (kernel, error) {
	if err := loader.Missing(loader.Probe()); err != nil {
		return nil, err
	}
	dp, err := loader.Open(loader.Options{PinDir: o.PinDir, RequirePersistentPins: o.RequirePersistentPins})
	if err != nil {
		return nil, err
	}
	logPins(o.Log, dp)
	k := &bpfKernel{dp: dp, maps: maps.New(dp.Maps()), log: o.Log, adopted: map[netip.AddrPort]uint32{}, routed: len(o.Routed) > 0}
	have, err := k.maps.Services.List()
	if err != nil {
		return nil, errors.Join(err, dp.Close())
	}
	for _, s := range have {
		k.adopted[s.Addr] = s.Portal
	}
	if err := k.listen(); err != nil {
		return nil, errors.Join(err, dp.Close())
	}
	if k.accel, k.accelIs, err = openAccel(dp, k.ln, o.Accelerate, o.Log); err != nil {
		return nil, errors.Join(err, k.ln.Close(), dp.Close())
	}
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	report := func(ev loader.Event) {
		if ctx.Err() != nil {
			return // the subscription ending on Close is no news
		}
		if ev.Action == "detached" && k.accel != nil {
			k.accel.forget(ev.Ifindex)
		}
		f := []zap.Field{zap.String("device", ev.Device), zap.Int("ifindex", ev.Ifindex), zap.String("role", string(ev.Role))}
		if ev.Err != nil {
			k.log.Warn("data path "+ev.Action, append(f, zap.Error(ev.Err))...)
			return
		}
		k.log.Info("data path "+ev.Action, f...)
	}
	if err := dp.FollowDevices(ctx, loader.Devices{Bridges: o.Bridges, Routed: o.Routed}, report, o.Refresh); err != nil {
		// Devices that failed are reported; the others work.
		k.log.Warn("attaching the data path to some devices failed", zap.Error(err))
	}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		o.Accept(k.ln, k.accepted)
	}()
	k.readRefusals(o.Refused)
	return k, nil
}

// readRefusals hands every connection the kernel refuses to refused, as
// the TC program reports them in its ring buffer, until Close. Without
// the ring the data path still refuses; only the flow log misses them.
func (k *bpfKernel) readRefusals(refused func(maps.Refusal)) {
	if refused == nil {
		return
	}
	ring, err := maps.NewRefusals(k.dp.Maps())
	if err != nil {
		k.log.Warn("the flow log will not show the kernel's refusals", zap.Error(err))
		return
	}
	k.ring = ring
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for {
			r, err := ring.Read()
			if errors.Is(err, maps.ErrClosed) {
				return
			}
			if err != nil {
				k.log.Warn("read the kernel's refusals", zap.Error(err))
				continue
			}
			refused(r)
		}
	}()
}

// logPins says, loudly, when the pins will not outlive the agent: fail
// closed does not hold then (--datapath on refuses to start so).
func logPins(log *zap.Logger, dp *loader.Datapath) {
	switch p := dp.Pins(); p.State {
	case loader.PinsEphemeral:
		log.Error("the data path's pins will not outlive the agent: once it stops, connections to transparent inlets hang instead of being refused "+
			"(fail closed does not hold); give the agent the host's bpffs (docs/datapath.md), or run it with --datapath on to refuse to start like this",
			zap.String("pin_dir", dp.PinDir()), zap.String("why", p.Reason))
	case loader.PinsUnknown:
		log.Warn("cannot tell whether the data path's pins outlive the agent", zap.String("pin_dir", dp.PinDir()), zap.String("why", p.Reason))
	}
}

// listen opens the transparent listener and publishes its address.
func (k *bpfKernel) listen() error {
	ln, err := loader.ListenTransparent()
	if err != nil {
		return err
	}
	k.ln = ln
	// The connections it accepts reset, never FIN, if the agent dies
	// before their stream ended (pipe.Arm).
	if err := pipe.Arm(ln); err != nil {
		k.ln.Close()
		return err
	}
	if err := k.maps.Listener.Set(k.ln.Addr().(*net.TCPAddr).AddrPort()); err != nil {
		k.ln.Close()
		return fmt.Errorf("publish transparent listener: %w", err)
	}
	return nil
}

// accepted returns the workload the steer program recorded for a
// connection the transparent listener accepted (0, the unknown, if none),
// and pairs it for acceleration.
func (k *bpfKernel) accepted(c *net.TCPConn) uint32 {
	app, svc := unmap(c.RemoteAddr()), unmap(c.LocalAddr())
	fl, ok, err := k.maps.Flows.Take(app, svc)
	if err != nil || !ok {
		k.log.Debug("no flow record for a transparent connection; workload unknown",
			zap.Stringer("client", app), zap.Stringer("service", svc), zap.Error(err))
	}
	if k.accel != nil && ok {
		k.accel.pair(c, fl.Ifindex, app, svc)
	}
	return fl.Workload
}

func unmap(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// apply writes the plan: endpoints and verdicts first, services last, so
// that a new service is never reachable before its verdicts exist.
func (k *bpfKernel) apply(p plan) error {
	if err := k.maps.Endpoints.Replace(p.Endpoints); err != nil {
		return err
	}
	if err := k.maps.Bindings.Replace(p.Bindings); err != nil {
		return err
	}
	if err := k.maps.Verdicts.Replace(p.Verdicts); err != nil {
		return err
	}
	svcs := make([]maps.Service, 0, len(p.Services))
	var backstop []netip.AddrPort
	for addr, n := range p.Services {
		svcs = append(svcs, maps.Service{Addr: addr, Portal: n, Deny: p.Denied[n], Explicit: p.Explicit[n]})
		if k.routed && !p.Explicit[n] {
			backstop = append(backstop, addr)
		}
	}
	if err := k.maps.Services.Replace(svcs); err != nil {
		return err
	}
	// Without routed veths, none (and those an earlier run left go).
	return k.dp.SetBackstop(backstop)
}

func (k *bpfKernel) resetCounters(portal uint32) error { return k.maps.Counters.Reset(portal) }

func (k *bpfKernel) takeFlow(src, dst netip.AddrPort) (uint32, bool, error) {
	fl, ok, err := k.maps.Flows.Take(src, dst)
	return fl.Workload, ok, err
}

func (k *bpfKernel) pinned() map[netip.AddrPort]uint32 { return k.adopted }

func (k *bpfKernel) status(st *DatapathStatus) {
	st.PinDir = k.dp.PinDir()
	pins := k.dp.Pins()
	st.Pins = &pins
	st.Listener = k.ln.Addr().String()
	st.Acceleration = k.accelIs
	if k.accel != nil {
		st.Accelerated = k.accel.paired.Load()
	}
	st.Attachments = k.dp.Attachments()
	var errs []error
	sizes, err := k.maps.Sizes()
	errs = append(errs, err)
	st.Maps = sizes
	for i := range st.Portals {
		c, err := k.maps.Counters.Read(st.Portals[i].Portal)
		errs = append(errs, err)
		st.Portals[i].Counters = c
	}
	if err := errors.Join(errs...); err != nil {
		st.Error = err.Error()
	}
}

// Close stops following devices and accepting, and releases the handles.
// The pins stay: while no agent runs, the kernel refuses connections to
// transparent inlets (fail closed).
func (k *bpfKernel) Close() error {
	k.cancel()
	err := k.ln.Close()
	if errors.Is(err, net.ErrClosed) { // stopAccepting closed it
		err = nil
	}
	if k.ring != nil {
		err = errors.Join(err, k.ring.Close())
	}
	k.wg.Wait()
	if k.accel != nil {
		err = errors.Join(err, k.accel.Close())
	}
	return errors.Join(err, k.maps.Listener.Clear(), k.dp.Close())
}

// cgroupVeths resolves a workload's cgroup to the host-side veths of its
// containers.
func cgroupVeths(dir string) ([]int, error) { return loader.CgroupVeths(dir) }

// hostSystem reads the host the agent runs on.
var hostSystem = system{
	Interfaces: func() ([]int, error) {
		ifs, err := net.Interfaces()
		if err != nil {
			return nil, fmt.Errorf("list interfaces: %w", err)
		}
		out := make([]int, 0, len(ifs))
		for _, i := range ifs {
			out = append(out, i.Index)
		}
		return out, nil
	},
	ContainerVeths: loader.ContainerVeths,
	HostAddrs:      loader.HostAddrs,
}
