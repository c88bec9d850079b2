//go:build !linux

package relay

import (
	"net"
	"time"
)

// TCPRTT is 0: the round trip time is read from Linux's TCP_INFO only.
func TCPRTT(*net.TCPConn) time.Duration { return 0 }
