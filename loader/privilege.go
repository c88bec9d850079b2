package loader

import (
	"errors"
	"fmt"
	"syscall"
)

// Capabilities are the capabilities the agent needs with the data path on,
// found by experiment (docs/deploy.md has the table: what needs each one
// and what fails without it). CAP_SYS_ADMIN also grants what CAP_BPF and
// CAP_PERFMON grant (the kernel's bpf_capable and perfmon_capable), so
// those add nothing. Keep in sync with deploy/systemd/sluice-agent.service
// and the Helm chart's values: deploy's tests check.
var Capabilities = []string{"CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}

// ErrNoPrivilege means the kernel refused the data path's BPF system
// calls, or its pin directory, to this process: it lacks the privileges
// (run the agent as root), not the kernel its features.
var ErrNoPrivilege = errors.New("the BPF data path needs privileges this process lacks (CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_SYS_PTRACE; CAP_BPF and CAP_PERFMON are not enough without CAP_SYS_ADMIN: run the agent as root, or with the capabilities docs/deploy.md lists)")

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

// capabilityError is privilegeError for a call that one capability
// allows: its error names it.
func capabilityError(err error, capability string) error {
	if err == nil || errors.Is(err, ErrNoPrivilege) {
		return err
	}
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w (%s is missing): %w", err, capability, ErrNoPrivilege)
	}
	return err
}
