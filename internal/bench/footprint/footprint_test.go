package footprint

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

func TestParseStatus(t *testing.T) {
	rss, hwm, err := parseStatus("Name:\txdpguard\nVmHWM:\t   30000 kB\nVmRSS:\t   25000 kB\nThreads:\t7\n")
	if err != nil || rss != 25000<<10 || hwm != 30000<<10 {
		t.Fatalf("parseStatus = %d, %d, %v; want %d, %d", rss, hwm, err, 25000<<10, 30000<<10)
	}
	if _, _, err := parseStatus("Name:\tkthreadd\n"); err == nil {
		t.Fatal("parseStatus of a status without VmRSS: no error")
	}
}

func TestReadSelf(t *testing.T) {
	u, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS == 0 || u.HWM < u.RSS {
		t.Fatalf("own usage %+v: want RSS > 0 and HWM >= RSS", u)
	}
}

// TestRun runs a small version of the benchmark's step against the real
// agent: 50 pairs, every fifth matching, in batches of 25.
func TestRun(t *testing.T) {
	nstest.RequireRoot(t)
	bin := filepath.Join(t.TempDir(), "xdpguard")
	build := exec.Command("go", "build", "-o", bin, "./cmd/xdpguard")
	build.Dir = filepath.Join("..", "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/xdpguard: %v\n%s", err, out)
	}
	pinRoot := fmt.Sprintf("/sys/fs/bpf/xdpguard-footprint-test-%d", os.Getpid())
	res, err := Run(Options{Binary: bin, PinRoot: pinRoot, Idle: time.Second, Pairs: 50, MatchEvery: 5, Batch: 25})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Matched != 10 || res.Pairs != 50 {
		t.Errorf("matched %d of %d pairs, want 10 of 50", res.Matched, res.Pairs)
	}
	for name, u := range map[string]Usage{"ready": res.Ready, "idle": res.Idle, "churn": res.Churn} {
		if u.RSS == 0 || u.HWM < u.RSS {
			t.Errorf("%s: %+v: want RSS > 0 and HWM >= RSS", name, u)
		}
	}
	if res.IdleCPU() < 0 || res.ChurnCPU() < 0 {
		t.Errorf("CPU went backwards: idle %s, churn %s", res.IdleCPU(), res.ChurnCPU())
	}
	// Ten attaches verify programs: that is not free.
	if res.ChurnCPU() == 0 {
		t.Errorf("churn with %d attaches took no CPU time", res.Matched)
	}
	if res.IdleFor < time.Second || res.ChurnFor <= 0 {
		t.Errorf("windows: idle %s, churn %s", res.IdleFor, res.ChurnFor)
	}
	if res.LeftPins != 0 {
		t.Errorf("%d interface pin directories left after every link was deleted", res.LeftPins)
	}
	matches, _ := filepath.Glob(pinRoot + "-agent-*")
	if len(matches) != 0 {
		t.Errorf("pin paths left: %v", matches)
	}
}
