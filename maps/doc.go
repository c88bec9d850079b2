// Package maps is the one typed Go view of the data path's BPF maps: keys
// and values as Go types (netip addresses, portal numbers), checked before
// any syscall, written in batches. The C layouts come from bpf2go -type in
// package loader; nothing here copies them by hand.
package maps

import "errors"

// ErrInvalid means a key or value cannot be represented in the maps (an
// IPv6 address, a portal number out of range, ...).
var ErrInvalid = errors.New("invalid data path map entry")
