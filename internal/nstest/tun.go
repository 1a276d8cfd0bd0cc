package nstest

import (
	"fmt"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TunOfType creates a tun device in ns whose link type (dev->type) is typ:
// tun lets its owner set any ARPHRD type (TUNSETLINK) while the device is
// down, which gives the test links of types this machine has no driver for.
// The device lives until the test ends.
func TunOfType(t testing.TB, ns *NS, name string, typ uint16) {
	t.Helper()
	var fd int
	err := ns.Do(func() error {
		var err error
		if fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		var req struct {
			name  [unix.IFNAMSIZ]byte
			flags uint16
			_     [22]byte
		}
		copy(req.name[:], name)
		req.flags = unix.IFF_TUN | unix.IFF_NO_PI
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); e != 0 {
			return fmt.Errorf("TUNSETIFF: %w", e)
		}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETLINK, uintptr(typ)); e != 0 {
			return fmt.Errorf("TUNSETLINK %d: %w", typ, e)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("tun %s of type %d: %v", name, typ, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if out, err := ns.Run("ip", "link", "set", name, "up"); err != nil {
		t.Fatalf("ip link set %s up: %v %s", name, err, out)
	}
}
