package nstest

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// Injector writes raw Ethernet frames into one end of a veth pair from
// inside its namespace; each frame arrives at the peer end as if it came
// off the wire, and so meets an XDP program attached there.
type Injector struct {
	fd      int
	ifindex int
	ifname  string
	ns      string
}

// NewInjector opens an AF_PACKET socket inside ns bound to ifname. It is
// closed in t.Cleanup.
func NewInjector(t testing.TB, ns *NS, ifname string) *Injector {
	t.Helper()
	inj, err := OpenInjector(ns, ifname)
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	t.Cleanup(func() { _ = inj.Close() })
	return inj
}

// OpenInjector is NewInjector for callers outside tests; Close it.
func OpenInjector(ns *NS, ifname string) (*Injector, error) {
	l, err := ns.Link(ifname)
	if err != nil {
		return nil, err
	}
	inj := &Injector{fd: -1, ifindex: l.Attrs().Index, ifname: ifname, ns: ns.Name()}
	// The socket belongs to the namespace it is created in, whatever thread
	// later writes to it. Protocol 0: send only, receive nothing.
	err = ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		inj.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: inj.ifindex}); err != nil {
			return fmt.Errorf("bind to %s: %w", ifname, err)
		}
		return nil
	})
	if err != nil {
		_ = inj.Close()
		return nil, fmt.Errorf("%s: injector on %s: %w", ns.Name(), ifname, err)
	}
	return inj, nil
}

// Send writes one complete Ethernet frame (destination MAC first, no FCS).
func (inj *Injector) Send(frame []byte) error {
	err := unix.Sendto(inj.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: inj.ifindex, Halen: 6})
	if err != nil {
		return fmt.Errorf("%s: send %d-byte frame on %s: %w", inj.ns, len(frame), inj.ifname, err)
	}
	return nil
}

// SendAll writes each frame in order, stopping at the first error.
func (inj *Injector) SendAll(frames ...[]byte) error {
	for _, f := range frames {
		if err := inj.Send(f); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the socket.
func (inj *Injector) Close() error {
	if inj.fd < 0 {
		return nil
	}
	err := unix.Close(inj.fd)
	inj.fd = -1
	return err
}
