package relay_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/internal/testhub"
)

func TestMain(m *testing.M) { testhub.Main(m) }

// wait bounds what a test waits for.
const wait = 10 * time.Second
