package containertest

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/xdpguard/xdpguard/internal/deploytest"
	"github.com/xdpguard/xdpguard/internal/lab"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
	"github.com/xdpguard/xdpguard/loader"
)

// podLab is a lab whose reflector plays the node the pod runs on.
type podLab struct {
	*lab.Lab
	node   *node
	guard  lab.Guard // xdpguard on the host, reading the pod's pins where the host has them
	inject *nstest.Injector
	frame  []byte         // a spoofed memcached get from the victim to refl0, as the router hands it over
	addr   netip.AddrPort // the node's address and the metrics port: where the kubelet probes
}

func newPodLab(t *testing.T) *podLab {
	t.Helper()
	l := lab.New(t)
	// The node's BPF filesystem at /sys/fs/bpf, as systemd mounts it at
	// boot (the DaemonSet mounts the host's; the pod never mounts one).
	if err := loader.EnsureBPFFS("/sys/fs/bpf"); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, l.Reflector.Path(), []string{lab.Refl0If})
	bin := filepath.Join(repoRoot(t), "bin", "image", "xdpguard") // the image's binary, from make image
	p := &podLab{Lab: l, node: n, guard: lab.Guard{Bin: bin, PinPath: n.hostPin, NS: l.Reflector}}
	// Registered before any pod, so it runs after the pods are gone: what
	// on_stop: keep left, the operator's clean-up (README) removes.
	t.Cleanup(func() {
		if _, err := os.Stat(n.hostPin); err == nil {
			if out, err := p.guard.Run("detach", "--all"); err != nil {
				t.Errorf("cleanup: detach --all: %v %s", err, out)
			}
		}
		if err := os.RemoveAll(n.hostPin); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	_, port, err := deploytest.MetricsListen(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.addr = netip.AddrPortFrom(lab.V4.Refl0, uint16(port))
	p.inject = nstest.NewInjector(t, l.Router, lab.RouterRefl0If)
	p.frame, err = testpkt.MemcachedRequest(lab.V4.Victim, lab.V4.Refl0, lab.VictimPort, "get k\r\n").Frame()
	if err != nil {
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
	copy(p.frame[0:6], reflMAC)
	copy(p.frame[6:12], routerMAC)
	if err := l.ResolveNeighbours(); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *podLab) gets(t *testing.T) uint64 {
	t.Helper()
	st, err := p.MemcachedStats()
	if err != nil {
		t.Fatal(err)
	}
	return st["cmd_get"]
}

func (p *podLab) send(t *testing.T, count int) {
	t.Helper()
	for range count {
		if err := p.inject.Send(p.frame); err != nil {
			t.Fatal(err)
		}
	}
}

// drops is xdpguard's drop_request count at refl0's XDP hook, read on the
// host from the pins: the pod need not be running.
func (p *podLab) drops() (uint64, error) {
	st, err := p.guard.Stats()
	if err != nil {
		return 0, err
	}
	return st.Packets(lab.Refl0If, "xdp", "drop_request"), nil
}

// vethDrops counts frames the veth pair dropped before refl0's XDP program
// saw them (the receiving ring full under a flood).
func (p *podLab) vethDrops() (uint64, error) {
	r, err := p.Router.LinkStats(lab.RouterRefl0If)
	if err != nil {
		return 0, err
	}
	v, err := p.Reflector.LinkStats(lab.Refl0If)
	if err != nil {
		return 0, err
	}
	return r.TxDropped + v.RxDropped, nil
}

// xdpProgram is the id of the XDP program attached to refl0, 0 for none.
func (p *podLab) xdpProgram() (uint32, error) {
	l, err := p.Reflector.Link(lab.Refl0If)
	if err != nil {
		return 0, err
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return x.ProgId, nil
	}
	return 0, nil
}

// waitDrops waits until xdpguard has dropped at least want requests.
func (p *podLab) waitDrops(t *testing.T, want uint64, what string) uint64 {
	t.Helper()
	var got uint64
	nstest.Eventually(t, 30*time.Second, what, func() (bool, error) {
		var err error
		got, err = p.drops()
		return err == nil && got >= want, fmt.Errorf("drop_request %d, want %d (%v)", got, want, err)
	})
	return got
}

// flood sends the frame again and again from the router's side until
// stopped, for at most limit frames or maxDur: bounded in count and time.
type flood struct {
	sent atomic.Uint64
	stop chan struct{}
	done chan struct{}
	err  error
}

func startFlood(inj *nstest.Injector, frame []byte, limit uint64, maxDur time.Duration) *flood {
	f := &flood{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		deadline := time.After(maxDur)
		for f.sent.Load() < limit {
			select {
			case <-f.stop:
				return
			case <-deadline:
				f.err = fmt.Errorf("flood ran its full %v: the test took too long", maxDur)
				return
			default:
			}
			// A burst, then a millisecond: some 30,000 frames a second,
			// a flood the two shared cores keep up with.
			for range 32 {
				if err := inj.Send(frame); err != nil {
					if errors.Is(err, syscall.ENOBUFS) {
						continue // not sent, not counted
					}
					f.err = err
					return
				}
				f.sent.Add(1)
			}
			<-time.After(time.Millisecond)
		}
		f.err = fmt.Errorf("flood reached its limit of %d frames: the test took too long", limit)
	}()
	return f
}

// end stops the flood and returns how many frames it sent.
func (f *flood) end() (uint64, error) {
	select {
	case <-f.done:
	default:
		close(f.stop)
		<-f.done
	}
	return f.sent.Load(), f.err
}

// metric returns the value of the sample name{labels} in a Prometheus text
// exposition, where labels are all the sample's labels.
func metric(exposition, name string, labels map[string]string) (float64, error) {
	sc := bufio.NewScanner(strings.NewReader(exposition))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, name+"{") {
			continue
		}
		end := strings.LastIndex(line, "}")
		if end < 0 {
			continue
		}
		got := map[string]string{}
		for _, kv := range splitLabels(line[len(name)+1 : end]) {
			k, v, _ := strings.Cut(kv, "=")
			uq, err := strconv.Unquote(v)
			if err != nil {
				return 0, fmt.Errorf("%s: label %s: %w", line, kv, err)
			}
			got[k] = uq
		}
		if len(got) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			match = match && got[k] == v
		}
		if match {
			fields := strings.Fields(line[end+1:])
			if len(fields) == 0 {
				return 0, fmt.Errorf("%s: no value", line)
			}
			return strconv.ParseFloat(fields[0], 64)
		}
	}
	return 0, fmt.Errorf("no sample %s%v", name, labels)
}

// splitLabels splits `a="x",b="y,z"` at the commas between labels.
func splitLabels(s string) []string {
	var out []string
	inQuote, escaped, start := false, false, 0
	for i, r := range s {
		switch {
		case escaped:
			escaped = false
		case r == '\\':
			escaped = true
		case r == '"':
			inQuote = !inQuote
		case r == ',' && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// TestDaemonSetPod runs the DaemonSet's pod on a lab node, the way the
// kubelet runs it, and shows what the deployment promises: requests to the
// node's memcached are dropped; a rolling update (the pod stopped with
// SIGTERM, a new one started) under a flood of requests lets none through,
// with no agent at all in between; the new pod adopts what the old one
// attached; /metrics answers on the node's address with the kernel's
// counters.
func TestDaemonSetPod(t *testing.T) {
	requireImage(t)
	p := newPodLab(t)
	grace := *p.node.m.DaemonSet.Spec.Template.Spec.TerminationGracePeriodSeconds

	// Without xdpguard the requests reach memcached: the traffic works, so
	// what follows cannot pass because it was broken.
	base := p.gets(t)
	p.send(t, 10)
	nstest.Eventually(t, 10*time.Second, "unprotected requests to reach memcached", func() (bool, error) {
		g := p.gets(t)
		return g >= base+10, fmt.Errorf("cmd_get +%d, want +10", g-base)
	})

	a := startPod(t, p.node)
	waitReady(t, p.Reflector, p.addr, a, p.node, 60*time.Second)
	progA, err := p.xdpProgram()
	if err != nil || progA == 0 {
		t.Fatalf("pod ready but no XDP program on %s (%v)\n%s", lab.Refl0If, err, a.logs())
	}
	if _, err := os.Stat(p.node.hostPin); err != nil {
		t.Fatalf("the pod's pins are not in the host's bpffs at %s: %v", p.node.hostPin, err)
	}

	// The footprint the DaemonSet's resources are set from: the pod that
	// created the maps carries them in its memory cgroup.
	memLimit := p.node.c.Resources.Limits.Memory().Value()
	reportMemory := func(who string, pd *pod) {
		cur, peak, rss, err := pd.memory()
		if err != nil {
			t.Errorf("memory of %s: %v", who, err)
			return
		}
		t.Logf("memory of %s: cgroup %.1f MiB now, %.1f MiB peak (BPF maps it created included); agent peak RSS %.1f MiB; limit %d MiB",
			who, float64(cur)/(1<<20), float64(peak)/(1<<20), float64(rss)/(1<<20), memLimit>>20)
		if peak > uint64(memLimit)/2 {
			t.Errorf("%s peaked at %d bytes, over half its limit %d: raise the DaemonSet's limit", who, peak, memLimit)
		}
	}
	reportMemory("the first pod", a)

	t.Run("requests dropped", func(t *testing.T) {
		base, d0 := p.gets(t), p.waitDrops(t, 0, "stats")
		p.send(t, 100)
		p.waitDrops(t, d0+100, "100 requests dropped")
		if g := p.gets(t); g != base {
			t.Errorf("memcached cmd_get +%d with the pod running", g-base)
		}
	})

	t.Run("kubectl exec status", func(t *testing.T) {
		out, err := a.exec("xdpguard", "status")
		if err != nil || !strings.Contains(out, lab.Refl0If) {
			t.Errorf("xdpguard status in the pod (XDPGUARD_PIN_PATH): %v\n%s", err, out)
		}
	})

	t.Run("rolling update under flood", func(t *testing.T) {
		base := p.gets(t)
		d0, err := p.drops()
		if err != nil {
			t.Fatal(err)
		}
		v0, err := p.vethDrops()
		if err != nil {
			t.Fatal(err)
		}
		f := startFlood(p.inject, p.frame, 20_000_000, 5*time.Minute)
		defer f.end()
		d := p.waitDrops(t, d0+1000, "the flood to reach refl0 with the old pod running")

		reportMemory("the first pod under flood", a)
		code, err := a.stop(grace)
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 {
			t.Errorf("old pod exited %d on SIGTERM, want 0\n%s", code, a.logs())
		}
		if prog, err := p.xdpProgram(); err != nil || prog != progA {
			t.Fatalf("after the old pod stopped, refl0's XDP program is %d (%v), want %d still attached", prog, err, progA)
		}
		// No agent at all now: the flood goes on, and is dropped.
		d = p.waitDrops(t, d+1000, "the flood to be dropped with no pod running")

		b := startPod(t, p.node)
		waitReady(t, p.Reflector, p.addr, b, p.node, 60*time.Second)
		p.waitDrops(t, d+1000, "the flood to be dropped with the new pod running")
		sent, err := f.end()
		if err != nil {
			t.Fatal(err)
		}
		reportMemory("the adopting pod", b)

		// Every frame the flood sent is accounted for as dropped, by
		// xdpguard or by the veth before it, and memcached saw none.
		var drops, veth uint64
		err = nstest.WaitFor(10*time.Second, "every flood frame dropped by xdpguard or the veth", func() (bool, error) {
			d, err1 := p.drops()
			v, err2 := p.vethDrops()
			if err := errors.Join(err1, err2); err != nil {
				return false, err
			}
			drops, veth = d-d0, v-v0
			return drops+veth == sent, fmt.Errorf("sent %d, xdpguard dropped %d, the veth %d", sent, drops, veth)
		})
		if err != nil {
			t.Error(err)
		}
		if g := p.gets(t); g != base {
			t.Errorf("memcached cmd_get +%d through the rolling update", g-base)
		}
		t.Logf("rolling update under flood: %d requests sent, %d dropped by xdpguard, %d by the veth, 0 reached memcached", sent, drops, veth)
		if prog, err := p.xdpProgram(); err != nil || prog != progA {
			t.Errorf("the new pod replaced XDP program %d with %d (%v): it must adopt what is attached", progA, prog, err)
		}

		t.Run("metrics", func(t *testing.T) {
			code, body, err := httpGet(p.Reflector, p.addr, "/metrics")
			if err != nil || code != http.StatusOK {
				t.Fatalf("GET /metrics on %s: %d %v", p.addr, code, err)
			}
			want, err := p.drops()
			if err != nil {
				t.Fatal(err)
			}
			got, err := metric(body, "xdpguard_packets_total", map[string]string{"interface": lab.Refl0If, "hook": "xdp", "reason": "drop_request"})
			if err != nil {
				t.Fatal(err)
			}
			if uint64(got) != want {
				t.Errorf("/metrics says %v drop_request packets, stats --json %d", got, want)
			}
			for _, path := range []string{"/healthz", "/readyz"} {
				if code, body, err := httpGet(p.Reflector, p.addr, path); err != nil || code != http.StatusOK {
					t.Errorf("GET %s: %d %q %v", path, code, body, err)
				}
			}
			// 0.0.0.0 in Go listens on both families: probes on an
			// IPv6 node address work too.
			v6 := netip.AddrPortFrom(lab.V6.Refl0, p.addr.Port())
			if code, _, err := httpGet(p.Reflector, v6, "/healthz"); err != nil || code != http.StatusOK {
				t.Errorf("GET /healthz on %s: %d %v", v6, code, err)
			}
		})
	})
}

// without returns caps less one.
func without(caps []corev1.Capability, drop corev1.Capability) []corev1.Capability {
	var out []corev1.Capability
	for _, c := range caps {
		if c != drop {
			out = append(out, c)
		}
	}
	return out
}

// waitLog waits until the pod's log has s, or the pod has exited.
func waitLog(t *testing.T, p *pod, s string) string {
	t.Helper()
	var logs string
	nstest.Eventually(t, 30*time.Second, p.name+" to log "+strconv.Quote(s), func() (bool, error) {
		logs = p.logs()
		return strings.Contains(logs, s), fmt.Errorf("log so far:\n%s", logs)
	})
	return logs
}

// SYS_ADMIN and NET_ADMIN are each needed, and a pod without one fails
// visibly while protection stays as it was.
//
// SYS_ADMIN, for two reasons. The kernel's: a first pod attaches with BPF,
// NET_ADMIN and PERFMON alone, but the pod that replaces it must open the
// running program by id (BPF_PROG_GET_FD_BY_ID) to adopt it, which the
// kernel allows only with CAP_SYS_ADMIN; shown without the runtime's
// seccomp profile, so that only the kernel decides. The runtime's: the
// default seccomp profile of podman here (containers-common 0.50, Debian
// 12) allows bpf() only with CAP_SYS_ADMIN, so there even the first pod
// fails; newer profiles (containerd's RuntimeDefault) also allow it with
// CAP_BPF. NET_ADMIN: nothing attaches.
//
// BPF and PERFMON are what the kernel checks without SYS_ADMIN (PERFMON:
// the verifier refuses the TC program's pointer arithmetic without it);
// while SYS_ADMIN is granted it stands in for both, so removing either
// alone changes nothing and is not tested here.
func TestCapabilitiesNeeded(t *testing.T) {
	requireImage(t)
	t.Run("SYS_ADMIN kernel: adoption", func(t *testing.T) {
		p := newPodLab(t)
		p.node.caps = without(p.node.caps, "SYS_ADMIN")
		p.node.unconfined = true
		a := startPod(t, p.node)
		if err := nstest.WaitFor(30*time.Second, "the first pod to attach without SYS_ADMIN", func() (bool, error) {
			id, err := p.xdpProgram()
			return id != 0, err
		}); err != nil {
			t.Fatalf("%v\n%s", err, a.logs())
		}
		prog, _ := p.xdpProgram()
		if _, err := a.stop(30); err != nil {
			t.Fatal(err)
		}
		b := startPod(t, p.node)
		logs := waitLog(t, b, "operation not permitted")
		t.Logf("the replacing pod without SYS_ADMIN:\n%s", logs)
		if now, err := p.xdpProgram(); err != nil || now != prog {
			t.Errorf("refl0's XDP program is %d (%v), want %d still in force", now, err, prog)
		}
	})
	t.Run("SYS_ADMIN runtime seccomp: first pod", func(t *testing.T) {
		p := newPodLab(t)
		p.node.caps = without(p.node.caps, "SYS_ADMIN")
		a := startPod(t, p.node)
		logs := waitLog(t, a, "operation not permitted")
		t.Logf("a pod without SYS_ADMIN under podman's default seccomp profile:\n%s", logs)
		if id, err := p.xdpProgram(); err != nil || id != 0 {
			t.Errorf("refl0 has XDP program %d (%v)", id, err)
		}
	})
	t.Run("NET_ADMIN", func(t *testing.T) {
		p := newPodLab(t)
		p.node.caps = without(p.node.caps, "NET_ADMIN")
		a := startPod(t, p.node)
		logs := waitLog(t, a, "insufficient privileges")
		t.Logf("a pod without NET_ADMIN:\n%s", logs)
		if id, err := p.xdpProgram(); err != nil || id != 0 {
			t.Errorf("refl0 has XDP program %d (%v) from a pod without NET_ADMIN", id, err)
		}
	})
}

// The README's removal: on_stop: detach in the config, and the pod, told to
// stop, takes everything away within the DaemonSet's grace period.
func TestRemovalWithOnStopDetach(t *testing.T) {
	requireImage(t)
	p := newPodLab(t)
	file := filepath.Join(p.node.configDir, deploytest.ConfigKey)
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(raw), "\non_stop: keep\n", "\non_stop: detach\n", 1)
	if edited == string(raw) {
		t.Fatal("the config has no line `on_stop: keep` for the README's removal to change")
	}
	if err := os.WriteFile(file, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startPod(t, p.node)
	nstest.Eventually(t, 30*time.Second, "the pod to attach", func() (bool, error) {
		id, err := p.xdpProgram()
		return id != 0, err
	})
	grace := *p.node.m.DaemonSet.Spec.Template.Spec.TerminationGracePeriodSeconds
	start := time.Now()
	code, err := a.stop(grace)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if code != 0 || took >= time.Duration(grace)*time.Second {
		t.Errorf("stop took %v and exited %d: want a clean exit within the %ds grace period\n%s", took, code, grace, a.logs())
	}
	if id, err := p.xdpProgram(); err != nil || id != 0 {
		t.Errorf("after on_stop: detach, refl0 still has XDP program %d (%v)", id, err)
	}
	entries, err := os.ReadDir(p.node.hostPin)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("pins left in %s after on_stop: detach: %v", p.node.hostPin, entries)
	}
	t.Logf("on_stop: detach: pod stopped in %v, nothing left attached or pinned", took.Round(time.Millisecond))
}

// A node without a BPF filesystem at /sys/fs/bpf (its sysfs directory is
// all the hostPath finds): the pod fails saying so and attaches nothing. It
// holds SYS_ADMIN, yet does not mount a BPF filesystem of its own, which
// would take the pins with it when it stops (ingress-node-firewall#222):
// the DaemonSet mounts the host's outside /sys/fs/bpf, where the agent never
// mounts one.
func TestNodeWithoutBPFFS(t *testing.T) {
	requireImage(t)
	p := newPodLab(t)
	p.node.hostBPFFS = t.TempDir() // a plain directory, as /sys/fs/bpf is without bpffs
	a := startPod(t, p.node)
	logs := waitLog(t, a, "not on a BPF filesystem")
	t.Logf("a pod on a node without bpffs:\n%s", logs)
	if id, err := p.xdpProgram(); err != nil || id != 0 {
		t.Errorf("refl0 has XDP program %d (%v) from a pod with no BPF filesystem to pin in", id, err)
	}
	nstest.Eventually(t, 30*time.Second, "the pod to exit", func() (bool, error) {
		ok, err := a.running()
		return err == nil && !ok, err
	})
	entries, err := os.ReadDir(p.node.hostBPFFS)
	if err != nil || len(entries) != 0 {
		t.Errorf("the node's directory has %v (%v): the pod pinned there without a BPF filesystem", entries, err)
	}
}

// A config change the agent refuses, rolled out: the new pod fails (the
// rollout stops there) and the node keeps the protection the old pod left.
func TestRejectedConfigKeepsProtection(t *testing.T) {
	requireImage(t)
	p := newPodLab(t)
	a := startPod(t, p.node)
	waitReady(t, p.Reflector, p.addr, a, p.node, 60*time.Second)
	prog, err := p.xdpProgram()
	if err != nil || prog == 0 {
		t.Fatalf("no XDP program on %s (%v)", lab.Refl0If, err)
	}
	if _, err := a.stop(*p.node.m.DaemonSet.Spec.Template.Spec.TerminationGracePeriodSeconds); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(p.node.configDir, deploytest.ConfigKey)
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(raw), "\nmode: enforce\n", "\nmode: enforcing\n", 1)
	if bad == string(raw) {
		t.Fatal("the config has no line `mode: enforce` to break")
	}
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	b := startPod(t, p.node)
	nstest.Eventually(t, 30*time.Second, "the pod with the refused config to exit", func() (bool, error) {
		ok, err := b.running()
		return err == nil && !ok, err
	})
	logs := b.logs()
	if !strings.Contains(logs, deploytest.ConfigMount+"/"+deploytest.ConfigKey+":") || !strings.Contains(logs, "mode") {
		t.Errorf("the refusal does not name the file, line and field:\n%s", logs)
	}
	if now, err := p.xdpProgram(); err != nil || now != prog {
		t.Fatalf("refl0's XDP program is %d (%v), want %d still in force", now, err, prog)
	}
	d0, err := p.drops()
	if err != nil {
		t.Fatal(err)
	}
	base := p.gets(t)
	p.send(t, 50)
	p.waitDrops(t, d0+50, "requests dropped with no pod running and a refused config")
	if g := p.gets(t); g != base {
		t.Errorf("memcached cmd_get +%d", g-base)
	}
	t.Logf("refused config: the new pod exited; protection stays:\n%s", logs)
}
