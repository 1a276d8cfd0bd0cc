package loader

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// sampleHarness is a harness with its ring buffer open.
func sampleHarness(t *testing.T, l3 bool, rate uint32) (*harness, *SampleReader) {
	t.Helper()
	h := newHarness(t)
	h.l3 = l3
	if err := h.m.SetSampleRate(rate); err != nil {
		t.Fatal(err)
	}
	rd, err := h.m.OpenSamples()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return h, rd
}

// drainSamples reads every sample already on the ring buffer.
func drainSamples(t *testing.T, rd *SampleReader) []Sample {
	t.Helper()
	var out []Sample
	for {
		rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
		s, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("read sample: %v", err)
		}
		out = append(out, s)
	}
}

func hookName(l3 bool, h Hook) string {
	if l3 {
		return h.String() + "_l3"
	}
	return h.String()
}

// A sampled drop is exactly one event, with the fields of the dropped frame,
// at both hooks and both frame kinds; a passed frame is none.
func TestSampleOneDrop(t *testing.T) {
	src, dst := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("192.0.2.1")
	src6, dst6 := netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("2001:db8::1")
	netns, err := CurrentNetns()
	if err != nil {
		t.Fatal(err)
	}
	for _, l3 := range []bool{false, true} {
		for _, hook := range []Hook{HookXDP, HookTC} {
			for _, fam := range []struct {
				src, dst netip.Addr
				frame    []byte
			}{
				{src, dst, fr(req4(src, dst))},
				{src6, dst6, fr(req6(src6, dst6))},
			} {
				t.Run(hookName(l3, hook)+"/"+fam.src.String(), func(t *testing.T) {
					h, rd := sampleHarness(t, l3, 100)
					frame := fam.frame
					if l3 {
						frame = frame[ethHLen:]
					}
					pass := fr(req4(src, netip.MustParseAddr("192.0.2.9")))
					pass = patchPort(pass, DefaultPort+1)
					if l3 {
						pass = pass[ethHLen:]
					}
					if _, r, err := h.run(hook, pass, true); err != nil || r != ReasonPass {
						t.Fatalf("pass frame: counted %s, err %v", r, err)
					}
					if _, r, err := h.run(hook, frame, true); err != nil || r != ReasonDropRequest {
						t.Fatalf("drop frame: counted %s, err %v", r, err)
					}
					got := drainSamples(t, rd)
					if len(got) != 1 {
						t.Fatalf("got %d samples, want exactly 1: %+v", len(got), got)
					}
					s := got[0]
					want := len(frame)
					if s.Hook != hook || s.Reason != ReasonDropRequest || s.WireLen != want || s.L3 != l3 ||
						s.Src != fam.src || s.Dst != fam.dst || !s.HasPorts || s.SrcPort != 40000 ||
						s.DstPort != DefaultPort || s.Proto != protoUDP || s.Netns != netns || s.Fragment {
						t.Errorf("sample %+v: want hook %s reason drop_request wire %d l3 %v %s:40000 -> %s:%d netns %d",
							s, hook, want, l3, fam.src, fam.dst, DefaultPort, netns)
					}
					// TC copies up to SnapLen bytes; XDP whole 8-byte
					// words of them, at least 16 (sample_copy_xdp).
					capLen := min(len(frame), SnapLen)
					if hook == HookXDP {
						capLen &^= 7
					}
					if !bytes.Equal(s.Data, frame[:capLen]) {
						t.Errorf("sample data (%d bytes) differs from the frame's first %d bytes", len(s.Data), capLen)
					}
					if d := time.Since(s.Time); d < 0 || d > time.Minute {
						t.Errorf("sample time %v is %v from now", s.Time, d)
					}
					sst, err := ReadSampleStats(h.dp.SampleStats, h.dp.SampleStats2)
					if err != nil {
						t.Fatal(err)
					}
					for hk := range hookCount {
						for r := range ReasonCount {
							c := sst[hk][r]
							w := SampleCounter{}
							if hk == hook && Reason(r) == ReasonDropRequest {
								w.Sampled = 1
							}
							if c != w {
								t.Errorf("sample counters %s/%s = %+v, want %+v", hk, Reason(r), c, w)
							}
						}
					}
				})
			}
		}
	}
}

// patchPort sets the UDP destination port of an untagged Ethernet IPv4
// frame with a 20-byte IP header.
func patchPort(frame []byte, port uint16) []byte {
	b := bytes.Clone(frame)
	b[ethHLen+20+2] = byte(port >> 8)
	b[ethHLen+20+3] = byte(port)
	return b
}

// runRepeat runs frame n times in one BPF_PROG_TEST_RUN.
func runRepeat(t *testing.T, h *harness, hook Hook, frame []byte, n uint32) {
	t.Helper()
	if _, err := h.prog(hook).Run(&ebpf.RunOptions{Data: frame, Repeat: n}); err != nil {
		t.Fatalf("run %s: %v", hook, err)
	}
}

// checkConservation checks, for every hook and reason, sampled + suppressed
// == the drop counter (0 for reasons that pass), and that the samples read
// are the ones counted as sampled; it returns the sample counters.
func checkConservation(t *testing.T, h *harness, samples []Sample) map[Hook]HookSampleCounters {
	t.Helper()
	st, err := h.dp.ReadStats()
	if err != nil {
		t.Fatal(err)
	}
	sst, err := ReadSampleStats(h.dp.SampleStats, h.dp.SampleStats2)
	if err != nil {
		t.Fatal(err)
	}
	read := map[Hook]map[Reason]uint64{HookXDP: {}, HookTC: {}}
	for _, s := range samples {
		read[s.Hook][s.Reason]++
	}
	for hk := range hookCount {
		for r := range ReasonCount {
			rr := Reason(r)
			var drops uint64
			if rr.Dropped() || rr == ReasonWouldDrop {
				drops = st[hk][r].Packets
			}
			c := sst[hk][r]
			if c.Sampled+c.Suppressed != drops {
				t.Errorf("%s/%s: sampled %d + suppressed %d != drops %d", hk, rr, c.Sampled, c.Suppressed, drops)
			}
			if read[hk][rr] != c.Sampled {
				t.Errorf("%s/%s: read %d samples, counted %d sampled", hk, rr, read[hk][rr], c.Sampled)
			}
		}
	}
	return sst
}

// With sampling off, or the budget spent, drops are counted as suppressed.
func TestSampleBudgetExhausted(t *testing.T) {
	src, dst := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("192.0.2.1")
	frame := fr(req4(src, dst))
	const n = 5000
	for _, hook := range []Hook{HookXDP, HookTC} {
		t.Run(hook.String()+"/off", func(t *testing.T) {
			h, rd := sampleHarness(t, false, 0)
			runRepeat(t, h, hook, frame, n)
			samples := drainSamples(t, rd)
			sst := checkConservation(t, h, samples)
			// At least n: BPF_PROG_TEST_RUN interrupted by a signal is
			// run again whole, and its frames counted again (checked
			// against the drop counter by checkConservation).
			if c := sst[hook][ReasonDropRequest]; c.Sampled != 0 || c.Suppressed < n {
				t.Errorf("rate 0: %+v, want 0 sampled, at least %d suppressed", c, n)
			}
		})
		t.Run(hook.String()+"/rate1", func(t *testing.T) {
			h, rd := sampleHarness(t, false, 1)
			start := time.Now()
			runRepeat(t, h, hook, frame, n)
			took := time.Since(start)
			samples := drainSamples(t, rd)
			sst := checkConservation(t, h, samples)
			// A full bucket holds one second's budget; each further
			// second (or part) earns one more.
			c := sst[hook][ReasonDropRequest]
			limit := 1 + uint64(took/time.Second) + 1
			if c.Sampled < 1 || c.Sampled > limit || c.Suppressed < n-limit {
				t.Errorf("rate 1 over %v: %+v, want 1..%d sampled, the rest suppressed", took, c, limit)
			}
		})
	}
}

// Over many frames of every kind, passed and dropped, in both modes and at
// both hooks, every drop is sampled or suppressed, exactly.
// Under a flood the bucket is empty on every drop, and what it earns is
// checked once per jiffy (the clock is read only when the jiffies counter
// moved): over a continuous run on one CPU the samples are the full bucket
// plus the rate times the run's length. The kernel's coarse clock lags this
// process's by a tick or two on a host, by tens of milliseconds in an
// emulated guest (its ticks come late, and not always by the same), so the
// bounds allow a fifth of the run below and a tenth above; a refill that
// never came, came every other tick, or credited each tick twice still lands
// outside.
func TestSampleBudgetRefillsAtRate(t *testing.T) {
	const rate = 1000
	h, rd := sampleHarness(t, false, rate)
	frame := fr(req4(netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("192.0.2.1")))
	var took time.Duration
	nstest.OnOneCPU(t, func() { // one CPU's bucket: the budget is per CPU
		start := time.Now()
		for time.Since(start) < 1500*time.Millisecond {
			runRepeat(t, h, HookXDP, frame, 2000)
		}
		took = time.Since(start)
	})
	samples := drainSamples(t, rd)
	c := checkConservation(t, h, samples)[HookXDP][ReasonDropRequest]
	low := rate + uint64(rate*took*4/5/time.Second) - 1
	high := rate + uint64(rate*took*11/10/time.Second) + 1
	if c.Sampled < low || c.Sampled > high {
		t.Errorf("rate %d over %v on one CPU: %d sampled, want %d..%d", rate, took, c.Sampled, low, high)
	}
}

func TestSampleConservation(t *testing.T) {
	for _, mode := range []Mode{ModeEnforce, ModeMonitor} {
		for _, l3 := range []bool{false, true} {
			t.Run(mode.String()+"/"+hookName(l3, HookXDP), func(t *testing.T) {
				h, rd := sampleHarness(t, l3, 20)
				var cases []dpCase
				if l3 {
					cases = l3Cases(dataplaneCases())
				} else {
					cases = dataplaneCases()
				}
				drops := 0
				for _, c := range cases {
					p := c.pol
					p.mode = mode
					if err := h.configure(p); err != nil {
						t.Fatal(err)
					}
					for _, s := range c.steps {
						for _, hook := range []Hook{HookXDP, HookTC} {
							if !testRunTakes(hook, s.frame) {
								continue
							}
							runRepeat(t, h, hook, s.frame, 7)
						}
					}
				}
				samples := drainSamples(t, rd)
				sst := checkConservation(t, h, samples)
				for hk := range hookCount {
					for r := range ReasonCount {
						drops += int(sst[hk][r].Sampled + sst[hk][r].Suppressed)
					}
				}
				if drops == 0 || len(samples) == 0 {
					t.Fatalf("%d drops, %d samples: the cases should drop and sample", drops, len(samples))
				}
				for _, s := range samples {
					if want := mode == ModeMonitor; (s.Reason == ReasonWouldDrop) != want {
						t.Errorf("mode %s: sample reason %s", mode, s.Reason)
					}
				}
			})
		}
	}
}
