// Package sdnotify tells systemd how a Type=notify service is doing, over
// the datagram socket systemd names in $NOTIFY_SOCKET (sd_notify(3)), without
// a dependency on libsystemd.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Messages the agent sends (sd_notify(3)).
const (
	Ready     = "READY=1"
	Reloading = "RELOADING=1"
	Stopping  = "STOPPING=1"
)

// Notify sends state (newline-separated KEY=VALUE lines) to systemd. Without
// $NOTIFY_SOCKET (not run by systemd, or not Type=notify) it does nothing.
func Notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	// A leading '@' names a socket in the abstract namespace.
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %q: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %q: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	return nil
}
