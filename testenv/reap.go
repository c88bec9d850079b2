package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// staleUnreadable is the age after which an unreadable owner file is
// garbage rather than one being written.
const staleUnreadable = time.Minute

// validRunID matches run ids, and so the only names Reap ever touches.
var validRunID = regexp.MustCompile(`^[0-9a-f]{6}$`)

// Reap removes what runs whose owner process is dead left behind: it kills
// their cgroups, deletes their namespaces, /etc/netns directories, cgroup
// directories, private bpffs mounts and temporary directories, then their owner files. A run is
// stale when its owner file names a dead pid, or when its cgroup directory
// has no owner file. Live runs, and anything testenv did not make, are never
// touched. New calls it; `make clean` runs it through testenv/cmd/testenv-reap.
func Reap() error {
	return reap()
}

func reap() error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return fmt.Errorf("reap: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(ownerDir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("reap: open lock: %w", err)
	}
	defer lock.Close()
	// Two reapers (parallel tests, two test binaries) take turns.
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("reap: lock: %w", err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	stale, err := staleRuns()
	if err != nil {
		return err
	}
	var errs []error
	for id, rec := range stale {
		errs = append(errs, reapRun(id, rec))
	}
	return errors.Join(errs...)
}

// staleRuns lists the runs to reap, with their owner records (nil when the
// owner file is missing).
func staleRuns() (map[string]*ownerRecord, error) {
	stale := map[string]*ownerRecord{}
	entries, err := os.ReadDir(ownerDir)
	if err != nil {
		return nil, fmt.Errorf("reap: %w", err)
	}
	owned := map[string]bool{}
	for _, ent := range entries {
		id := ent.Name()
		if !validRunID.MatchString(id) {
			continue
		}
		owned[id] = true
		rec, err := readOwner(filepath.Join(ownerDir, id))
		if err != nil {
			// Being written right now by New, or garbage: an unreadable
			// record whose file is older than a minute is garbage.
			if fi, serr := ent.Info(); serr == nil && time.Since(fi.ModTime()) > staleUnreadable {
				stale[id] = &ownerRecord{}
			}
			continue
		}
		if !ownerAlive(rec) {
			stale[id] = rec
		}
	}
	// A run directory under the cgroup base without an owner file is the
	// rest of a Close that died between removing the two. New writes the
	// owner file before the directory, so look again: it may be brand new.
	if mnt, err := cgroup2Mount(); err == nil {
		runs, _ := os.ReadDir(filepath.Join(mnt, cgroupBase))
		for _, ent := range runs {
			id := ent.Name()
			if !ent.IsDir() || !validRunID.MatchString(id) || owned[id] {
				continue
			}
			if _, err := os.Lstat(filepath.Join(ownerDir, id)); errors.Is(err, fs.ErrNotExist) {
				stale[id] = nil
			}
		}
	}
	return stale, nil
}

func readOwner(path string) (*ownerRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read owner file: %w", err)
	}
	var rec ownerRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("parse owner file %s: %w", path, err)
	}
	return &rec, nil
}

// ownerAlive tells whether the owner process still runs: same pid, same
// start time (a recycled pid has another).
func ownerAlive(rec *ownerRecord) bool {
	if rec.Pid <= 0 {
		return false
	}
	start, err := procStartTime(rec.Pid)
	return err == nil && start == rec.Start
}

// procStartTime reads the start time of pid (field 22 of /proc/PID/stat, in
// clock ticks since boot).
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read start time of %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces and ')': skip past its end.
	i := strings.LastIndexByte(string(b), ')')
	fields := strings.Fields(string(b[i+1:]))
	if i < 0 || len(fields) < 20 {
		return 0, fmt.Errorf("read start time of %d: malformed stat", pid)
	}
	start, err := strconv.ParseUint(fields[19], 10, 64) // field 22 overall
	if err != nil {
		return 0, fmt.Errorf("read start time of %d: %w", pid, err)
	}
	return start, nil
}

// reapRun removes everything of run id; rec may be nil.
func reapRun(id string, rec *ownerRecord) error {
	var errs []error
	var cgRun string
	if mnt, err := cgroup2Mount(); err == nil {
		cgRun = filepath.Join(mnt, cgroupBase, id)
		errs = append(errs, killCgroup(cgRun))
	}
	prefix := nsPrefix + id + "-"
	names, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("reap %s: %w", id, err))
	}
	for _, ent := range names {
		if strings.HasPrefix(ent.Name(), prefix) {
			if err := netns.DeleteNamed(ent.Name()); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("reap %s: delete namespace %s: %w", id, ent.Name(), err))
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(etcNetnsDir, prefix+"*"))
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("reap %s: %w", id, err))
		}
	}
	if cgRun != "" {
		errs = append(errs, removeCgroupTree(cgRun))
	}
	if rec != nil {
		mounts, err := bpfMounts()
		errs = append(errs, err)
		for _, m := range bpffsToReap(rec, mounts) {
			errs = append(errs, unmountBPFFS(m))
		}
	}
	if rec != nil && rec.Dir != "" && strings.Contains(filepath.Base(rec.Dir), "sluice-testenv-"+id) {
		if err := os.RemoveAll(rec.Dir); err != nil {
			errs = append(errs, fmt.Errorf("reap %s: %w", id, err))
		}
	}
	err = errors.Join(errs...)
	if err == nil {
		if rerr := os.Remove(filepath.Join(ownerDir, id)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("reap %s: remove owner file: %w", id, rerr)
		}
	}
	return err
}
