package agent_test

import (
	"fmt"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/internal/lab"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// TestKillAndRestartUnderFlood: memcached requests flood the reflector's
// protected interface while the agent is killed with SIGKILL and started
// again. Not one reaches the real memcached; the restarted agent adopts
// the running programs (same ids, no change logged); every frame sent is
// counted dropped.
func TestKillAndRestartUnderFlood(t *testing.T) {
	t.Parallel()
	l := lab.New(t)
	h := &host{ns: l.Reflector, dir: t.TempDir(), pin: "/sys/fs/bpf/xgtest-agent-" + randHex(4)}
	t.Cleanup(func() {
		if _, err := os.Stat(h.pin); err == nil {
			if out, err := h.ns.Run(xdpguardBin, "--pin-path", h.pin, "detach", "--all"); err != nil {
				t.Errorf("cleanup: %v %s", err, out)
			}
		}
		_ = os.RemoveAll(h.pin)
	})
	if err := l.ResolveNeighbours(); err != nil {
		t.Fatal(err)
	}
	reflMAC, err := l.Reflector.HardwareAddr(lab.Refl0If)
	if err != nil {
		t.Fatal(err)
	}
	routerMAC, err := l.Router.HardwareAddr(lab.RouterRefl0If)
	if err != nil {
		t.Fatal(err)
	}
	frame, err := testpkt.MemcachedRequest(lab.V4.Victim, lab.V4.Refl0, lab.VictimPort, "get k\r\n").Frame()
	if err != nil {
		t.Fatal(err)
	}
	copy(frame[0:6], reflMAC)
	copy(frame[6:12], routerMAC)
	inj := nstest.NewInjector(t, l.Router, lab.RouterRefl0If)
	gets := func() uint64 {
		st, err := l.MemcachedStats()
		if err != nil {
			t.Fatal(err)
		}
		return st["cmd_get"]
	}

	// The oracle works: unprotected, a request reaches memcached.
	base := gets()
	if err := inj.Send(frame); err != nil {
		t.Fatal(err)
	}
	nstest.Eventually(t, 5*time.Second, "an unprotected request to reach memcached", func() (bool, error) {
		return gets() == base+1, nil
	})
	base++

	cfg := h.writeConfig(t, "interfaces:\n  include: [\"refl*\"]\n  egress: true\n")
	first := h.startAgent(t, cfg)
	st := h.status(t)
	progs := st.xdp()
	if progs[lab.Refl0If] == 0 || progs[lab.Refl1If] == 0 {
		t.Fatalf("refl0 and refl1 not protected: %+v", st.Attachments)
	}

	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if inj.Send(frame) == nil {
				sent.Add(1)
			}
		}
	}()
	stopFlood := func() {
		select {
		case <-stop:
		default:
			close(stop)
			wg.Wait()
		}
	}
	defer stopFlood()
	flooded := func(n int64) {
		t.Helper()
		from := sent.Load()
		nstest.Eventually(t, 10*time.Second, fmt.Sprintf("%d more flood frames", n), func() (bool, error) {
			return sent.Load() >= from+n, nil
		})
	}

	flooded(2000)
	first.stop(t, syscall.SIGKILL)
	flooded(2000) // no agent at all
	if h.kernelXDP(t, lab.Refl0If) != progs[lab.Refl0If] {
		t.Fatalf("after SIGKILL refl0 runs XDP program %d, want %d still", h.kernelXDP(t, lab.Refl0If), progs[lab.Refl0If])
	}
	second := h.startAgent(t, cfg)
	flooded(2000)
	stopFlood()

	after := h.status(t)
	if !reflect.DeepEqual(after.Attachments, st.Attachments) {
		t.Errorf("the restarted agent changed the attachments:\nbefore %+v\nafter  %+v", st.Attachments, after.Attachments)
	}
	if n := second.log.count(`"what":`); n != 0 {
		t.Errorf("the restarted agent logged %d changes; adopting must change nothing:\n%v", n, second.log.all())
	}
	n := uint64(sent.Load())
	g := lab.Guard{Bin: xdpguardBin, PinPath: h.pin, NS: l.Reflector}
	var drops uint64
	nstest.Eventually(t, 10*time.Second, "every flood frame counted dropped", func() (bool, error) {
		s, err := g.Stats()
		if err != nil {
			return false, err
		}
		drops = s.Packets(lab.Refl0If, "xdp", "drop_request")
		return drops == n, fmt.Errorf("drop_request %d, sent %d", drops, n)
	})
	if got := gets(); got != base {
		t.Fatalf("%d flood requests reached memcached through kill and restart (of %d sent); want none", got-base, n)
	}
	t.Logf("%d requests flooded refl0 through SIGKILL and restart: all dropped, none reached memcached", n)
}

// TestOnStop: SIGTERM with on_stop: keep leaves protection in place; with
// on_stop: detach it removes everything, pin path included.
func TestOnStop(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.veth(t, "xs0")
	cfg := h.writeConfig(t, "interfaces:\n  include: [xs0]\n  egress: true\non_stop: keep\n")
	a := h.startAgent(t, cfg)
	prog := h.kernelXDP(t, "xs0")
	if prog == 0 {
		t.Fatal("xs0 not protected")
	}
	a.stop(t, syscall.SIGTERM)
	if got := h.kernelXDP(t, "xs0"); got != prog {
		t.Fatalf("on_stop keep: after SIGTERM xs0 runs %d, want %d", got, prog)
	}

	cfg = h.writeConfig(t, "interfaces:\n  include: [xs0]\n  egress: true\non_stop: detach\n")
	a = h.startAgent(t, cfg)
	if got := h.kernelXDP(t, "xs0"); got != prog {
		t.Fatalf("a new agent replaced program %d with %d instead of adopting it", prog, got)
	}
	a.stop(t, syscall.SIGTERM)
	if got := h.kernelXDP(t, "xs0"); got != 0 {
		t.Errorf("on_stop detach: xs0 still runs XDP program %d", got)
	}
	if _, err := os.Stat(h.pin); !os.IsNotExist(err) {
		t.Errorf("on_stop detach left %s (%v)", h.pin, err)
	}
	if n := a.log.count(`"what":"detached"`, `"interface":"xs0"`, "on_stop: detach"); n != 1 {
		t.Errorf("want one log line saying xs0 was detached because of on_stop, got %d", n)
	}
}
