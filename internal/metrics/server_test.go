package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/loader"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func startServer(t *testing.T, cfg ServerConfig) (*Server, string) {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s, "http://" + s.Addr().String()
}

// TestServerEndpoints: /healthz is 200 while serving, /readyz follows the
// readiness function with its reason in the body, /metrics serves the
// registry and fails (500) when the kernel read does.
func TestServerEndpoints(t *testing.T) {
	var notReady atomic.Pointer[error] // nil: ready
	why := errors.New("eth1 wanted but not protected")
	notReady.Store(&why)
	var readErr atomic.Bool
	src := SourceFunc(func() (*Snapshot, error) {
		if readErr.Load() {
			return nil, errors.New("open counters: no such file")
		}
		return fakeSnapshot(), nil
	})
	_, base := startServer(t, ServerConfig{
		Gatherer: NewRegistry(src, NewAgentState(), "test"),
		Ready: func() error {
			if p := notReady.Load(); p != nil {
				return *p
			}
			return nil
		},
	})
	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %q", code, body)
	}
	code, body := get(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "eth1 wanted but not protected") {
		t.Errorf("/readyz while not ready: %d %q, want 503 with the reason", code, body)
	}
	notReady.Store(nil)
	if code, body := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	code, body = get(t, base+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, `xdpguard_attached{hook="xdp",interface="veth1",mode="generic",netns="4026531840"} 1`) ||
		!strings.Contains(body, "go_goroutines") || !strings.Contains(body, "xdpguard_reconcile_total 0") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	readErr.Store(true)
	code, body = get(t, base+"/metrics")
	if code != http.StatusInternalServerError || !strings.Contains(body, "no such file") {
		t.Errorf("/metrics with a failing read: %d %q, want 500 naming the cause", code, body)
	}
	if code, _ := get(t, base+"/nonsense"); code != http.StatusNotFound {
		t.Errorf("/nonsense: %d, want 404", code)
	}
}

// TestServerNilReadyIsNotReady: readiness is never assumed.
func TestServerNilReadyIsNotReady(t *testing.T) {
	_, base := startServer(t, ServerConfig{Gatherer: NewTextfileRegistry(staticSource(fakeSnapshot()), "test")})
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz without a readiness function: %d %q, want 503", code, body)
	}
}

func TestServerAddresses(t *testing.T) {
	s, err := Start(ServerConfig{Addr: ""})
	if s != nil || err != nil {
		t.Errorf(`Start(""): %v, %v; want no server and no error`, s, err)
	}
	if s.Addr() != nil || s.Shutdown(context.Background()) != nil {
		t.Error("a nil Server's methods must do nothing")
	}
	for _, bad := range []string{"127.0.0.1:99999", "no-such-host.invalid:9477", "127.0.0.1"} {
		s, err := Start(ServerConfig{Addr: bad})
		if err == nil {
			_ = s.Shutdown(context.Background())
			t.Errorf("Start(%q) succeeded", bad)
			continue
		}
		if !strings.Contains(err.Error(), bad) {
			t.Errorf("Start(%q): %v: the error must name the address", bad, err)
		}
	}
	// A port already taken is an error at Start, not later.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if s, err := Start(ServerConfig{Addr: ln.Addr().String()}); err == nil {
		_ = s.Shutdown(context.Background())
		t.Errorf("Start on a taken port %s succeeded", ln.Addr())
	}
}

// TestServerShutdownIsGraceful: a scrape in flight when Shutdown starts
// completes; Shutdown returns after it, and nothing listens any more.
func TestServerShutdownIsGraceful(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	src := SourceFunc(func() (*Snapshot, error) {
		close(entered)
		<-release
		return fakeSnapshot(), nil
	})
	s, base := startServer(t, ServerConfig{Gatherer: NewTextfileRegistry(src, "test")})
	scraped := make(chan int, 1)
	go func() {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			scraped <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		scraped <- resp.StatusCode
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(context.Background()) }()
	nstest.Eventually(t, 5*time.Second, "the listener to close", func() (bool, error) {
		c, err := net.Dial("tcp", s.Addr().String())
		if err == nil {
			c.Close()
		}
		return err != nil, nil
	})
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) while a scrape was in flight", err)
	default:
	}
	close(release)
	if code := <-scraped; code != http.StatusOK {
		t.Errorf("the scrape in flight got %d, want 200", code)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestServerShutdownDeadline: a scrape that outlives Shutdown's context is
// cut off, and Shutdown says so.
func TestServerShutdownDeadline(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	src := SourceFunc(func() (*Snapshot, error) {
		close(entered)
		<-release
		return nil, loader.ErrNotSetUp
	})
	s, base := startServer(t, ServerConfig{Gatherer: NewTextfileRegistry(src, "test")})
	go func() {
		if resp, err := http.Get(base + "/metrics"); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown past its deadline: %v, want context.DeadlineExceeded", err)
	}
}
