package maps

import "net/netip"

// Refusal is a connection the kernel refused, as the TC program reported
// it in the refusals ring buffer: one per refused SYN.
type Refusal struct {
	Client   netip.AddrPort // the sender, as the container sent it
	Service  netip.AddrPort // the service address it asked for
	Portal   uint32         // the service's portal number
	Workload uint32         // the sender's workload number; 0: unknown, or not looked up (spoofed, on the bridge)
	Ifindex  uint32         // the interface the SYN came in on; 0: on the bridge
	Reason   RefusalReason
}

// RefusalReason is why the kernel refused a connection.
type RefusalReason uint32

// The reasons, as bpf/include/sluice.h numbers them (enum refusal_reason;
// TestRefusalReasons checks them against the object's).
const (
	RefusedSpoofed    RefusalReason = 1 // the source address is bound to another interface
	RefusedDenied     RefusalReason = 2 // the service is denied to everyone (its peer lost permission, or it is being removed)
	RefusedNotAllowed RefusalReason = 3 // no local policy lets this workload use the portal
	RefusedNotSteered RefusalReason = 4 // on the bridge, no steer program saw it
	RefusedNoListener RefusalReason = 5 // no agent listening (fail closed)
)

// String is the reason as the flow log shows it.
func (r RefusalReason) String() string {
	switch r {
	case RefusedSpoofed:
		return "spoofed source"
	case RefusedDenied:
		return "service denied"
	case RefusedNotAllowed:
		return "workload not allowed"
	case RefusedNotSteered:
		return "not steered"
	case RefusedNoListener:
		return "no listener"
	}
	return "unknown reason"
}
