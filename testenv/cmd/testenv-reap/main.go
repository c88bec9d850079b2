// Command testenv-reap removes the namespaces, cgroups, processes and files
// that interrupted test or demo runs left behind (see testenv.Reap). Runs
// whose owner is still alive are left alone. It needs root.
package main

import (
	"fmt"
	"os"

	"github.com/sluicehq/sluice/testenv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv-reap: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("reap test environments: needs root")
	}
	return testenv.Reap()
}
