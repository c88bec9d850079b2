//go:build linux

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/sluicehq/sluice/loader"
)

// cleanup removes the data path pinned under dir and says what it did. A
// running agent makes it fail with loader.ErrBusy.
func cleanup(dir string) (string, error) {
	_, statErr := os.Stat(dir)
	if err := loader.Cleanup(loader.Options{PinDir: dir}); err != nil {
		return "", err
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		return fmt.Sprintf("nothing was pinned under %s; the policy route is gone", dir), nil
	}
	return fmt.Sprintf("data path removed: programs detached, policy route and pins under %s deleted", dir), nil
}
