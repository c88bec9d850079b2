//go:build !linux

package testhub

import (
	"fmt"
	"os"
)

// serveProcess: hub processes are for Linux tests (they read /proc).
func serveProcess(string) int {
	fmt.Fprintln(os.Stderr, "hub process: only on Linux")
	return 1
}
