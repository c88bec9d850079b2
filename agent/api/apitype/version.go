package apitype

// Version is a binary's build (GET /v1/version): the module's version
// ("(devel)" for a build from a checkout), the VCS revision and whether
// the tree had uncommitted changes, and the Go version.
type Version struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
}
