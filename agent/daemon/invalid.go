package daemon

import "errors"

// Sentinel errors of bad input that is not a portal's (portal.ErrInvalid
// is for inlets and outlets): the API answers all three with 400.
var (
	// ErrInvalidWorkload means a workload's definition is not valid (its
	// name, selector or attributes), or its address names no single
	// container.
	ErrInvalidWorkload = errors.New("invalid workload")
	// ErrInvalidRelayName means a relay name breaks the rules of names.
	ErrInvalidRelayName = errors.New("invalid relay name")
)
