package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// Where the package keeps its state on the machine.
const (
	// ownerDir holds one owner file per live env, named by its run id.
	ownerDir = "/run/sluice-testenv"
	// netnsDir is where iproute2 and netns.NewNamed pin named namespaces.
	netnsDir = "/run/netns"
	// etcNetnsDir holds per-namespace files that `ip netns exec` bind-mounts
	// over /etc.
	etcNetnsDir = "/etc/netns"
	// cgroupBase is the directory under the cgroup2 mount holding one
	// directory per run.
	cgroupBase = "sluice-testenv"
	// nsPrefix starts every namespace name: "sl" + run id + "-" + role.
	nsPrefix = "sl"
	// runIDLen is the length of a run id in hex digits.
	runIDLen = 6
)

// ErrClosed is returned by methods of an Env that has been closed.
var ErrClosed = errors.New("testenv closed")

// Options configure New. The zero value is a temporary environment.
type Options struct {
	// Dir is the working directory for process logs, captures and data.
	// Empty means a new temporary directory, removed by Close unless Keep.
	Dir string
	// Keep keeps the temporary directory after Close.
	Keep bool
}

// Env owns every namespace, link, cgroup, process, hosts file and capture it
// made. Its methods are safe for concurrent use.
type Env struct {
	runID  string
	dir    string
	ownDir bool
	keep   bool
	cgRoot string // <cgroup2 mount>/sluice-testenv/<runid>
	owner  string // owner file path
	recDir string // the Dir of the owner record: a temporary dir to reap

	closeOnce sync.Once
	closeErr  error // set by the first Close

	mu       sync.Mutex // guards the following
	closed   bool
	nss      []*NS
	byName   map[string]*NS
	etcDirs  []string
	cgroups  []string // created cgroup dirs, parents before children
	procs    []*Process
	captures []*Capture
	closers  []io.Closer // listeners and connections handed out
	links    int         // counter for generated link names
	envCg    string      // the env-wide cgroup, made on first use
	bpffs    string      // the private bpffs mount point, made on first use
}

// ownerRecord is the content of an owner file.
type ownerRecord struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"`           // start time of Pid in clock ticks, against pid reuse
	Dir   string `json:"dir,omitempty"`   // temporary Dir to remove when reaped
	BPFFS string `json:"bpffs,omitempty"` // bpffs mount point to unmount when reaped
}

// New reaps what earlier runs with a dead owner left behind, then makes an
// empty environment: an owner file, a cgroup directory and the working
// directory. Failures to reap stale runs are not fatal here; Reap reports
// them.
func New(opts Options) (*Env, error) {
	_ = reap()
	e := &Env{keep: opts.Keep, byName: map[string]*NS{}}
	if err := e.claimRunID(); err != nil {
		return nil, err
	}
	if err := e.setup(opts); err != nil {
		return nil, errors.Join(err, e.Close())
	}
	return e, nil
}

// claimRunID picks a free run id and writes its owner file.
func (e *Env) claimRunID() error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return fmt.Errorf("create owner dir: %w", err)
	}
	start, err := procStartTime(os.Getpid())
	if err != nil {
		return err
	}
	for range 10 {
		var b [runIDLen / 2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("generate run id: %w", err)
		}
		id := hex.EncodeToString(b[:])
		path := filepath.Join(ownerDir, id)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create owner file: %w", err)
		}
		e.runID, e.owner = id, path
		return errors.Join(writeOwner(f, ownerRecord{Pid: os.Getpid(), Start: start}), f.Close())
	}
	return errors.New("claim run id: no free id after 10 tries")
}

func writeOwner(w io.Writer, rec ownerRecord) error {
	if err := json.NewEncoder(w).Encode(rec); err != nil {
		return fmt.Errorf("write owner file: %w", err)
	}
	return nil
}

// setup makes the run's cgroup directory and working directory.
func (e *Env) setup(opts Options) error {
	mnt, err := cgroup2Mount()
	if err != nil {
		return err
	}
	base := filepath.Join(mnt, cgroupBase)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return fmt.Errorf("create cgroup base: %w", err)
	}
	e.cgRoot = filepath.Join(base, e.runID)
	if err := os.Mkdir(e.cgRoot, 0o755); err != nil {
		e.cgRoot = ""
		return fmt.Errorf("create run cgroup: %w", err)
	}
	e.cgroups = append(e.cgroups, e.cgRoot)
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
			return fmt.Errorf("create env dir: %w", err)
		}
		e.dir = opts.Dir
		return nil
	}
	dir, err := os.MkdirTemp("", "sluice-testenv-"+e.runID+"-")
	if err != nil {
		return fmt.Errorf("create env dir: %w", err)
	}
	e.dir, e.ownDir = dir, true
	// Processes may run as other users (PostgreSQL as postgres): let them in.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("chmod env dir: %w", err)
	}
	if opts.Keep {
		return nil
	}
	e.recDir = dir
	return e.rewriteOwner(ownerRecord{Dir: dir})
}

// rewriteOwner records rec (with this process as owner) in the owner file.
func (e *Env) rewriteOwner(rec ownerRecord) error {
	start, err := procStartTime(os.Getpid())
	if err != nil {
		return err
	}
	rec.Pid, rec.Start = os.Getpid(), start
	f, err := os.OpenFile(e.owner, os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("open owner file: %w", err)
	}
	return errors.Join(writeOwner(f, rec), f.Close())
}

// Dir is the working directory of the environment.
func (e *Env) Dir() string { return e.dir }

// RunID is the random id that names this run's namespaces and cgroups.
func (e *Env) RunID() string { return e.runID }

// CgroupRoot is the cgroup v2 directory holding all of this run's cgroups.
func (e *Env) CgroupRoot() string { return e.cgRoot }

// NamespacePrefix starts the name of every namespace of this run.
func (e *Env) NamespacePrefix() string { return nsPrefix + e.runID + "-" }

// LinkName returns a fresh interface name, unique in this run, for links
// whose name does not matter (such as the host side of a veth pair).
func (e *Env) LinkName() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.links++
	return fmt.Sprintf("v%s%d", e.runID, e.links)
}

// track records a resource for Close; when the env is already closed it
// runs undo at once and returns ErrClosed.
func (e *Env) track(add func(), undo func() error) error {
	e.mu.Lock()
	if !e.closed {
		add()
		e.mu.Unlock()
		return nil
	}
	e.mu.Unlock()
	return errors.Join(ErrClosed, undo())
}

// Close kills every process (whole cgroups), stops captures, unmounts the
// private bpffs, deletes the namespaces with everything in them, removes hosts files and cgroup
// directories, and the working directory if it is temporary and not kept.
// It is idempotent and returns the errors.Join of every failure; on failure
// the owner file stays so that a later Reap retries.
func (e *Env) Close() error {
	e.closeOnce.Do(func() { e.closeErr = e.close() })
	return e.closeErr
}

func (e *Env) close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()

	var errs []error
	if e.cgRoot != "" {
		errs = append(errs, killCgroup(e.cgRoot))
	}
	for _, p := range e.procs {
		errs = append(errs, p.reaped(cgroupKillWait))
	}
	for _, c := range e.closers {
		c.Close() // already closed by their users, mostly
	}
	for i := len(e.captures) - 1; i >= 0; i-- {
		errs = append(errs, e.captures[i].Stop())
	}
	if e.bpffs != "" {
		errs = append(errs, unmountBPFFS(e.bpffs))
	}
	for i := len(e.nss) - 1; i >= 0; i-- {
		errs = append(errs, e.nss[i].delete())
	}
	for _, d := range e.etcDirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove hosts dir: %w", err))
		}
	}
	for i := len(e.cgroups) - 1; i >= 0; i-- {
		errs = append(errs, removeCgroup(e.cgroups[i]))
	}
	if e.ownDir && !e.keep {
		if err := os.RemoveAll(e.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove env dir: %w", err))
		}
	}
	err := errors.Join(errs...)
	if err == nil && e.owner != "" {
		if rerr := os.Remove(e.owner); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = fmt.Errorf("remove owner file: %w", rerr)
		}
	}
	return err
}
