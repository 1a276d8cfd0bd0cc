package metrics_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/xdpguard/xdpguard/internal/metrics"
	"github.com/xdpguard/xdpguard/loader"
)

// The agent's wiring: one AgentState it updates as it works, a registry
// reading the pinned state at each scrape, and the HTTP endpoint.
func Example_agent() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	state := metrics.NewAgentState()
	src := metrics.NewGuardSource(loader.DefaultPinPath, metrics.FragCountCacheFor)
	srv, err := metrics.Start(metrics.ServerConfig{
		Addr:     "127.0.0.1:9477", // "" serves nothing
		Gatherer: metrics.NewRegistry(src, state, "v1.0.0"),
		Ready: func() error {
			// The agent's own test: config applied, every wanted
			// interface protected.
			return errors.New("eth1 is wanted but not protected")
		},
		Log: log,
	})
	if err != nil {
		log.Error("metrics", "err", err)
		return
	}
	// As the agent works:
	state.ConfigLoaded(nil)
	state.Reconciled("start", nil)
	state.SetInterfaces(2, 1)
	// At stop:
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}
