package testenv

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// InPrivateMountNS runs fn on an OS thread moved into a new mount namespace
// of its own, as a process under `ip netns exec` or in a container runs: it
// starts with a copy of the caller's mounts, and mounts made in it (fn may
// mount a bpffs) propagate nowhere and go when the thread ends. The thread
// is never reused: it ends with fn. fn runs on another goroutine than the
// caller's, so it must not call t.FailNow; goroutines it starts do not
// inherit the namespace, and only /proc/thread-self shows it.
func InPrivateMountNS(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		// Locked for good: the runtime ends this thread with the goroutine,
		// and the namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			done <- fmt.Errorf("new mount namespace: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
			done <- fmt.Errorf("make the new mount namespace private: %w", err)
			return
		}
		done <- fn()
	}()
	return <-done
}
