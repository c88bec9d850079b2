package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// bpffsDirName is the directory, inside the env's working directory, where
// BPFFS mounts the env's private BPF filesystem.
const bpffsDirName = "bpffs"

// BPFFS returns the mount point of a BPF filesystem private to this env,
// mounting it on first use in the env's directory. Agents started in the
// env pin their programs and maps below it (one subdirectory each).
//
// Processes started with `ip netns exec` (Start, Run) cannot use the host's
// /sys/fs/bpf: ip remounts /sys in the mount namespace it makes, and the new
// sysfs has no bpffs on it. A mount made here, before `ip netns exec`, is
// copied into that namespace, and its superblock is the same one, so the test
// and its agents see the same pins. Close unmounts it (lazily) and removes the
// directory; Reap does the same for dead runs.
func (e *Env) BPFFS() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return "", ErrClosed
	}
	if e.bpffs != "" {
		return e.bpffs, nil
	}
	dir := filepath.Join(e.dir, bpffsDirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("mount bpffs: %w", err)
	}
	// Record it before mounting, so that a reaper finds it if we die now.
	if err := e.rewriteOwner(ownerRecord{Dir: e.recDir, BPFFS: dir}); err != nil {
		return "", fmt.Errorf("mount bpffs: %w", err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	e.bpffs = dir
	return dir, nil
}

// unmountBPFFS detaches the bpffs mounted on dir, if one is, and removes dir.
// Detaching drops the pins with the superblock once no process (or mount
// namespace copy) holds it any more.
func unmountBPFFS(dir string) error {
	// One thread reads the mounts and unmounts: the namespace read is the
	// one acted on.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	mounts, err := bpfMounts()
	if err != nil {
		return err
	}
	var errs []error
	// Innermost first: a mount stacked on dir comes later in mountinfo.
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i] != dir {
			continue
		}
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount bpffs %s: %w", dir, err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove bpffs dir: %w", err))
	}
	return errors.Join(errs...)
}

// bpfMounts lists the mount points of BPF filesystems in the calling
// thread's mount namespace, in mountinfo order. Not /proc/self's: that is
// the thread group leader's, and a test that ran InPrivateMountNS on the
// main thread leaves the leader in that private namespace for good (the
// runtime wedges the main thread rather than end it), so the leader's view
// would miss the bpffs this thread mounted and Close would leave it behind.
func bpfMounts() ([]string, error) {
	f, err := os.Open(threadSelf() + "/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("list bpf mounts: %w", err)
	}
	defer f.Close()
	return parseMounts(f, "bpf")
}

// parseMounts returns the mount points of the lines of a mountinfo file
// (proc(5)) whose filesystem type is fstype.
func parseMounts(r io.Reader, fstype string) ([]string, error) {
	var points []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		typ, _, _ := strings.Cut(post, " ")
		fields := strings.Fields(pre)
		if typ != fstype || len(fields) < 5 {
			continue
		}
		points = append(points, unescapeMountinfo(fields[4]))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return points, nil
}

// bpffsToReap tells which of mounts (BPF mount points) belong to a dead run
// whose owner record is rec: the recorded one, and any below its temporary
// directory (only a directory testenv made, named sluice-testenv-*).
func bpffsToReap(rec *ownerRecord, mounts []string) []string {
	tmp := rec.Dir != "" && strings.HasPrefix(filepath.Base(rec.Dir), "sluice-testenv-")
	var out []string
	for _, m := range mounts {
		switch {
		case rec.BPFFS != "" && m == filepath.Clean(rec.BPFFS):
		case tmp && strings.HasPrefix(m, filepath.Clean(rec.Dir)+"/"):
		default:
			continue
		}
		if !containsString(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// threadSelf is the calling thread's directory in /proc (/proc/self on
// kernels before 3.17, which have no /proc/thread-self).
func threadSelf() string {
	if _, err := os.Stat("/proc/thread-self"); err == nil {
		return "/proc/thread-self"
	}
	return "/proc/self"
}
