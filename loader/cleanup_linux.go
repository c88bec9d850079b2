package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// Cleanup removes everything Open and Attach left: the links pinned under
// PinDir (which detaches their programs), clsact filters of ours on any
// device, the policy route, and the pins. Other programs on the same devices
// are left alone. It must not run while an agent runs on PinDir.
func Cleanup(opts Options) error {
	opts.defaults()
	if _, err := os.Stat(opts.PinDir); errors.Is(err, os.ErrNotExist) {
		return removeRoute(opts)
	}
	lock, err := lockDir(opts.PinDir)
	if err != nil {
		return fmt.Errorf("clean up: %w (stop the agent first)", err)
	}
	defer lock.Close()
	var errs []error
	dir := filepath.Join(opts.PinDir, linksDir)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		pin := filepath.Join(dir, e.Name())
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			errs = append(errs, l.Unpin(), l.Close())
		} else {
			errs = append(errs, os.Remove(pin))
		}
	}
	links, err := netlink.LinkList()
	errs = append(errs, err)
	for _, l := range links {
		if fs, err := ourFilters(l.Attrs().Index); err == nil && len(fs) > 0 {
			errs = append(errs, detachClsact(l.Attrs().Index))
		}
	}
	errs = append(errs, removeRoute(opts), os.RemoveAll(opts.PinDir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up %s: %w", opts.PinDir, err)
	}
	return nil
}
