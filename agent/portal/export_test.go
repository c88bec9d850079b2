package portal

import "time"

// SetWarmWaitForTest changes how long outlets wait for the next open
// request on a warm channel, until restore.
func SetWarmWaitForTest(d time.Duration) (restore func()) {
	old := warmWait
	warmWait = d
	return func() { warmWait = old }
}
