package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Datapath is the loaded data path: its maps (pinned) and its program,
// attached to zero or more devices.
type Datapath struct {
	opts Options
	pins Pins     // whether the pins outlive the agent
	lock *os.File // flock on PinDir
	objs TcObjects

	mu    sync.Mutex // guards the following
	links map[int]*attached
}

// Open loads the data path. It mounts bpffs if /sys/fs/bpf is not one,
// takes the pin directory's lock, reuses pinned maps (refusing with
// ErrIncompatible if they do not match), installs the policy route, and
// adopts the links a previous agent pinned, updating their program in place.
func Open(opts Options) (_ *Datapath, err error) {
	opts.defaults()
	mounted, err := ensureBPFFS(opts.PinDir)
	if err != nil {
		return nil, privilegeError(err, true)
	}
	if err := os.MkdirAll(filepath.Join(opts.PinDir, linksDir), 0o700); err != nil {
		return nil, privilegeError(fmt.Errorf("create pin directory: %w", err), true)
	}
	pins := PinLife(opts.PinDir, mounted)
	if opts.RequirePersistentPins && pins.State == PinsEphemeral {
		if mounted {
			unix.Unmount(bpffsRoot, unix.MNT_DETACH) // ours, and empty
		}
		return nil, ephemeralError(opts.PinDir, pins)
	}
	lock, err := lockDir(opts.PinDir)
	if err != nil {
		return nil, err
	}
	d := &Datapath{opts: opts, pins: pins, lock: lock, links: map[int]*attached{}}
	defer closeOnError(&err, d) // the links adopted, the objects loaded, the lock
	if err := d.load(); err != nil {
		return nil, err
	}
	if err := installRoute(opts); err != nil {
		return nil, err
	}
	if err := d.adopt(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Datapath) load() error {
	spec, err := Spec(d.opts.Mark)
	if err != nil {
		return err
	}
	copts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.opts.PinDir}}
	if d.opts.VerifierLog {
		copts.Programs.LogLevel = ebpf.LogLevelInstruction
	}
	err = spec.LoadAndAssign(&d.objs, copts)
	var ve *ebpf.VerifierError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ebpf.ErrMapIncompatible):
		return fmt.Errorf("load data path: %w: %w (run `agent cleanup --bpf-dir %s`)", err, ErrIncompatible, d.opts.PinDir)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("load data path: %w: %w", err, ErrNotSupported)
	case errors.As(err, &ve) && d.opts.VerifierLog:
		return fmt.Errorf("load data path: %+w", ve)
	}
	return privilegeError(fmt.Errorf("load data path: %w", err), false)
}

// Maps returns the data path's maps, for package maps. They stay owned by
// the Datapath.
func (d *Datapath) Maps() *TcMaps { return &d.objs.TcMaps }

// PinDir is where the maps and links are pinned.
func (d *Datapath) PinDir() string { return d.opts.PinDir }

// Pins says whether the pins outlive the agent (PinLife).
func (d *Datapath) Pins() Pins { return d.pins }

// ephemeralError says why pins in pinDir would not outlive the agent, and
// how to give it the host's bpffs.
func ephemeralError(pinDir string, p Pins) error {
	return fmt.Errorf("pins in %s would not outlive the agent: %s; connections to transparent inlets would then hang instead of being refused "+
		"once it stopped. Give the agent the host's bpffs: on the host, `mount -t bpf bpf /sys/fs/bpf` if it is not mounted; in a container, "+
		"-v /sys/fs/bpf:/sys/fs/bpf; under `ip netns exec` (which mounts /sys anew), --bpf-dir on a bpffs mounted before it, "+
		"or enter only the network namespace (`nsenter --net=/run/netns/NAME`): %w", pinDir, p.Reason, ErrEphemeralPins)
}

func programID(p *ebpf.Program) uint32 {
	info, err := p.Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return uint32(id)
}

// Close releases the agent's handles. Pinned maps and links stay: the
// kernel keeps refusing connections to transparent inlets while no agent
// runs. Use Cleanup to remove them.
func (d *Datapath) Close() error {
	d.mu.Lock()
	var errs []error
	for _, a := range d.links {
		if a.link != nil {
			errs = append(errs, a.link.Close())
		}
	}
	d.links = map[int]*attached{}
	d.mu.Unlock()
	errs = append(errs, d.objs.Close(), d.lock.Close())
	return errors.Join(errs...)
}

// bpffsRoot is where bpffs is mounted when it is not yet.
const bpffsRoot = "/sys/fs/bpf"

// ensureBPFFS checks that pinDir will be on bpffs, mounting bpffs on
// /sys/fs/bpf if the system has not; mounted says whether it did.
func ensureBPFFS(pinDir string) (mounted bool, err error) {
	dir := filepath.Clean(pinDir)
	for {
		var st unix.Statfs_t
		err := unix.Statfs(dir, &st)
		if err == nil && st.Type == unix.BPF_FS_MAGIC {
			return false, nil
		}
		if err == nil && dir == bpffsRoot {
			if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
				return false, fmt.Errorf("mount bpffs on %s: %w", bpffsRoot, err)
			}
			return true, nil
		}
		if err == nil || dir == "/" {
			return false, fmt.Errorf("pin directory %s: %s is not on bpffs", pinDir, dir)
		}
		dir = filepath.Dir(dir)
	}
}

// lockDir takes an exclusive flock on dir, so that two agents never manage
// the same pins.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open pin directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", dir, ErrBusy)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}
