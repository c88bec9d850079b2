package buildinfo

import (
	"runtime/debug"
	"testing"
)

// TestLinkTimeVersion: a build without VCS information (a container build
// without .git) reports the version and revision given at link time; what
// the toolchain recorded is never overridden by them.
func TestLinkTimeVersion(t *testing.T) {
	noVCS := &debug.BuildInfo{Main: debug.Module{Path: "github.com/sluicehq/sluice", Version: "(devel)"}}
	vcs := &debug.BuildInfo{Main: debug.Module{Path: "github.com/sluicehq/sluice", Version: "v0.0.0-20261201-e612438abcde"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "e612438"}, {Key: "vcs.modified", Value: "true"}}}
	for _, tc := range []struct {
		name             string
		bi               *debug.BuildInfo
		linkVer, linkRev string
		wantVer, wantRev string
		wantModified     bool
	}{
		{"no VCS, nothing linked", noVCS, "", "", "(devel)", "", false},
		{"no VCS, linked", noVCS, "v1.2.0", "0123abc", "v1.2.0", "0123abc", false},
		{"no build info, linked", nil, "v1.2.0", "0123abc", "v1.2.0", "0123abc", false},
		{"no build info", nil, "", "", "(unknown)", "", false},
		{"VCS wins over linked", vcs, "v1.2.0", "0123abc", "v0.0.0-20261201-e612438abcde", "e612438", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := get(tc.bi, tc.linkVer, tc.linkRev)
			if v.Version != tc.wantVer || v.Revision != tc.wantRev || v.Modified != tc.wantModified {
				t.Errorf("get = %+v, want version %q revision %q modified %v", v, tc.wantVer, tc.wantRev, tc.wantModified)
			}
		})
	}
}
