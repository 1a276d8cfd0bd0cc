package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// get fetches url from inside ns (the agent listens on the namespace's own
// loopback) and returns the status code and body.
func get(ns *nstest.NS, url string) (int, string, error) {
	client := &http.Client{
		Timeout: nstest.Scaled(5 * time.Second),
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := ns.Do(func() (err error) {
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		},
	}
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// sample finds one series' value in a Prometheus text exposition.
func sample(body, series string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestMetricsAndProbes: the agent serves /healthz, /readyz and /metrics on
// metrics.listen (loopback by default); readiness and the agent's own
// series follow a rejected and a fixed config.
func TestMetricsAndProbes(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.veth(t, "xp0")
	base := "interfaces:\n  include: [xp0]\nmetrics:\n  listen: \"127.0.0.1:9477\"\n"
	cfg := h.writeConfig(t, base)
	a := h.startAgent(t, cfg)
	const url = "http://127.0.0.1:9477"
	if a.log.count("metrics endpoint listening", "127.0.0.1:9477") != 1 {
		t.Fatalf("no log line for the metrics endpoint")
	}
	if code, body, err := get(h.ns, url+"/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz: %d %q %v", code, body, err)
	}
	if code, body, err := get(h.ns, url+"/readyz"); err != nil || code != 200 {
		t.Fatalf("/readyz with xp0 protected: %d %q %v", code, body, err)
	}
	scrape := func() string {
		t.Helper()
		code, body, err := get(h.ns, url+"/metrics")
		if err != nil || code != 200 {
			t.Fatalf("/metrics: %d %v\n%s", code, err, body)
		}
		return body
	}
	body := scrape()
	for series, want := range map[string]float64{
		"xdpguard_config_valid":         1,
		"xdpguard_interfaces_wanted":    1,
		"xdpguard_interfaces_protected": 1,
	} {
		if got, ok := sample(body, series); !ok || got != want {
			t.Errorf("%s = %v (found %v), want %v", series, got, ok, want)
		}
	}
	if got, ok := sample(body, "xdpguard_reconcile_total"); !ok || got < 1 {
		t.Errorf("xdpguard_reconcile_total = %v, want at least the start's", got)
	}
	if !strings.Contains(body, `interface="xp0"`) {
		t.Errorf("no series for xp0 in /metrics")
	}

	// A config that does not validate: not ready, config_valid 0.
	h.writeConfig(t, base+"mode: drop\n")
	nstest.Eventually(t, 5*time.Second, "/readyz to fail on the rejected config", func() (bool, error) {
		code, body, err := get(h.ns, url+"/readyz")
		return code == 503 && strings.Contains(body, "does not validate") && strings.Contains(body, ": mode: invalid mode"),
			fmt.Errorf("%d %q %v", code, body, err)
	})
	if got, _ := sample(scrape(), "xdpguard_config_valid"); got != 0 {
		t.Errorf("xdpguard_config_valid = %v after a rejected config, want 0", got)
	}
	h.writeConfig(t, base+"mode: monitor\n")
	nstest.Eventually(t, 5*time.Second, "/readyz to pass again", func() (bool, error) {
		code, body, err := get(h.ns, url+"/readyz")
		return code == 200, fmt.Errorf("%d %q %v", code, body, err)
	})
	if got, _ := sample(scrape(), "xdpguard_config_valid"); got != 1 {
		t.Errorf("xdpguard_config_valid = %v after a fixed config, want 1", got)
	}
}
