package portal

import (
	"net/netip"
	"time"
)

// SetWarmWaitForTest changes how long outlets wait for the next open
// request on a warm channel, until restore.
func SetWarmWaitForTest(d time.Duration) (restore func()) {
	old := warmWait
	warmWait = d
	return func() { warmWait = old }
}

// SetPunchTo changes where m's direct attempts connect to (an invalid
// address: they do not connect). Set it before m serves anything.
func SetPunchTo(m *Manager, f func(netip.AddrPort) netip.AddrPort) { m.punchTo = f }
