package relay

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// TCPRTT is c's smoothed round trip time as the kernel measures it
// (TCP_INFO's srtt), 0 if unknown.
func TCPRTT(c *net.TCPConn) time.Duration {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var info *unix.TCPInfo
	if err := raw.Control(func(fd uintptr) {
		info, _ = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || info == nil {
		return 0
	}
	return time.Duration(info.Rtt) * time.Microsecond
}
