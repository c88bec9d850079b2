package portal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// ErrUnresolved means an outlet's --to names a host that does not resolve
// (it is wrapped with ErrInvalid as well).
var ErrUnresolved = errors.New("the target's host name does not resolve")

// ResolveTimeout bounds the look-up of an outlet's target at create time.
const ResolveTimeout = 3 * time.Second

// CheckTargetResolves looks the host of an outlet's --to up, unless it is
// an IP address or spec.NoResolve is set, so that a typo fails at create
// time rather than at each connection. A restored outlet is never looked
// up: its name may resolve later.
func CheckTargetResolves(ctx context.Context, r *net.Resolver, spec OutletSpec) error {
	host, _, err := net.SplitHostPort(spec.To)
	if err != nil {
		return checkHostPort("--to", spec.To) // says what is wrong with it
	}
	if _, err := netip.ParseAddr(host); err == nil || spec.NoResolve {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ResolveTimeout)
	defer cancel()
	addrs, err := r.LookupHost(ctx, host)
	if err == nil && len(addrs) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		return fmt.Errorf("--to %q (pass --no-resolve if the name will resolve later): %w: %w: %w", spec.To, ErrUnresolved, err, ErrInvalid)
	}
	return nil
}
