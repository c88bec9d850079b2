package loader

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrNoPrivilege means the kernel refused the data path's BPF system
// calls, or its pin directory, to this process: it lacks the privileges
// (run the agent as root), not the kernel its features.
var ErrNoPrivilege = errors.New("the BPF data path needs privileges this process lacks (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN: run the agent as root)")

// privilegeError wraps err with ErrNoPrivilege when the kernel refused
// the call with EPERM (or, where a file was at stake, EACCES); it returns
// err as it is otherwise.
func privilegeError(err error, file bool) error {
	if err == nil || errors.Is(err, ErrNoPrivilege) {
		return err
	}
	if errors.Is(err, syscall.EPERM) || file && errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w: %w", err, ErrNoPrivilege)
	}
	return err
}
