package agent_test

import (
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// attackLines are the agent's JSON log lines whose msg is msg.
func (a *agentProc) attackLines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range a.log.all() {
		if !strings.Contains(l, `"msg":"`+msg+`"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("agent log line is not JSON: %v: %s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// TestAttackEvents: the real agent process, one flood of memcached requests
// from two spoofed sources (3:1) into a protected veth at about 2000
// packets/s (threshold 300 pps): the agent logs exactly one "attack
// started" and one "attack ended" for it, the started and ongoing lines
// naming both sources with their shares from the kernel's drop samples,
// the end counting exactly the packets and bytes the flood sent (all
// dropped, as the kernel's counters say too), and xdpguard_attack_active
// is 1 during the attack and 0 after it.
func TestAttackEvents(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.veth(t, "xk0")
	const listen = "127.0.0.1:9477"
	cfg := h.writeConfig(t, "interfaces:\n  include: [xk0]\nmetrics:\n  listen: \""+listen+"\"\n"+
		"attacks:\n  threshold_pps: 300\n  min_duration: 1s\n  quiet_period: 3s\n  update_every: 2s\n")
	a := h.startAgent(t, cfg)
	if !h.status(t).has("xk0", "xdp") {
		t.Fatal("xk0 not protected")
	}
	scrape := func(series string) (float64, bool) {
		t.Helper()
		code, body, err := get(h.ns, "http://"+listen+"/metrics")
		if err != nil || code != 200 {
			t.Fatalf("/metrics: %d %v", code, err)
		}
		return sample(body, series)
	}

	// Drops before the monitor's first read of xk0 are no attack's.
	nstest.Eventually(t, 10*time.Second, "the attack monitor to watch xk0", func() (bool, error) {
		return a.log.count(`"msg":"attack monitor: watching interface"`, `"interface":"xk0"`) == 1, nil
	})
	mac, err := h.ns.HardwareAddr("xk0")
	if err != nil {
		t.Fatal(err)
	}
	// Three in four frames from one spoofed source, the others from
	// another: the top sources must say so.
	var frames [][]byte
	for _, src := range []string{"198.51.100.7", "198.51.100.7", "198.51.100.7", "203.0.113.9"} {
		f, err := testpkt.MemcachedRequest(netip.MustParseAddr(src), netip.MustParseAddr("192.0.2.1"), 40000, "get k\r\n").Frame()
		if err != nil {
			t.Fatal(err)
		}
		copy(f[0:6], mac)
		frames = append(frames, f)
	}
	frame := frames[0] // all are this long
	inj := nstest.NewInjector(t, h.peer, "pxk0")

	rng := rand.New(rand.NewPCG(1, 2))
	var sent atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// About 2000 frames a second: well above the threshold, and
		// light on a machine other tests share.
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for range 20 {
				// Drawn at random: the budget samples the first
				// frames of each burst, which a fixed pattern
				// would bias.
				if err := inj.Send(frames[rng.IntN(len(frames))]); err != nil {
					t.Errorf("send: %v", err)
					return
				}
				sent.Add(1)
			}
		}
	}()
	stopFlood := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopFlood()

	nstest.Eventually(t, 15*time.Second, "attack started and one attack ongoing", func() (bool, error) {
		return len(a.attackLines(t, "attack started")) == 1 && len(a.attackLines(t, "attack ongoing")) >= 1, nil
	})
	if v, ok := scrape(`xdpguard_attack_active{interface="xk0"}`); !ok || v != 1 {
		t.Errorf("during the attack xdpguard_attack_active = %v (found %v), want 1", v, ok)
	}
	stopFlood()
	n := sent.Load()
	nstest.Eventually(t, 20*time.Second, "attack ended", func() (bool, error) {
		return len(a.attackLines(t, "attack ended")) > 0, nil
	})

	starts, ends := a.attackLines(t, "attack started"), a.attackLines(t, "attack ended")
	if len(starts) != 1 || len(ends) != 1 {
		t.Fatalf("one flood: %d attack started and %d attack ended lines, want 1 and 1", len(starts), len(ends))
	}
	s, e := starts[0], ends[0]
	if s["interface"] != "xk0" || s["level"] != "WARN" || s["rate_pps"].(float64) < 300 {
		t.Errorf("attack started: %v", s)
	}
	// The samples name both sources with their shares of the flood
	// (0.75 and 0.25), within 0.1: the budget samples a few hundred of
	// the thousands dropped.
	for _, l := range append(starts, a.attackLines(t, "attack ongoing")...) {
		top, _ := l["top_sources"].([]any)
		if len(top) != 2 {
			t.Errorf("%s: top_sources %v, want 198.51.100.7 (0.75) and 203.0.113.9 (0.25)", l["msg"], l["top_sources"])
			continue
		}
		for i, want := range []struct {
			addr  string
			share float64
		}{{"198.51.100.7", 0.75}, {"203.0.113.9", 0.25}} {
			got := top[i].(map[string]any)
			if share, _ := got["share"].(float64); got["address"] != want.addr || share < want.share-0.1 || share > want.share+0.1 {
				t.Errorf("%s: top_sources[%d] = %v, want %s with a share of %.2f ± 0.1", l["msg"], i, got, want.addr, want.share)
			}
		}
	}
	if rs, _ := s["reasons_pps"].(map[string]any); len(rs) != 1 || rs["drop_request"] == nil {
		t.Errorf("attack started: reasons_pps %v, want drop_request only", s["reasons_pps"])
	}
	if e["interface"] != "xk0" || e["packets"] != float64(n) || e["bytes"] != float64(n*uint64(len(frame))) {
		t.Errorf("attack ended: packets %v bytes %v, want %d and %d (every frame sent, %d bytes each)",
			e["packets"], e["bytes"], n, n*uint64(len(frame)), len(frame))
	}
	if peak := e["peak_pps"].(float64); peak < 300 || peak > 10000 {
		t.Errorf("attack ended: peak_pps %v, want about 2000", peak)
	}
	if d := e["duration_seconds"].(float64); d < 1 || d > 60 {
		t.Errorf("attack ended: duration_seconds %v", d)
	}
	if e["since"] != s["since"] {
		t.Errorf("started since %v, ended since %v: one attack", s["since"], e["since"])
	}
	// The kernel agrees: every frame dropped as a request.
	var st struct {
		Interfaces []struct {
			Interface string `json:"interface"`
			Hook      string `json:"hook"`
			Counters  map[string]struct {
				Packets uint64 `json:"packets"`
			} `json:"counters"`
		} `json:"interfaces"`
	}
	out, err := h.ns.Command(xdpguardBin, "--pin-path", h.pin, "stats", "--json").Output()
	if err != nil {
		t.Fatalf("stats --json: %v", err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("stats --json: %v: %s", err, out)
	}
	found := false
	for _, i := range st.Interfaces {
		if i.Interface == "xk0" && i.Hook == "xdp" {
			found = true
			if got := i.Counters["drop_request"].Packets; got != n {
				t.Errorf("kernel counted %d drop_request on xk0, flood sent %d", got, n)
			}
		}
	}
	if !found {
		t.Errorf("stats --json has no xk0: %s", out)
	}
	if v, ok := scrape(`xdpguard_attack_active{interface="xk0"}`); !ok || v != 0 {
		t.Errorf("after the attack xdpguard_attack_active = %v (found %v), want 0", v, ok)
	}
	if v, ok := scrape(`xdpguard_attacks_total{interface="xk0"}`); !ok || v != 1 {
		t.Errorf("xdpguard_attacks_total = %v (found %v), want 1", v, ok)
	}
	t.Logf("flood of %d frames; the agent logged:", n)
	for _, l := range a.log.all() {
		if strings.Contains(l, `"msg":"attack `) {
			t.Log(l)
		}
	}
}
