package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/loader"
)

// buildCLI builds cmd/xdpguard into a temporary directory.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "xdpguard")
	build := exec.Command("go", "build", "-o", bin, "./cmd/xdpguard")
	build.Dir = filepath.Join("..", "..") // the module root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/xdpguard: %v\n%s", err, out)
	}
	return bin
}

// freePort is a loopback port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// prometheusServer is a real Prometheus (Debian's package) on loopback,
// scraping one target every second, its storage in a temporary directory.
type prometheusServer struct {
	base string // http://127.0.0.1:PORT
}

func startPrometheus(t *testing.T, target string) *prometheusServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found: install it (scripts/deps.sh, Debian package prometheus): %v", err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: xdpguard
    static_configs:
      - targets: [%q]
`, target)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	var log bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("prometheus did not stop on SIGTERM within 10 s; killed")
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log.String())
		}
	})
	p := &prometheusServer{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	start := time.Now()
	nstest.Eventually(t, 30*time.Second, "prometheus ready", func() (bool, error) {
		select {
		case err := <-exited:
			return false, fmt.Errorf("prometheus exited: %v\n%s", err, log.String())
		default:
		}
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	t.Logf("prometheus ready after %v", time.Since(start).Round(time.Millisecond))
	return p
}

// sample is one series of an instant query's result.
type sample struct {
	Metric map[string]string
	Value  float64
}

// query runs an instant query through Prometheus' HTTP API.
func (p *prometheusServer) query(q string) ([]sample, error) {
	resp, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string
		Error  string
		Data   struct {
			ResultType string
			Result     []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %s: %w: %s", q, err, body)
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: %s %s: %s", q, r.Status, r.Error, body)
	}
	var out []sample
	for _, res := range r.Data.Result {
		s, _ := res.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", q, res.Value[1], err)
		}
		out = append(out, sample{Metric: res.Metric, Value: v})
	}
	return out, nil
}

// statsJSON runs `xdpguard stats --json` in the host namespace.
func (r *rig) statsJSON(t *testing.T, bin string) []loader.InterfaceStats {
	t.Helper()
	out, err := r.host.Command(bin, "--pin-path", r.pin, "stats", "--json").Output()
	if err != nil {
		t.Fatalf("xdpguard stats --json: %v", err)
	}
	var rep struct{ Interfaces []loader.InterfaceStats }
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("xdpguard stats --json: %v\n%s", err, out)
	}
	return rep.Interfaces
}

func parseText(t *testing.T, what string, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, text)
	}
	return mfs
}

// TestPrometheusScrapesExactCounters attaches xdpguard in a namespace,
// sends a known attack, serves the agent's registry over HTTP and has a real
// Prometheus scrape it: the counters queried through Prometheus' API equal
// `xdpguard stats --json` exactly, `promtool check metrics` accepts the
// exposition, and `xdpguard stats --prometheus` prints the same series the
// server does.
func TestPrometheusScrapesExactCounters(t *testing.T) {
	r := newRig(t)
	want := r.attack(t)
	bin := buildCLI(t)

	srv, err := Start(ServerConfig{
		Addr:     "127.0.0.1:0",
		Gatherer: NewRegistry(r.source(), NewAgentState(), "test"),
		Ready:    func() error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Errorf("metrics server: %v", err)
		}
	})
	resp, err := http.Get("http://" + srv.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, body)
	}

	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = bytes.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	prom := startPrometheus(t, srv.Addr().String())
	seriesPerFamily := len(want) * loader.ReasonCount // every hook, every reason
	var packets, bytesTotal []sample
	scraping := time.Now()
	nstest.Eventually(t, 30*time.Second, "prometheus to have scraped xdpguard's counters", func() (bool, error) {
		var err error
		if packets, err = prom.query(fmt.Sprintf(`%s{job="xdpguard",interface=%q}`, PacketsTotal, hostIf)); err != nil {
			return false, err
		}
		if bytesTotal, err = prom.query(fmt.Sprintf(`%s{job="xdpguard",interface=%q}`, BytesTotal, hostIf)); err != nil {
			return false, err
		}
		return len(packets) == seriesPerFamily && len(bytesTotal) == seriesPerFamily, nil
	})
	t.Logf("counters queryable in Prometheus after %v", time.Since(scraping).Round(time.Millisecond))

	// The traffic has stopped: stats --json now and the scraped values
	// must be the same numbers.
	st := r.statsJSON(t, bin)
	if len(st) != 2 {
		t.Fatalf("stats --json has %d rows, want xdp and tc: %+v", len(st), st)
	}
	for _, fam := range []struct {
		name    string
		samples []sample
		value   func(loader.Counter) uint64
	}{
		{PacketsTotal, packets, func(c loader.Counter) uint64 { return c.Packets }},
		{BytesTotal, bytesTotal, func(c loader.Counter) uint64 { return c.Bytes }},
	} {
		got := map[string]float64{}
		for _, s := range fam.samples {
			got[s.Metric["hook"]+"/"+s.Metric["reason"]] = s.Value
		}
		for _, s := range st {
			for _, reason := range loader.Reasons() {
				c := s.Counters[reason.String()]
				key := s.Hook + "/" + reason.String()
				v, ok := got[key]
				if !ok {
					t.Errorf("%s{hook=%q,reason=%q}: not in Prometheus", fam.name, s.Hook, reason)
					continue
				}
				if v != float64(fam.value(c)) {
					t.Errorf("%s{hook=%q,reason=%q}: Prometheus has %v, stats --json %d", fam.name, s.Hook, reason, v, fam.value(c))
				}
				if fam.name == PacketsTotal && fam.value(c) != want[s.Hook][reason.String()] {
					t.Errorf("%s %s: %d packets counted, %d sent", s.Hook, reason, fam.value(c), want[s.Hook][reason.String()])
				}
			}
		}
	}
	attached, err := prom.query(Attached + `{job="xdpguard"}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(attached) != 2 {
		t.Errorf("%s in Prometheus: %+v, want xdp and tc on %s", Attached, attached, hostIf)
	}

	// stats --prometheus: the same collector, so the same series with the
	// same values as the server, minus the agent's and the process's own.
	out, err := r.host.Command(bin, "--pin-path", r.pin, "stats", "--prometheus").Output()
	if err != nil {
		t.Fatalf("xdpguard stats --prometheus: %v", err)
	}
	cli := parseText(t, "stats --prometheus", out)
	served := parseText(t, "/metrics", body)
	for name, mf := range cli {
		if name == BuildInfo {
			continue // the version differs: "dev" and "test"
		}
		if !strings.HasPrefix(name, "xdpguard_") {
			t.Errorf("stats --prometheus prints %s: only xdpguard_ series belong in a textfile", name)
			continue
		}
		if s, c := served[name].String(), mf.String(); s != c {
			t.Errorf("%s differs:\n/metrics:            %s\nstats --prometheus: %s", name, s, c)
		}
	}
	for _, name := range []string{PacketsTotal, BytesTotal, Attached, ConfigInfo, ProtectedPort, AllowPrefixes, MapEntries, MapMaxEntries, BuildInfo} {
		if cli[name] == nil {
			t.Errorf("stats --prometheus lacks %s", name)
		}
	}
}
