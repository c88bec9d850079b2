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
func SetPunchTo(m *Manager, f func(netip.AddrPort) netip.AddrPort) { m.punchTo.Store(&f) }

// AbortDirectForTest resets the connections of m's live direct channels,
// as a broken path would for the agent at the other end, and returns how
// many it reset.
func AbortDirectForTest(m *Manager) int {
	m.paths.rawMu.Lock()
	defer m.paths.rawMu.Unlock()
	for c := range m.paths.raws {
		c.SetLinger(0)
		c.Close()
	}
	return len(m.paths.raws)
}

// SetDirectBackoffForTest changes the first wait before a background
// direct attempt, until restore.
func SetDirectBackoffForTest(d time.Duration) (restore func()) {
	old := backoffMin
	backoffMin = d
	return func() { backoffMin = old }
}
