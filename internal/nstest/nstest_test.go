package nstest

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestKit builds two namespaces joined by a veth pair, checks that addresses
// work both ways (ping via Command, a UDP socket opened with Do), and that
// an injected frame arrives at the peer end.
func TestKit(t *testing.T) {
	RequireRoot(t)
	a := New(t, "nst-a-")
	b := New(t, "nst-b-")
	if a.Name() == b.Name() || !Exists(a.Name()) {
		t.Fatalf("names %q %q", a.Name(), b.Name())
	}
	Veth(t, a, "va", b, "vb", 1400)
	for _, x := range []struct {
		ns           *NS
		ifname, addr string
	}{{a, "va", "10.9.0.1/24"}, {a, "va", "fd09::1/64"}, {b, "vb", "10.9.0.2/24"}, {b, "vb", "fd09::2/64"}} {
		if err := x.ns.AddAddr(x.ifname, x.addr); err != nil {
			t.Fatal(err)
		}
	}
	l, err := b.Link("vb")
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().MTU != 1400 {
		t.Errorf("peer MTU %d, want 1400", l.Attrs().MTU)
	}
	// A socket opened inside b receives what a sends to b's addresses,
	// both families (neighbour resolution included).
	for _, dst := range []string{"10.9.0.2", "fd09::2"} {
		var conn *net.UDPConn
		if err := b.Do(func() error {
			var err error
			conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(dst), Port: 9999})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := a.Do(func() error {
			c, err := net.Dial("udp", net.JoinHostPort(dst, "9999"))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("hello"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil || !bytes.Equal(buf[:n], []byte("hello")) {
			t.Fatalf("udp read from %s: %q %v", dst, buf[:n], err)
		}
	}

	// Sysctl and ReadFile see the namespace's own view.
	if err := b.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	v, err := b.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil || strings.TrimSpace(string(v)) != "1" {
		t.Fatalf("ip_forward in b: %q %v", v, err)
	}
	v, err = a.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil || strings.TrimSpace(string(v)) != "0" {
		t.Fatalf("ip_forward in a: %q %v", v, err)
	}

	// An injected frame counts as received on the peer.
	before, err := b.LinkStats("vb")
	if err != nil {
		t.Fatal(err)
	}
	inj := NewInjector(t, a, "va")
	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x88, 0xb5})
	const n0 = 5
	for range n0 {
		if err := inj.Send(frame); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, 3*time.Second, "injected frames at the peer", func() (bool, error) {
		s, err := b.LinkStats("vb")
		if err != nil {
			return false, err
		}
		got := s.RxPackets - before.RxPackets
		return got >= n0, fmt.Errorf("rx %d of %d", got, n0)
	})
}

func TestCommandAndWaitFor(t *testing.T) {
	RequireRoot(t)
	ns := New(t, "nst-c-")
	out, err := ns.Run("ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	// A fresh namespace has nothing but loopback, which New brought up.
	if lines := strings.Count(strings.TrimSpace(out), "\n") + 1; lines != 1 || !strings.Contains(out, "lo:") || !strings.Contains(out, "UP") {
		t.Fatalf("links in new namespace: %s", out)
	}
	start := time.Now()
	if err := WaitFor(20*time.Millisecond, "never", func() (bool, error) { return false, nil }); err == nil {
		t.Fatal("WaitFor on a false condition returned nil")
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("WaitFor overran its deadline")
	}
}
