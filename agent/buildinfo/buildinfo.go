// Package buildinfo reads what the Go toolchain recorded in the running
// binary: the module's version, the VCS revision it was built from and
// whether the tree had changes, and the Go version. Both commands print it
// (version) and the agent serves it on its API (GET /v1/version).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

// Get returns the running binary's version.
func Get() apitype.Version {
	v := apitype.Version{Version: "(unknown)", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the one line `version` prints for v.
func String(v apitype.Version) string {
	rev := v.Revision
	switch {
	case rev == "":
		rev = "revision unknown (built without VCS information)"
	case v.Modified:
		rev = "revision " + rev + " (modified)"
	default:
		rev = "revision " + rev
	}
	return fmt.Sprintf("%s, %s, %s", v.Version, rev, v.GoVersion)
}

// Same reports whether a and b are the same build: same version and
// revision and modified bit (the Go version follows from those only for
// a release).
func Same(a, b apitype.Version) bool {
	return a.Version == b.Version && a.Revision == b.Revision && a.Modified == b.Modified
}
