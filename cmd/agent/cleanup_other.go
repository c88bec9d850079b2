//go:build !linux

package main

import (
	"errors"
)

func cleanup(string) (string, error) {
	return "", errors.New("clean up: the BPF data path exists only on Linux")
}
