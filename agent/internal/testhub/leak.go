// Package testhub runs a relay hub and its agents in-process on 127.0.0.1 for
// tests, and checks that a test binary leaves no goroutine behind.
package testhub

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// LeakGrace is how long Main waits for goroutines to finish after the tests.
const LeakGrace = 5 * time.Second

// Main runs a package's tests and fails the binary when goroutines the tests
// started are still running LeakGrace after the last test. Use it as
//
//	func TestMain(m *testing.M) { testhub.Main(m) }
//
// A test binary started by StartProcess serves a hub instead.
func Main(m *testing.M) {
	if cfg := os.Getenv(envProcess); cfg != "" {
		os.Exit(serveProcess(cfg))
	}
	before := goroutineIDs(stacks())
	code := m.Run()
	if code == 0 {
		if leaked := waitForLeaks(before, LeakGrace); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: %d goroutine(s) outlived the tests:\n\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// waitForLeaks polls until no goroutine started after before remains, or
// until grace has passed; it returns the stacks of the ones left.
func waitForLeaks(before map[string]bool, grace time.Duration) []string {
	deadline := time.Now().Add(grace)
	for {
		var leaked []string
		for _, g := range stacks()[1:] { // [0] is this goroutine
			if !before[goroutineID(g)] && !ignored(g) {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ignoredCreators start goroutines the runtime and standard library keep for
// the life of the process.
var ignoredCreators = []string{"created by runtime.", "created by unique.", "created by os/signal.", "created by internal/"}

func ignored(stack string) bool {
	for _, c := range ignoredCreators {
		if strings.Contains(stack, c) {
			return true
		}
	}
	return false
}

// stacks returns the stack of every goroutine, the caller's first.
func stacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range bytes.Split(bytes.TrimSpace(buf), []byte("\n\n")) {
		out = append(out, string(g))
	}
	return out
}

func goroutineIDs(all []string) map[string]bool {
	ids := map[string]bool{}
	for _, g := range all {
		ids[goroutineID(g)] = true
	}
	return ids
}

// goroutineID returns N of a stack's header line "goroutine N [state]:".
func goroutineID(stack string) string {
	f := strings.Fields(stack)
	if len(f) < 2 {
		return ""
	}
	return f[1]
}
