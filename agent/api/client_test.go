package api

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestNoAgent(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "missing.sock"))
	_, err := c.Status(context.Background())
	if !errors.Is(err, ErrNoAgent) || !strings.Contains(err.Error(), "agent run") {
		t.Errorf("Status with no agent = %v, want ErrNoAgent with a hint", err)
	}
}
