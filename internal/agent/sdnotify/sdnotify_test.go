package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestNotify reads what Notify sends the way systemd does: from a datagram
// socket named by $NOTIFY_SOCKET, path or abstract.
func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		name := filepath.Join(t.TempDir(), "notify.sock")
		env := name
		if abstract {
			name = "\x00xdpguard-sdnotify-test-" + filepath.Base(t.TempDir())
			env = "@" + name[1:]
		}
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("NOTIFY_SOCKET", env)
		if err := Notify(Ready + "\nSTATUS=protecting 2 interfaces"); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); got != "READY=1\nSTATUS=protecting 2 interfaces" {
			t.Errorf("abstract=%v: systemd got %q", abstract, got)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify(Ready); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want nothing done", err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent"))
	if err := Notify(Ready); err == nil {
		t.Error("a socket that is not there: no error")
	}
}
