package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpguard/xdpguard/internal/lab"
	"github.com/xdpguard/xdpguard/internal/nstest"
)

// echo6 sends one ICMPv6 echo request of size payload bytes from ns to dst
// and waits for its reply; the kernel fragments a request larger than the
// link MTU, and the reply comes back fragmented too. It returns the reply's
// payload.
func echo6(ns *nstest.NS, dst netip.Addr, payload []byte, id uint16) ([]byte, error) {
	var got []byte
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		if err != nil {
			return fmt.Errorf("raw ICMPv6 socket: %w", err)
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval((5 * time.Second).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		req := make([]byte, 8, 8+len(payload))
		req[0] = 128 // echo request; the kernel fills in the checksum
		binary.BigEndian.PutUint16(req[4:], id)
		binary.BigEndian.PutUint16(req[6:], 1)
		req = append(req, payload...)
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrInet6{Addr: dst.As16()}); err != nil {
			return fmt.Errorf("send echo request: %w", err)
		}
		buf := make([]byte, 65536)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return fmt.Errorf("wait for the echo reply: %w", err)
			}
			if n >= 8 && buf[0] == 129 && binary.BigEndian.Uint16(buf[4:]) == id {
				got = append([]byte(nil), buf[8:n]...)
				return nil
			}
		}
	})
	return got, err
}

// TestFragmentedICMPv6PassesStrict: every IPv6 later fragment now goes
// through the fragment table whatever it claims (issue 9, item 2), so the
// verdict of an ICMPv6 first fragment must be recorded for its later
// fragments to pass, at ingress and at egress, even with `fragments strict`,
// which drops later fragments whose first fragment was not seen.
func TestFragmentedICMPv6PassesStrict(t *testing.T) {
	e := newEnv(t)
	payload := make([]byte, 3000) // three fragments on the 1500-byte links
	_, _ = rand.Read(payload)
	got, err := echo6(e.Attacker, v6refl, payload, 0x5a5a)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("fragmented echo without xdpguard: %d bytes back, %v", len(got), err)
	}

	run(t, e.guard, "attach", lab.Refl0If, "--egress")
	run(t, e.guard, "fragments", "strict")
	before := stats(t, e.guard)
	got, err = echo6(e.Attacker, v6refl, payload, 0x5a5b)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("fragmented echo with xdpguard in strict mode: %d bytes back, %v", len(got), err)
	}
	after := stats(t, e.guard)
	for _, hook := range []string{"xdp", "tc"} {
		if d := after.Packets(lab.Refl0If, hook, "drop_orphan_fragment") - before.Packets(lab.Refl0If, hook, "drop_orphan_fragment"); d != 0 {
			t.Errorf("%s: %d later fragments dropped as orphans", hook, d)
		}
		// At least the three fragments of the request (xdp) or the
		// reply (tc) passed.
		if d := after.Packets(lab.Refl0If, hook, "pass") - before.Packets(lab.Refl0If, hook, "pass"); d < 3 {
			t.Errorf("%s: %d packets passed, want the 3 fragments at least", hook, d)
		}
	}
}
