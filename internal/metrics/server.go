package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServerConfig says what the HTTP endpoint serves, and where.
type ServerConfig struct {
	// Addr is host:port to listen on (port 0: any free port). "" means no
	// server: Start returns a nil *Server, whose methods do nothing.
	Addr string
	// Gatherer is served at /metrics.
	Gatherer prometheus.Gatherer
	// Ready is /readyz: nil error means ready (200); an error is the
	// reason it is not (503, the reason in the body). A nil Ready is
	// never ready: readiness must be said, not assumed.
	Ready func() error
	// Log receives failed scrapes; nil discards them.
	Log *slog.Logger
}

// maxScrapesInFlight bounds concurrent /metrics requests: each walks the
// kernel's maps, and a misconfigured scraper must not multiply that.
const maxScrapesInFlight = 4

// Handler serves /metrics, /healthz (200 while the process serves) and
// /readyz.
func Handler(cfg ServerConfig) http.Handler {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.HTTPErrorOnError,
		MaxRequestsInFlight: maxScrapesInFlight,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		err := errors.New("no readiness check configured")
		if cfg.Ready != nil {
			err = cfg.Ready()
		}
		if err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "xdpguard: /metrics (Prometheus), /healthz (alive), /readyz (config applied, every wanted interface protected)")
	})
	return mux
}

// Server is the HTTP endpoint, serving from Start until Shutdown.
type Server struct {
	srv      *http.Server
	addr     net.Addr
	done     chan struct{} // closed when serving has stopped
	serveErr error         // why it stopped, nil after Shutdown
}

// Start listens on cfg.Addr and serves Handler(cfg) in the background. An
// address that cannot be bound is an error here, before anything is served.
func Start(cfg ServerConfig) (*Server, error) {
	if cfg.Addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen address %q: %w", cfg.Addr, err)
	}
	s := &Server{
		srv: &http.Server{
			Handler:           Handler(cfg),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
		},
		addr: ln.Addr(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.serveErr = fmt.Errorf("metrics server: %w", err)
		}
	}()
	return s, nil
}

// Addr is the address the server listens on (with the port chosen when
// cfg.Addr had port 0); nil for no server.
func (s *Server) Addr() net.Addr {
	if s == nil {
		return nil
	}
	return s.addr
}

// Shutdown stops accepting connections and waits for requests in flight
// until ctx ends, then closes what is left. It returns the error serving
// stopped with, if any.
func (s *Server) Shutdown(ctx context.Context) error {
	if s == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("metrics server shutdown: %w", err), s.srv.Close())
	}
	<-s.done
	return errors.Join(err, s.serveErr)
}
