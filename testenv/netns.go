package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// validRole is what a namespace role may look like: short, so that names
// stay readable in `ip netns list`, and safe in paths.
var validRole = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,19}$`)

// NS is a named network namespace of an Env: a "host" or a "container".
type NS struct {
	env    *Env
	name   string
	handle netns.NsHandle
	nl     *netlink.Handle
	cgroup string // the container's cgroup; "" for hosts

	mu    sync.Mutex // guards the following
	hosts map[string]string
}

// Namespace creates the named namespace "sl<runid>-<role>" (visible to
// `ip netns`) with its loopback up. role is lowercase letters, digits, '-'
// and '_', at most 20 characters, unique in the env.
func (e *Env) Namespace(role string) (*NS, error) {
	if !validRole.MatchString(role) {
		return nil, fmt.Errorf("create namespace: invalid role %q", role)
	}
	name := e.NamespacePrefix() + role
	if err := e.reserveName(name); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	h, err := newNamed(name)
	if err != nil {
		e.mu.Lock()
		delete(e.byName, name)
		e.mu.Unlock()
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	ns := &NS{env: e, name: name, handle: h}
	err = e.track(func() {
		e.nss = append(e.nss, ns)
		e.byName[name] = ns
	}, ns.delete)
	if err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	if ns.nl, err = netlink.NewHandleAt(h); err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", name, err)
	}
	lo, err := ns.nl.LinkByName("lo")
	if err == nil {
		err = ns.nl.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("set lo up in %s: %w", name, err)
	}
	// A new namespace inherits the host's IPv4 settings (devconf_inherit_init_net
	// 0), and a host running Docker forwards: every namespace starts as a
	// host that does not, and only routers turn forwarding on (Firewall, Router).
	if err := ns.SetSysctl("net.ipv4.ip_forward", "0"); err != nil {
		return nil, fmt.Errorf("turn forwarding off in %s: %w", name, err)
	}
	return ns, nil
}

// reserveName claims a namespace name (a nil entry until it exists).
func (e *Env) reserveName(name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if _, dup := e.byName[name]; dup {
		return errors.New("already exists")
	}
	e.byName[name] = nil
	return nil
}

// newNamed creates and pins a namespace without moving the caller: the work
// happens on a locked thread that switches back, or dies if it cannot.
func newNamed(name string) (netns.NsHandle, error) {
	if err := shareNetnsDir(); err != nil {
		return netns.None(), err
	}
	type result struct {
		h   netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{netns.None(), fmt.Errorf("get current namespace: %w", err)}
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if err != nil && !errors.Is(err, os.ErrExist) {
			os.Remove(filepath.Join(netnsDir, name)) // left behind if the bind mount failed
		}
		if serr := netns.Set(orig); serr != nil {
			// Stay locked: the runtime ends this thread with the goroutine.
			done <- result{h, errors.Join(err, fmt.Errorf("switch back: %w", serr))}
			return
		}
		runtime.UnlockOSThread()
		done <- result{h, err}
	}()
	r := <-done
	if r.err != nil && r.h.IsOpen() {
		r.h.Close()
		netns.DeleteNamed(name)
	}
	return r.h, r.err
}

// shareNetnsDir makes /run/netns a shared mount point, as `ip netns add`
// does, so that removing a pin there also removes it in the mount
// namespaces that `ip netns exec` creates (they are its slaves).
func shareNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	return nil
}

// delete unpins the namespace; links in it, and the peers of its veths,
// vanish with it once nothing holds it any more.
func (ns *NS) delete() error {
	if ns.nl != nil {
		ns.nl.Close()
	}
	ns.handle.Close()
	err := netns.DeleteNamed(ns.name)
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete namespace %s: %w", ns.name, err)
	}
	return nil
}

// Name is the namespace's name under /run/netns.
func (ns *NS) Name() string { return ns.name }

// Env is the environment that owns the namespace.
func (ns *NS) Env() *Env { return ns.env }

// Do runs fn on a locked OS thread switched into the namespace and switches
// back afterwards. fn runs on another goroutine than the caller's, so it must
// not call t.FailNow; goroutines it starts do not inherit the namespace.
// Sockets made inside fn stay in the namespace for their whole life.
func (ns *NS) Do(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("get current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns.handle); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter namespace %s: %w", ns.name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the runtime ends this thread with the goroutine.
			done <- errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", ns.name, err))
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// SetSysctl writes value to the sysctl key (such as "net.ipv4.ip_forward")
// inside the namespace.
func (ns *NS) SetSysctl(key, value string) error {
	if key == "" || strings.Contains(key, "/") {
		return fmt.Errorf("set sysctl: invalid key %q", key)
	}
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return ns.Do(func() error {
		// /proc/sys/net shows the namespace of the thread that opens it.
		if err := os.WriteFile(path, []byte(value), 0); err != nil {
			return fmt.Errorf("set sysctl %s in %s: %w", key, ns.name, err)
		}
		return nil
	})
}

// AddRoute adds (or replaces) a route to dst, a CIDR or "default", through
// the gateway via.
func (ns *NS) AddRoute(dst, via string) error {
	gw := net.ParseIP(via)
	if gw == nil {
		return fmt.Errorf("add route in %s: invalid gateway %q", ns.name, via)
	}
	r := &netlink.Route{Gw: gw}
	if dst == "default" {
		bits := 32
		if gw.To4() == nil {
			bits = 128
		}
		r.Dst = &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, bits)}
		if bits == 128 {
			r.Dst.IP = net.IPv6zero
		}
	} else {
		_, ipnet, err := net.ParseCIDR(dst)
		if err != nil {
			return fmt.Errorf("add route in %s: %w", ns.name, err)
		}
		r.Dst = ipnet
	}
	if err := ns.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("add route %s via %s in %s: %w", dst, via, ns.name, err)
	}
	return nil
}

// SetHosts writes /etc/netns/<name>/hosts with localhost and entries
// (name -> ip), so that processes started with `ip netns exec` (Start, Run)
// resolve those names; DialTCP resolves them too. It replaces earlier
// entries. The directory is removed on Close.
func (ns *NS) SetHosts(entries map[string]string) error {
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
	for _, n := range names {
		if net.ParseIP(entries[n]) == nil || strings.ContainsAny(n, " \t\n") {
			return fmt.Errorf("set hosts in %s: invalid entry %q -> %q", ns.name, n, entries[n])
		}
		fmt.Fprintf(&b, "%s\t%s\n", entries[n], n)
	}
	dir := filepath.Join(etcNetnsDir, ns.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("set hosts in %s: %w", ns.name, err)
	}
	e := ns.env
	err := e.track(func() {
		if !containsString(e.etcDirs, dir) {
			e.etcDirs = append(e.etcDirs, dir)
		}
	}, func() error { return os.RemoveAll(dir) })
	if err != nil {
		return fmt.Errorf("set hosts in %s: %w", ns.name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("set hosts in %s: %w", ns.name, err)
	}
	ns.mu.Lock()
	ns.hosts = make(map[string]string, len(entries))
	for n, ip := range entries {
		ns.hosts[n] = ip
	}
	ns.mu.Unlock()
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// resolve maps the host part of addr through the namespace's hosts entries.
func (ns *NS) resolve(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ns.mu.Lock()
	ip, ok := ns.hosts[host]
	ns.mu.Unlock()
	if !ok {
		return addr
	}
	return net.JoinHostPort(ip, port)
}

// DialTCP connects to addr ("ip:port", or a name given to SetHosts) from
// inside the namespace, giving up after timeout. The caller closes the
// connection (it is not tracked, so that benchmarks may dial many).
func (ns *NS) DialTCP(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	addr = ns.resolve(addr)
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, ns.name, err)
	}
	return c, nil
}

// ListenTCP listens on addr ("ip:port") inside the namespace. Close closes
// the listener if the caller has not.
func (ns *NS) ListenTCP(addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, ns.name, err)
	}
	if err := ns.env.track(func() { ns.env.closers = append(ns.env.closers, l) }, l.Close); err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, ns.name, err)
	}
	return l, nil
}
