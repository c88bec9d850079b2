package testenv

import (
	"os"
	"testing"
)

// keepEnvVar, when set to anything, makes NewT keep the env's directory
// (process logs, captures, data) after the test, and say where it is.
const keepEnvVar = "SLUICE_TESTENV_KEEP"

// RequireRoot skips the test when not running as root, or fails it when the
// environment variable CI is "true": CI must run privileged tests, never
// skip them silently.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("privileged test skipped in CI: it needs root (network namespaces, cgroups)")
	}
	t.Skip("privileged test: needs root (network namespaces, cgroups); run with sudo")
}

// NewT returns a new Env for a test, closed by t.Cleanup (a failure to close
// fails the test). It applies RequireRoot first. The working directory is a
// temporary directory, removed afterwards unless SLUICE_TESTENV_KEEP is set.
func NewT(t testing.TB) *Env {
	t.Helper()
	RequireRoot(t)
	keep := os.Getenv(keepEnvVar) != ""
	e, err := New(Options{Keep: keep})
	if err != nil {
		t.Fatalf("create testenv: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close testenv: %v", err)
		}
		if keep {
			t.Logf("testenv directory kept: %s", e.Dir())
		}
	})
	return e
}
