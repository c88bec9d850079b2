package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/testenv"
)

// Agents from the container image (Options.AgentImages, docs/container.md):
// `podman run` joins the agent's namespace made by testenv (--network
// ns:/run/netns/NAME) and mounts what the agent keeps across containers:
// its state directory at /var/lib/sluice, a directory for its API socket
// at /run/sluice, the env's bpffs at /sys/fs/bpf (the host's bpffs, in a
// real deployment) and the cgroup v2 hierarchy.

// ContainerCaps are the capabilities the agent's container gets, and no
// others (--cap-drop all): the set the agent with the data path on needs,
// found by experiment with the systemd unit (loader.Capabilities on the
// deploy branch; CAP_SYS_ADMIN covers bpf() and perf events). --privileged
// would add the rest, among them CAP_SYS_RESOURCE, which some hosts (this
// one) withhold, and the container then fails to start.
var ContainerCaps = []string{"NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"}

// ContainerLabel marks the containers a scenario started, with the env's
// run id as the value.
const ContainerLabel = "io.sluice.testenv.run"

// In the container.
const (
	containerStateDir = "/var/lib/sluice"
	containerRunDir   = "/run/sluice"
	containerBPFFS    = "/sys/fs/bpf"
	containerTicket   = "/run/secrets/sluice-ticket"
)

// image returns the image agent name starts from, "" for the binary.
func (s *Scenario) image(name string) string { return s.opts.AgentImages[name] }

// ContainerName is the name of the agent's container ("" for an agent
// started from the binary).
func (a *Agent) ContainerName() string {
	if a.s.image(a.Name) == "" {
		return ""
	}
	return a.s.Env.NamespacePrefix() + a.Name + "-agent"
}

// startContainer starts the agent with `podman run` of its image, with the
// same settings start gives the binary, in the container's paths.
func (a *Agent) startContainer(ctx context.Context, ticket string, extra []string) error {
	podman, err := exec.LookPath("podman")
	if err != nil {
		return fmt.Errorf("start %s agent from its image: %w", a.Name, err)
	}
	runDir := filepath.Dir(a.Socket)
	for _, d := range []string{a.StateDir, runDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("start %s agent from its image: %w", a.Name, err)
		}
	}
	cg, err := testenv.Cgroup2Mount()
	if err != nil {
		return fmt.Errorf("start %s agent from its image: %w", a.Name, err)
	}
	// The agent dies with its container, but a container whose podman
	// client was killed lives on: remove any left by an earlier start.
	if err := a.removeContainer(ctx); err != nil {
		return fmt.Errorf("start %s agent from its image: %w", a.Name, err)
	}
	args := []string{podman, "run", "--rm", "--name", a.ContainerName(), "--label", ContainerLabel + "=" + a.s.Env.RunID(),
		// runc: crun refuses hosts with cgroup v1 and v2 controllers both
		// (hybrid), and runc runs everywhere crun does.
		"--runtime", "runc",
		"--network", "ns:/run/netns/" + a.NS.Name(),
		// The host's PID namespace: the agent reads /proc/PID/ns/net of the
		// processes of a workload named by cgroup, and PID 1's mounts to
		// tell that its pins outlive it.
		"--pid", "host",
		// The host's cgroup namespace and hierarchy: socket acceleration
		// attaches to the root of cgroup v2, and workloads named by cgroup
		// are host cgroup paths.
		"--cgroupns", "host", "-v", cg + ":" + cg + ":ro",
		// Named network namespaces (ip netns, CNI): the agent finds the
		// containers' addresses there; rslave shows those made later.
		"-v", "/run/netns:/run/netns:ro,rslave",
		"--cap-drop", "all", "--cap-add", strings.Join(ContainerCaps, ","),
		"-v", a.StateDir + ":" + containerStateDir,
		"-v", runDir + ":" + containerRunDir,
	}
	args = append(args, ulimitArgs()...)
	if a.BPFDir != "" {
		args = append(args, "-v", filepath.Dir(a.BPFDir)+":"+containerBPFFS)
	}
	if ticket != "" {
		tf := filepath.Join(a.s.Env.Dir(), a.Name+".ticket")
		if err := os.WriteFile(tf, []byte(ticket+"\n"), 0o600); err != nil {
			return fmt.Errorf("write ticket: %w", err)
		}
		args = append(args, "-v", tf+":"+containerTicket+":ro")
	}
	args = append(args, a.s.image(a.Name), "run", "--state-dir", containerStateDir, "--api", filepath.Join(containerRunDir, filepath.Base(a.Socket)))
	if a.BPFDir == "" {
		args = append(args, "--datapath", "off")
	} else {
		args = append(args, "--datapath", "on", "--bpf-dir", filepath.Join(containerBPFFS, filepath.Base(a.BPFDir)))
		for _, b := range a.Bridges {
			args = append(args, "--bridge", b)
		}
	}
	args = append(args, extra...)
	if ticket != "" {
		args = append(args, "--ticket", "@"+containerTicket)
	}
	p, err := a.s.Env.StartOnHost(a.Name+"-container", args, testenv.ProcOptions{})
	if err != nil {
		return err
	}
	a.Proc = p
	return waitFor(ctx, p, "agent ready")
}

// ulimitArgs give the container this process's open-file limit: podman
// otherwise raises it (and the process limit) to the maximum, which needs
// CAP_SYS_RESOURCE, and the container fails to start where the host
// withholds it. The process limit does not bind root.
func ulimitArgs() []string {
	var nofile unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err != nil {
		return nil
	}
	n := strconv.FormatUint(min(nofile.Max, 1<<20), 10)
	return []string{"--ulimit", "nofile=" + n + ":" + n, "--ulimit", "nproc=4096:4096"}
}

// killContainer kills the agent's container at once (SIGKILL to the
// agent), as a crash would, and waits for its podman client to end.
func (a *Agent) killContainer(ctx context.Context) error {
	if out, err := exec.CommandContext(ctx, "podman", "kill", a.ContainerName()).CombinedOutput(); err != nil {
		return fmt.Errorf("kill container %s: %w: %s", a.ContainerName(), err, strings.TrimSpace(string(out)))
	}
	err := a.Proc.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = nil // the client reports the agent's SIGKILL (137)
	}
	return err
}

// stopContainer stops the agent's container with `podman stop` (SIGTERM,
// then SIGKILL after 10s) and waits for its podman client to end.
func (a *Agent) stopContainer(ctx context.Context) error {
	if out, err := exec.CommandContext(ctx, "podman", "stop", "--time", "10", a.ContainerName()).CombinedOutput(); err != nil {
		return fmt.Errorf("stop container %s: %w: %s", a.ContainerName(), err, strings.TrimSpace(string(out)))
	}
	return a.Proc.Wait()
}

// removeContainer removes the agent's container, running or not; none is
// not an error.
func (a *Agent) removeContainer(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "podman", "rm", "--force", "--ignore", "--time", "0", a.ContainerName()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("remove container %s: %w: %s", a.ContainerName(), err, strings.TrimSpace(string(out)))
	}
	return nil
}
