package loader

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
)

// Relay is the hub's kernel relay (bpf/relay.c): relay_verdict, attached
// as stream verdict to the relay_peers sockhash, the program's and the
// hub's per-socket accounts (relay_flows, relay_hubs) and the program's
// overflow reports (relay_overflows). Nothing is pinned: it lives and dies
// with the hub process.
type Relay struct {
	objs RelayObjects
}

// RelayOptions configure OpenRelay. The zero value uses the defaults.
type RelayOptions struct {
	// BacklogMax is how many bytes may wait in the kernel for a peer socket
	// before the program reports it (backlog_max in bpf/relay.c): 64 MiB.
	BacklogMax uint64
}

// OpenRelay loads the relay program and maps and attaches the program to
// the sockhash. A kernel without what it needs gives an error wrapping
// ErrRelayNotSupported (and so ebpf.ErrNotSupported) that names it.
func OpenRelay(opts RelayOptions) (_ *Relay, err error) {
	if err := haveRelay(); err != nil {
		return nil, fmt.Errorf("open sockmap relay: %w: %w", err, ErrRelayNotSupported)
	}
	spec, err := LoadRelay()
	if err != nil {
		return nil, fmt.Errorf("open sockmap relay: %w", err)
	}
	if opts.BacklogMax != 0 {
		if err := spec.Variables[RelayVarBacklogMax].Set(opts.BacklogMax); err != nil {
			return nil, fmt.Errorf("set %s: %w", RelayVarBacklogMax, err)
		}
	}
	r := &Relay{}
	if err := spec.LoadAndAssign(&r.objs, nil); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("load sockmap relay: %w: %w", err, ErrRelayNotSupported)
		}
		return nil, fmt.Errorf("load sockmap relay: %w", err)
	}
	defer closeOnError(&err, &r.objs)
	if err := link.RawAttachProgram(r.attachment()); err != nil {
		return nil, fmt.Errorf("attach sk_skb program to relay_peers: %w", err)
	}
	return r, nil
}

func (r *Relay) attachment() link.RawAttachProgramOptions {
	return link.RawAttachProgramOptions{
		Target: r.objs.RelayPeers.FD(), Program: r.objs.RelayVerdict, Attach: ebpf.AttachSkSKBStreamVerdict,
	}
}

// Maps returns the relay's maps, for package maps.
func (r *Relay) Maps() *RelayMaps { return &r.objs.RelayMaps }

// Close detaches the program and releases the maps. Sockets still in the
// sockhash leave it: from then on their bytes reach their owner.
func (r *Relay) Close() error {
	return errors.Join(link.RawDetachProgram(link.RawDetachProgramOptions(r.attachment())), r.objs.Close())
}

// relayFeature names what the sockmap relay needs; it is optional.
const relayFeature = "sockmap relay (sk_skb stream verdict, sockhash, bpf_sk_redirect_hash, bpf_get_socket_cookie, bpf_skc_to_tcp_sock, ringbuf, BTF)"

func haveRelay() error {
	_, btf := os.Stat("/sys/kernel/btf/vmlinux")
	errs := []error{features.HaveProgramType(ebpf.SkSKB), features.HaveMapType(ebpf.SockHash), features.HaveMapType(ebpf.RingBuf), btf}
	for _, fn := range []asm.BuiltinFunc{asm.FnSkRedirectHash, asm.FnGetSocketCookie, asm.FnSkcToTcpSock, asm.FnSkRelease, asm.FnRingbufOutput} {
		errs = append(errs, features.HaveProgramHelper(ebpf.SkSKB, fn))
	}
	return errors.Join(errs...)
}
