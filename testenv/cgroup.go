package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupKillWait bounds how long teardown waits for killed processes.
const cgroupKillWait = 10 * time.Second

// envCgroupName is the cgroup of processes that are not in a container.
// Container cgroups are "ct-<name>", so they never clash with it.
const envCgroupName = "env"

// cgroup2Mount finds where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup
// on a unified system, /sys/fs/cgroup/unified on a hybrid one.
func cgroup2Mount() (string, error) {
	f, err := os.Open(threadSelf() + "/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	return parseCgroup2Mount(f)
}

// parseCgroup2Mount returns the mount point of the first cgroup2 line of a
// mountinfo file (see proc(5): the filesystem type follows the " - ").
func parseCgroup2Mount(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fstype, _, _ := strings.Cut(post, " ")
		fields := strings.Fields(pre)
		if fstype != "cgroup2" || len(fields) < 5 {
			continue
		}
		return unescapeMountinfo(fields[4]), nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	return "", errors.New("find cgroup2 mount: no cgroup2 filesystem is mounted")
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// newCgroup makes the cgroup <run cgroup>/leaf and records it for Close.
func (e *Env) newCgroup(leaf string) (string, error) {
	path := filepath.Join(e.cgRoot, leaf)
	if err := os.Mkdir(path, 0o755); err != nil {
		return "", fmt.Errorf("create cgroup: %w", err)
	}
	err := e.track(func() { e.cgroups = append(e.cgroups, path) }, func() error { return removeCgroup(path) })
	if err != nil {
		return "", err
	}
	return path, nil
}

// envCgroup returns the env-wide cgroup, making it on first use.
func (e *Env) envCgroup() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return "", ErrClosed
	}
	if e.envCg != "" {
		return e.envCg, nil
	}
	path := filepath.Join(e.cgRoot, envCgroupName)
	if err := os.Mkdir(path, 0o755); err != nil {
		return "", fmt.Errorf("create env cgroup: %w", err)
	}
	e.cgroups = append(e.cgroups, path)
	e.envCg = path
	return path, nil
}

// ownsCgroup tells whether path is the run's cgroup or one below it.
func (e *Env) ownsCgroup(path string) bool {
	rel, err := filepath.Rel(e.cgRoot, filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// killCgroup kills every process in the cgroup tree at path and waits until
// the tree is empty. A missing cgroup is not an error.
func killCgroup(path string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	// cgroup.kill (Linux 5.14+) SIGKILLs the whole subtree atomically, even
	// processes forking right now.
	err := os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(cgroupKillWait)
	for {
		populated, perr := cgroupPopulated(path)
		if perr != nil {
			return fmt.Errorf("kill cgroup %s: %w", path, perr)
		}
		if !populated {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: still populated after %v", path, cgroupKillWait)
		}
		if err != nil {
			killEachProcess(path) // no cgroup.kill: signal what we can see
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cgroupPopulated reads the "populated" key of cgroup.events, which counts
// live processes in the whole subtree.
func cgroupPopulated(path string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(path, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("read cgroup.events: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return strings.TrimSpace(v) != "0", nil
		}
	}
	return false, errors.New("read cgroup.events: no populated key")
}

// killEachProcess sends SIGKILL to every pid in the cgroup tree at path.
func killEachProcess(path string) {
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return nil
	})
}

// removeCgroup removes one empty cgroup directory; a missing one is fine.
func removeCgroup(path string) error {
	if err := syscall.Rmdir(path); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("remove cgroup %s: %w", path, err)
	}
	return nil
}

// removeCgroupTree removes the cgroup at path and all below it, children
// first. The processes must be gone already.
func removeCgroupTree(path string) error {
	entries, err := os.ReadDir(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read cgroup %s: %w", path, err)
	}
	var errs []error
	for _, ent := range entries {
		if ent.IsDir() {
			errs = append(errs, removeCgroupTree(filepath.Join(path, ent.Name())))
		}
	}
	return errors.Join(append(errs, removeCgroup(path))...)
}

// procCgroup returns the cgroup v2 path of pid, relative to the cgroup2
// mount, as the "0::" line of /proc/PID/cgroup shows it.
func procCgroup(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("read cgroup of %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("read cgroup of %d: no cgroup v2 entry", pid)
}
