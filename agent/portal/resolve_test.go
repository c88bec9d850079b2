package portal

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

// TestCheckTargetResolves: a --to whose name does not resolve is refused
// at create time, naming --no-resolve; with NoResolve, or with an address
// or a name that resolves, it is accepted.
func TestCheckTargetResolves(t *testing.T) {
	ctx := context.Background()
	// .invalid never resolves (RFC 6761).
	err := CheckTargetResolves(ctx, net.DefaultResolver, OutletSpec{To: "postgres.sluice-test.invalid:5432"})
	if !errors.Is(err, ErrUnresolved) || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--no-resolve") {
		t.Errorf("an unresolvable --to: %v, want ErrUnresolved naming --no-resolve", err)
	}
	for _, spec := range []OutletSpec{
		{To: "postgres.sluice-test.invalid:5432", NoResolve: true},
		{To: "127.0.0.1:5432"},
		{To: "[::1]:5432"},
		{To: "localhost:5432"},
	} {
		if err := CheckTargetResolves(ctx, net.DefaultResolver, spec); err != nil {
			t.Errorf("%+v: %v", spec, err)
		}
	}
	if err := CheckTargetResolves(ctx, net.DefaultResolver, OutletSpec{To: "nohost"}); !errors.Is(err, ErrInvalid) || errors.Is(err, ErrUnresolved) {
		t.Errorf("--to without a port: %v, want ErrInvalid (want HOST:PORT)", err)
	}
}
