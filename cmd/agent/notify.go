package main

import (
	"fmt"
	"net"
	"os"

	"go.uber.org/zap"
)

// notifySocket is where systemd (Type=notify) listens for the service's
// state: a unixgram socket, "@name" for an abstract one (net handles the
// "@"). The protocol is sd_notify(3): newline-separated VAR=VALUE
// assignments in one datagram.
const notifySocket = "NOTIFY_SOCKET"

// sdNotify sends state to the service manager when one asked for it
// ($NOTIFY_SOCKET set); it does nothing otherwise.
func sdNotify(state string) error {
	path := os.Getenv(notifySocket)
	if path == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify service manager at %s: %w", path, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify service manager at %s: %w", path, err)
	}
	return nil
}

// notifyState tells the service manager state, logging (not failing on)
// an error: the service manager times the unit out if READY=1 never
// arrives, which says more than the agent stopping would.
func notifyState(log *zap.Logger, state string) {
	if err := sdNotify(state); err != nil {
		log.Warn("could not tell the service manager our state", zap.String("state", state), zap.Error(err))
	}
}
