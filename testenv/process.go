package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Process timings.
const (
	stopGrace = 5 * time.Second // Stop: SIGTERM, then SIGKILL after this
	// pipeGrace bounds how long Wait waits for output after the process
	// exited, when children it left behind still hold its stdout.
	pipeGrace = 2 * time.Second
)

var errExited = errors.New("process exited")

// ProcOptions configure Start and Run. The zero value runs as root in the
// env's working directory, in the namespace's default cgroup.
type ProcOptions struct {
	Env   []string  // extra KEY=VALUE entries on top of this process's environment
	Dir   string    // working directory; "" means Env.Dir()
	User  string    // run as this user (such as "postgres"); "" means root
	Stdin io.Reader // standard input; nil means none
	// Cgroup is a cgroup v2 directory of this env to start in. "" means the
	// container's cgroup for a container namespace, else the env's cgroup.
	Cgroup string
	// MountCgroup mounts the cgroup v2 hierarchy, in the process's own mount
	// namespace, where this process sees it, so that the same cgroup paths
	// work there (an agent resolving workloads by cgroup needs them):
	// `ip netns exec` remounts /sys for the namespace, which hides a cgroup2
	// mount under it.
	MountCgroup bool
}

// mountCgroupScript runs as `sh -c SCRIPT MOUNTPOINT ARGV...` right after
// `ip netns exec`: it mounts cgroup2 on MOUNTPOINT (on a tmpfs over
// /sys/fs/cgroup first if the fresh sysfs lacks the directory, as on hybrid
// systems with /sys/fs/cgroup/unified), then execs ARGV.
const mountCgroupScript = `if [ ! -d "$0" ]; then mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup && mkdir -p "$0" || exit 125; fi
mount -t cgroup2 cgroup2 "$0" || exit 125
exec "$@"`

// Process is a process started with Start. Its output (stdout and stderr)
// goes to a log file in the env's directory and, the last MiB of it, to
// memory.
type Process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	out     *outputBuffer
	done    chan struct{} // closed when the process is waited for
	err     error         // exit status; valid once done is closed
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Start starts argv inside the namespace with `ip netns exec` (so that
// SetHosts entries apply), born inside a cgroup of the env (see
// ProcOptions.Cgroup) so that Close can kill it and everything it spawns.
// name names the log file.
func (ns *NS) Start(name string, argv []string, opts ProcOptions) (*Process, error) {
	cmd, cgfd, err := ns.command(argv, opts)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer unix.Close(cgfd)
	return ns.env.start(name, ns.name, cmd, opts.Stdin)
}

// start starts cmd, built by command or hostCommand (whose cgroup fd stays
// open until it returns), as the Process name, logged and tracked; where
// names the namespace for errors.
func (e *Env) start(name, where string, cmd *exec.Cmd, stdin io.Reader) (*Process, error) {
	logDir := filepath.Join(e.dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	logFile, logPath, err := createLog(logDir, name)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{name: name, logPath: logPath, cmd: cmd, out: newOutputBuffer(), done: make(chan struct{})}
	w := io.MultiWriter(logFile, p.out)
	cmd.Stdout, cmd.Stderr = w, w // the same writer: one pipe, ordered output
	cmd.Stdin = stdin
	cmd.WaitDelay = pipeGrace
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, where, err)
	}
	go func() {
		err := cmd.Wait()
		if errors.Is(err, exec.ErrWaitDelay) {
			err = nil // it exited fine; a child still holds its output
		}
		logFile.Close()
		p.err = err
		close(p.done)
	}()
	if err := e.track(func() { e.procs = append(e.procs, p) }, p.Kill); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// createLog creates <dir>/<name>.log, or <name>-2.log and so on if taken.
func createLog(dir, name string) (*os.File, string, error) {
	base := unsafeName.ReplaceAllString(name, "_")
	for i := 1; i < 1000; i++ {
		path := filepath.Join(dir, base+".log")
		if i > 1 {
			path = filepath.Join(dir, fmt.Sprintf("%s-%d.log", base, i))
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("create log: %w", err)
		}
		return f, path, nil
	}
	return nil, "", fmt.Errorf("create log: too many logs named %s", base)
}

// command builds `ip netns exec NS [setpriv ...] argv` and opens the cgroup
// directory it is to be born in; the caller closes the returned fd.
func (ns *NS) command(argv []string, opts ProcOptions) (*exec.Cmd, int, error) {
	if len(argv) == 0 {
		return nil, -1, errors.New("empty command")
	}
	ip, err := findBinary("ip")
	if err != nil {
		return nil, -1, err
	}
	args := []string{"netns", "exec", ns.name}
	if opts.MountCgroup {
		mnt, err := cgroup2Mount()
		if err != nil {
			return nil, -1, err
		}
		if strings.HasPrefix(mnt, "/sys/") { // elsewhere, ip netns exec leaves it be
			sh, err := findBinary("sh")
			if err != nil {
				return nil, -1, err
			}
			args = append(args, sh, "-c", mountCgroupScript, mnt)
		}
	}
	env := os.Environ()
	if opts.User != "" {
		u, err := user.Lookup(opts.User)
		if err != nil {
			return nil, -1, fmt.Errorf("look up user: %w", err)
		}
		setpriv, err := findBinary("setpriv")
		if err != nil {
			return nil, -1, err
		}
		// ip netns exec needs root; drop privileges after it switched.
		args = append(args, setpriv, "--reuid="+u.Uid, "--regid="+u.Gid, "--init-groups", "--")
		env = append(env, "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username)
	}
	cg, err := ns.processCgroup(opts.Cgroup)
	if err != nil {
		return nil, -1, err
	}
	fd, err := unix.Open(cg, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("open cgroup: %w", err)
	}
	cmd := exec.Command(ip, append(args, argv...)...)
	cmd.Env = append(env, opts.Env...)
	cmd.Dir = opts.Dir
	if cmd.Dir == "" {
		cmd.Dir = ns.env.dir
	}
	// clone3(CLONE_INTO_CGROUP): the process is in the cgroup from its
	// first instruction, so nothing it forks can escape teardown.
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	return cmd, fd, nil
}

// processCgroup picks the cgroup for a process: the override, which must
// belong to this env, else the container's, else the env's.
func (ns *NS) processCgroup(override string) (string, error) {
	switch {
	case override != "":
		if !ns.env.ownsCgroup(override) {
			return "", fmt.Errorf("cgroup %s does not belong to this env", override)
		}
		return override, nil
	case ns.cgroup != "":
		return ns.cgroup, nil
	default:
		return ns.env.envCgroup()
	}
}

// findBinary looks name up in PATH, then in the sbin directories that a
// non-login root shell may lack.
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("find %s: not installed", name)
}

// Run runs argv inside the namespace to completion, like Start, and returns
// its combined output. A failure's error includes the output's tail.
func (ns *NS) Run(ctx context.Context, argv ...string) ([]byte, error) {
	return ns.run(ctx, argv, ProcOptions{})
}

// RunOpts is Run with options (user, environment, stdin, cgroup).
func (ns *NS) RunOpts(ctx context.Context, argv []string, opts ProcOptions) ([]byte, error) {
	return ns.run(ctx, argv, opts)
}

func (ns *NS) run(ctx context.Context, argv []string, opts ProcOptions) ([]byte, error) {
	cmd, cgfd, err := ns.command(argv, opts)
	if err != nil {
		return nil, fmt.Errorf("run in %s: %w", ns.name, err)
	}
	defer unix.Close(cgfd)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &out, opts.Stdin
	cmd.WaitDelay = pipeGrace
	err = cmd.Start()
	if err == nil {
		stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
		err = cmd.Wait()
		if !stop() && err != nil {
			err = errors.Join(ctx.Err(), err)
		}
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil
	}
	if err != nil {
		return out.Bytes(), fmt.Errorf("run %q in %s: %w\n%s", argv, ns.name, err, tail(out.String(), 2000))
	}
	return out.Bytes(), nil
}

// Pid is the process id (of the command itself: ip and setpriv exec it).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogPath is the file that has all of the process's output.
func (p *Process) LogPath() string { return p.logPath }

// Output returns the last MiB of the process's combined output.
func (p *Process) Output() string { return p.out.String() }

// Exited is closed when the process has exited and been waited for.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit status as an
// error (nil for status 0).
func (p *Process) Wait() error {
	<-p.done
	if p.err != nil {
		return fmt.Errorf("process %s: %w", p.name, p.err)
	}
	return nil
}

// Stop sends SIGTERM, then SIGKILL if the process has not exited after 5s,
// and waits for it. Stopping an exited process does nothing.
func (p *Process) Stop() error {
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	return p.Kill()
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

func (p *Process) signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	err := p.cmd.Process.Signal(sig)
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	return nil
}

// WaitOutput waits until the output contains substr. It fails, with the
// output's tail, if the process exits first or ctx ends.
func (p *Process) WaitOutput(ctx context.Context, substr string) error {
	err := p.out.wait(ctx, substr, p.done)
	if errors.Is(err, errExited) {
		return fmt.Errorf("wait for %q: process %s exited (%v) first:\n%s", substr, p.name, p.err, p.OutputTail(2000))
	}
	if err != nil {
		return fmt.Errorf("process %s: %w; its output so far:\n%s", p.name, err, p.OutputTail(2000))
	}
	return nil
}

// OutputTail returns at most the last n bytes of the process's output.
func (p *Process) OutputTail(n int) string { return tail(p.Output(), n) }

// reaped waits up to d for the process to have been waited for, after its
// cgroup was killed.
func (p *Process) reaped(d time.Duration) error {
	select {
	case <-p.done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("reap process %s: still running after %v", p.name, d)
	}
}
