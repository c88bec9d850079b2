package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// StartOnHost starts argv in the host's namespaces rather than in one of the
// env's: for a tool that joins a namespace of the env by itself, such as
// `podman run --network ns:/run/netns/NAME` (under `ip netns exec`, which
// mounts /sys anew, the container runtime would not find the cgroup
// hierarchy). Like Start, the process is born in the env's cgroup, logged,
// and killed by Close; what it hands off elsewhere (a container runtime's
// processes in cgroups of their own) is the caller's to stop. opts.Env,
// Dir and Stdin apply; User, Cgroup and MountCgroup are refused.
func (e *Env) StartOnHost(name string, argv []string, opts ProcOptions) (*Process, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("start %s: empty command", name)
	}
	if opts.User != "" || opts.Cgroup != "" || opts.MountCgroup {
		return nil, fmt.Errorf("start %s on the host: %w", name, errors.New("User, Cgroup and MountCgroup apply only in a namespace (NS.Start)"))
	}
	cg, err := e.envCgroup()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	fd, err := unix.Open(cg, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start %s: open cgroup: %w", name, err)
	}
	defer unix.Close(fd)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Dir = opts.Dir
	if cmd.Dir == "" {
		cmd.Dir = e.dir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	return e.start(name, "the host", cmd, opts.Stdin)
}

// Cgroup2Mount is where the cgroup v2 hierarchy is mounted in the host's
// mount namespace: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid
// host.
func Cgroup2Mount() (string, error) { return cgroup2Mount() }
