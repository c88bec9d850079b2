// Package buildinfo reads what the Go toolchain recorded in the running
// binary: the module's version, the VCS revision it was built from and
// whether the tree had changes, and the Go version. Both commands print it
// (version) and the agent serves it on its API (GET /v1/version). A build
// without VCS information (a container build without .git,
// deploy/docker/Dockerfile) gives the version and revision at link time:
//
//	go build -ldflags "-X github.com/sluicehq/sluice/agent/buildinfo.version=v1.2.0 -X github.com/sluicehq/sluice/agent/buildinfo.revision=0123abc"
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

// The version and revision set at link time (-X), for builds without VCS
// information; what the toolchain recorded wins over them.
var (
	version  string
	revision string
)

// Get returns the running binary's version.
func Get() apitype.Version {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return get(bi, version, revision)
}

// get reads bi (nil: none recorded), falling back to the version and
// revision given at link time where the toolchain recorded none: a module
// built from a tree without VCS information is "(devel)" with no revision.
func get(bi *debug.BuildInfo, linkVersion, linkRevision string) apitype.Version {
	v := apitype.Version{Version: "(unknown)", GoVersion: runtime.Version()}
	if bi != nil {
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
	}
	if linkVersion != "" && (v.Version == "(unknown)" || v.Version == "(devel)") {
		v.Version = linkVersion
	}
	if linkRevision != "" && v.Revision == "" {
		v.Revision = linkRevision
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
