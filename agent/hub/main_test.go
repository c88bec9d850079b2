package hub_test

import (
	"testing"

	"github.com/sluicehq/sluice/agent/internal/testhub"
)

func TestMain(m *testing.M) { testhub.Main(m) }
