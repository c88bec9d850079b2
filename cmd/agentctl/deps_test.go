package main

import (
	"bytes"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/sluicehq/sluice/"

// forbiddenDeps are packages agentctl must not link, with what they are: it
// talks to the agent through package api, whose answers are apitype's.
var forbiddenDeps = map[string]string{
	"github.com/cilium/ebpf":         "BPF",
	"github.com/vishvananda/netlink": "netlink",
	"github.com/vishvananda/netns":   "network namespaces",
	"go.etcd.io/bbolt":               "the hub's database",
	module + "agent/daemon":          "the agent",
	module + "agent/portal":          "the agent's portals",
	module + "agent/api/server":      "the agent's side of the API",
	module + "agent/relay":           "the agent's client of the hub",
	module + "agent/hub":             "the hub",
	module + "agent/hub/authority":   "the authority and its database",
	module + "loader":                "BPF",
	module + "maps":                  "BPF maps",
}

// allowedImports are the imports that may lead agentctl to a forbidden
// package, each with why. The project-directory commands run on the
// authority's machine and work on its files: `project init` creates the
// hub's database and `hub backup` checks the copy it wrote, both with bbolt
// through the authority's package. Nothing else may.
var allowedImports = map[[2]string]string{
	{module + "cmd/agentctl", module + "agent/hub/authority"}: "project init, ticket create, hub backup: authority.Init, Load, CheckDatabase",
}

// TestLinksNoAgent: agentctl, on this system and on a laptop's, links no
// BPF, netlink or database code and none of the agent, except through the
// allowed imports; the failure names the chain of imports that leads there.
func TestLinksNoAgent(t *testing.T) {
	for _, goos := range slices.Compact([]string{runtime.GOOS, "linux", "darwin"}) {
		imports := packageImports(t, goos)
		from := map[string]string{module + "cmd/agentctl": ""} // how each package was reached
		queue := []string{module + "cmd/agentctl"}
		for len(queue) > 0 {
			p := queue[0]
			queue = queue[1:]
			for _, q := range imports[p] {
				if _, seen := from[q]; seen || allowedImports[[2]string{p, q}] != "" {
					continue
				}
				from[q] = p
				queue = append(queue, q)
			}
		}
		for bad, what := range forbiddenDeps {
			shortest := ""
			for p := range from {
				// A module's packages all count; of this project's, only the
				// one named (agent/hub/admin is the hub's client, not the hub).
				if (p == bad || !strings.HasPrefix(bad, module) && strings.HasPrefix(p, bad+"/")) &&
					(shortest == "" || len(chain(from, p)) < len(shortest)) {
					shortest = chain(from, p)
				}
			}
			if shortest != "" {
				t.Errorf("GOOS=%s: agentctl links %s (%s): %s", goos, bad, what, shortest)
			}
		}
	}
}

// chain is the imports that lead from agentctl to p.
func chain(from map[string]string, p string) string {
	var c []string
	for ; p != ""; p = from[p] {
		c = append(c, strings.TrimPrefix(p, module))
	}
	slices.Reverse(c)
	return strings.Join(c, " -> ")
}

// packageImports runs go list -deps on agentctl for goos and returns each
// package's imports.
func packageImports(t *testing.T, goos string) map[string][]string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(build.Default.GOROOT, "bin", "go")
	}
	cmd := exec.Command(goCmd, "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, ".")
	cmd.Env = append(os.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("GOOS=%s go list -deps: %v\n%s", goos, err, stderr.Bytes())
	}
	imports := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) > 0 {
			imports[f[0]] = f[1:]
		}
	}
	if len(imports[module+"cmd/agentctl"]) == 0 {
		t.Fatalf("GOOS=%s go list -deps listed no imports of agentctl:\n%s", goos, out)
	}
	return imports
}
