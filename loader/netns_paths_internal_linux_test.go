package loader

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNamespacePathsOtherUser: with only the data path's capabilities (no
// CAP_DAC_READ_SEARCH or CAP_DAC_OVERRIDE, as in a container given exactly
// NET_ADMIN, SYS_ADMIN and SYS_PTRACE), the network namespace of a process
// that runs as another user is listed: /proc/PID/ns/net opens with
// CAP_SYS_PTRACE, though /proc/PID/ns cannot be listed. A glob of
// /proc/*/ns/net missed it, and address workloads of containers whose
// processes run as nobody could not be bound.
func TestNamespacePathsOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("privileged test skipped in CI: it needs root (a process of another user, capabilities)")
		}
		t.Skip("privileged test: needs root (a process of another user, capabilities); run with sudo")
	}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	want := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"

	// Capabilities are per thread: drop the two DAC ones from this
	// thread's effective set only. The thread is never unlocked, so Go
	// ends it with the goroutine instead of reusing it.
	type result struct {
		paths []string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- result{err: err}
			return
		}
		for _, c := range []uint{unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH} {
			data[c/32].Effective &^= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- result{err: err}
			return
		}
		if _, err := os.ReadDir("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns"); err == nil {
			done <- result{err: os.ErrInvalid} // the setup did not take: the test would prove nothing
			return
		}
		done <- result{paths: namespacePaths()}
	}()
	r := <-done
	if r.err == os.ErrInvalid {
		t.Fatal("without CAP_DAC_READ_SEARCH and CAP_DAC_OVERRIDE this thread still lists another user's /proc/PID/ns: the test proves nothing")
	}
	if r.err != nil {
		t.Fatalf("drop the DAC capabilities: %v", r.err)
	}
	if !slices.Contains(r.paths, want) {
		t.Errorf("namespacePaths without the DAC capabilities lacks %s (a process of uid 65534)", want)
	}
}
