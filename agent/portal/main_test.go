package portal_test

import (
	"os"
	"testing"

	"github.com/sluicehq/sluice/agent/internal/testhub"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(envProcess); cfg != "" {
		os.Exit(serveProcess(cfg))
	}
	testhub.Main(m)
}
