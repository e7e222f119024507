// Package sdnotify speaks systemd's notify protocol (READY=1, WATCHDOG=1,
// STATUS=...) over $NOTIFY_SOCKET. Without that variable every call is a
// no-op, so the daemon runs the same under systemd and by hand.
package sdnotify

import (
	"net"
	"os"
	"strconv"
	"time"
)

// Notify sends state (e.g. "READY=1") to systemd. It reports whether a
// notify socket was configured.
func Notify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // abstract namespace
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return true, err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return true, err
}

// WatchdogInterval returns how often to send WATCHDOG=1 (half of
// $WATCHDOG_USEC), or 0 when the watchdog is off or meant for another pid.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}
