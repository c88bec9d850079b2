package main

import (
	"bytes"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// clientsetDeps are the parts of client-go the agent must not link, with
// what they are: its pod watcher (package kube, agent run --kubernetes)
// needs core/v1 pods only, through a REST client of its own scheme. Any of
// these brings every API group's types (the clientset's scheme registers
// them all) and made the agent's binary 107 MB instead of 55.
var clientsetDeps = map[string]string{
	"k8s.io/client-go/kubernetes":          "the clientset, whose scheme registers every API group",
	"k8s.io/client-go/informers":           "the informer factory of every API group",
	"k8s.io/client-go/applyconfigurations": "the apply configurations of every API group",
	"k8s.io/client-go/discovery":           "the discovery client and its OpenAPI models",
}

// TestLinksNoClientset: the agent links none of client-go's clientset,
// informer factory, apply configurations or discovery client; the failure
// names the package outside them that imports one.
func TestLinksNoClientset(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(build.Default.GOROOT, "bin", "go")
	}
	cmd := exec.Command(goCmd, "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, ".")
	cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, stderr.Bytes())
	}
	n := 0
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		n++
		if _, bad := forbidden(f[0]); bad {
			continue // reached from another package, named below
		}
		for _, q := range f[1:] {
			if what, bad := forbidden(q); bad {
				t.Errorf("%s imports %s (%s)", f[0], q, what)
			}
		}
	}
	if n < 2 {
		t.Fatalf("go list -deps listed %d packages:\n%s", n, out)
	}
}

// forbidden says whether p is one of clientsetDeps or in one, and what.
func forbidden(p string) (string, bool) {
	for bad, what := range clientsetDeps {
		if p == bad || strings.HasPrefix(p, bad+"/") {
			return what, true
		}
	}
	return "", false
}
