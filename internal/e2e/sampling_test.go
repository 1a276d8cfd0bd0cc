package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpguard/xdpguard/internal/lab"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// spoofedFlood is a flood of memcached requests to the reflector from 50
// spoofed sources: the first three send 30%, 20% and 10% of the frames, the
// other 47 share the remaining 40% evenly. The frames are shuffled (seeded),
// so that which ones the budget samples does not depend on the source.
type spoofedFlood struct {
	sources []netip.Addr
	share   map[netip.Addr]float64 // of the frames sent
	frames  [][]byte
}

func newSpoofedFlood(n int) spoofedFlood {
	f := spoofedFlood{share: map[netip.Addr]float64{}}
	for i := range 50 {
		f.sources = append(f.sources, netip.AddrFrom4([4]byte{198, 18, byte(i / 200), byte(1 + i%200)}))
	}
	counts := map[netip.Addr]int{f.sources[0]: n * 30 / 100, f.sources[1]: n * 20 / 100, f.sources[2]: n * 10 / 100}
	rest := n - counts[f.sources[0]] - counts[f.sources[1]] - counts[f.sources[2]]
	for i, s := range f.sources[3:] {
		counts[s] = rest / 47
		if i < rest%47 {
			counts[s]++
		}
	}
	for _, s := range f.sources {
		f.share[s] = float64(counts[s]) / float64(n)
		for range counts[s] {
			f.frames = append(f.frames, testpkt.Must(testpkt.MemcachedRequest(s, lab.V4.Refl0, lab.VictimPort, testpkt.Stats).Frame()))
		}
	}
	rng := rand.New(rand.NewPCG(11, 11211))
	rng.Shuffle(len(f.frames), func(i, j int) { f.frames[i], f.frames[j] = f.frames[j], f.frames[i] })
	return f
}

// startReader starts `xdpguard ARGS` (top or capture) on the reflector and
// waits until it holds the samples, so that nothing sent afterwards is
// missed.
func startReader(t *testing.T, g lab.Guard, stdout *bytes.Buffer, args ...string) *exec.Cmd {
	t.Helper()
	cmd := g.NS.Command(g.Bin, append([]string{"--pin-path", g.PinPath}, args...)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	nstest.Eventually(t, 10*time.Second, "the reader to hold the samples", func() (bool, error) {
		if cmd.ProcessState != nil {
			return false, fmt.Errorf("%v exited: %s", args, stderr.String())
		}
		f, err := os.Open(filepath.Join(g.PinPath, "samples_reader"))
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		defer f.Close()
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
			return false, nil
		}
		return errors.Is(err, unix.EWOULDBLOCK), nil
	})
	return cmd
}

// sampleCounts are refl0's xdp drop_request samples from stats --json.
func sampleCounts(t *testing.T, g lab.Guard) (drops, sampled, suppressed uint64) {
	t.Helper()
	out := run(t, g, "stats", "--json")
	var st struct {
		Interfaces []struct {
			Interface string
			Hook      string
			Counters  map[string]struct{ Packets uint64 }
			Samples   map[string]struct{ Sampled, Suppressed uint64 }
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats --json: %v: %s", err, out)
	}
	for _, is := range st.Interfaces {
		if is.Interface == lab.Refl0If && is.Hook == "xdp" {
			s := is.Samples["drop_request"]
			return is.Counters["drop_request"].Packets, s.Sampled, s.Suppressed
		}
	}
	t.Fatalf("no refl0 xdp in stats: %s", out)
	return
}

// TestTopNamesFloodSources: during a flood from 50 spoofed sources with
// known shares, `top --json` names the three largest first, each with its
// share within four standard deviations of a 30% share estimated from the
// samples taken (0.058 for the 1,000 or more the budget of 1,000 per CPU
// allows on a host), and its drop rate is the counters' exactly. The
// interval's drops are all sampled or suppressed.
func TestTopNamesFloodSources(t *testing.T) {
	e := newEnv(t)
	run(t, e.guard, "attach", lab.Refl0If)
	budget, interval := 1000, 4*time.Second
	if nstest.Emulated() {
		// An emulated guest sends the flood at 1,000-1,500 frames a
		// second: over more than the host's 4 s interval, and hardly
		// faster than a budget of 1,000 samples a second, which would
		// sample nearly all of it. A tenth of the budget keeps the
		// flood many times faster than it.
		budget, interval = 100, 30*time.Second
	}
	run(t, e.guard, "sampling", fmt.Sprint(budget))
	const n = 6000
	flood := newSpoofedFlood(n)
	var out bytes.Buffer
	top := startReader(t, e.guard, &out, "top", "--json", "--interval", interval.String(), "--count", "1", "--top", "5")
	// A second reader would split the samples: it is refused.
	if msg, err := e.guard.Run("capture", "-w", filepath.Join(t.TempDir(), "x.pcap"), "--count", "1"); err == nil || !strings.Contains(msg, "another reader") {
		t.Errorf("a second reader while top runs: %v %s, want refused as another reader", err, msg)
	}
	e.send(t, flood.frames)
	if err := top.Wait(); err != nil {
		t.Fatalf("top: %v: %s", err, out.String())
	}
	var rep struct {
		Drops      uint64
		Samples    int
		Suppressed uint64
		Reasons    map[string]float64
		Interval   float64 `json:"interval_seconds"`
		Sources    []struct {
			Key   string
			Share float64
		} `json:"top_sources"`
		Ports []struct {
			Key   string
			Share float64
		} `json:"top_ports"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("top --json: %v: %s", err, out.String())
	}
	t.Logf("top --json: %s", out.String())
	if rep.Drops != n || uint64(rep.Samples)+rep.Suppressed != n {
		t.Fatalf("top counted %d drops, %d samples + %d suppressed, want %d drops, all sampled or suppressed", rep.Drops, rep.Samples, rep.Suppressed, n)
	}
	if math.Abs(rep.Reasons["drop_request"]*rep.Interval-n) > 0.5 {
		t.Errorf("drop_request rate %.1f/s over %.2fs, want %d drops", rep.Reasons["drop_request"], rep.Interval, n)
	}
	if rep.Samples < budget || rep.Samples >= n {
		t.Fatalf("%d samples of %d drops: want at least the budget's burst of %d, and not every drop", rep.Samples, n, budget)
	}
	tolerance := 4 * math.Sqrt(0.3*0.7/float64(rep.Samples))
	if len(rep.Sources) < 3 {
		t.Fatalf("top sources: %+v", rep.Sources)
	}
	for i, want := range flood.sources[:3] {
		got := rep.Sources[i]
		if got.Key != want.String() || math.Abs(got.Share-flood.share[want]) > tolerance {
			t.Errorf("top source %d: %s with %.3f, want %s with %.2f +- %.2f", i+1, got.Key, got.Share, want, flood.share[want], tolerance)
		}
	}
	if len(rep.Ports) == 0 || rep.Ports[0].Key != fmt.Sprint(lab.MemcachedPort) || math.Abs(rep.Ports[0].Share-1) > 1e-9 {
		t.Errorf("top ports: %+v, want %d with all drops", rep.Ports, lab.MemcachedPort)
	}
}

// TestCaptureWritesSamples: `capture -w` during a flood writes a pcap that
// tcpdump reads: every packet from one of the flood's sources to the
// reflector's memcached port, as many as were sampled (stats), which is no
// more than the budget allowed over the capture.
func TestCaptureWritesSamples(t *testing.T) {
	e := newEnv(t)
	run(t, e.guard, "attach", lab.Refl0If)
	const rate = 20
	run(t, e.guard, "sampling", fmt.Sprint(rate))
	const n = 3000
	flood := newSpoofedFlood(n)
	for _, ng := range []bool{false, true} {
		t.Run(fmt.Sprintf("pcapng=%v", ng), func(t *testing.T) {
			drops0, sampled0, suppressed0 := sampleCounts(t, e.guard)
			file := filepath.Join(t.TempDir(), "drops.pcap")
			args := []string{"capture", "-w", file, "--duration", "3s"}
			if ng {
				args = append(args, "--pcapng")
			}
			start := time.Now()
			var out bytes.Buffer
			capture := startReader(t, e.guard, &out, args...)
			e.send(t, flood.frames)
			if err := capture.Wait(); err != nil {
				t.Fatalf("capture: %v", err)
			}
			took := time.Since(start)
			drops, sampled, suppressed := sampleCounts(t, e.guard)
			drops, sampled, suppressed = drops-drops0, sampled-sampled0, suppressed-suppressed0
			if drops != n || sampled+suppressed != drops {
				t.Fatalf("%d drops, %d sampled + %d suppressed: want %d, all sampled or suppressed", drops, sampled, suppressed, n)
			}
			// Per CPU: a full bucket (one second's worth), plus the
			// rate for every second of the capture.
			budget := uint64(rate * runtime.NumCPU() * (1 + int(math.Ceil(took.Seconds()))))
			if sampled == 0 || sampled > budget {
				t.Fatalf("%d sampled over %v, want 1..%d (the budget)", sampled, took, budget)
			}
			tcpdump, err := exec.Command("tcpdump", "-nn", "-r", file).Output()
			if err != nil {
				t.Fatalf("tcpdump -r: %v", err)
			}
			sources := map[string]bool{}
			for _, s := range flood.sources {
				sources[s.String()] = true
			}
			var lines int
			sc := bufio.NewScanner(bytes.NewReader(tcpdump))
			for sc.Scan() {
				lines++
				// 12:00:00.000000 IP 198.18.0.1.40000 > 10.77.2.2.11211: UDP, length 15
				f := strings.Fields(sc.Text())
				if len(f) < 5 || f[1] != "IP" || f[3] != ">" {
					t.Fatalf("tcpdump line %q", sc.Text())
				}
				src := f[2][:strings.LastIndex(f[2], ".")]
				if !sources[src] || f[2][len(src):] != fmt.Sprintf(".%d", lab.VictimPort) ||
					f[4] != fmt.Sprintf("%s.%d:", lab.V4.Refl0, lab.MemcachedPort) {
					t.Errorf("tcpdump line %q: want a flood source:%d > %s.%d", sc.Text(), lab.VictimPort, lab.V4.Refl0, lab.MemcachedPort)
				}
			}
			if uint64(lines) != sampled {
				t.Errorf("tcpdump read %d packets, %d were sampled", lines, sampled)
			}
			if ng {
				if !bytes.Contains(mustRead(t, file), []byte("xdpguard drop_request on refl0 (xdp)")) {
					t.Errorf("no packet comment with the reason in the pcapng file")
				}
			}
			t.Logf("%d drops: %d sampled (budget %d over %v), %d suppressed; tcpdump read %d", drops, sampled, budget, took.Round(time.Millisecond), suppressed, lines)
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
