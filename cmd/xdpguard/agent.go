package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/xdpguard/xdpguard/internal/agent"
	"github.com/xdpguard/xdpguard/internal/agent/config"
	"github.com/xdpguard/xdpguard/internal/agent/sdnotify"
	"github.com/xdpguard/xdpguard/internal/metrics"
	"github.com/xdpguard/xdpguard/loader"
)

func init() {
	commands = append(commands, agentCmd)
}

var agentCmd = &command{
	name:    "agent",
	args:    "[--config FILE] [--log-format text|json] | --check-config FILE",
	summary: "run as a service: keep every matching interface protected as the config says",
	help: `Runs until stopped, keeping the kernel matching one config file
(` + config.DefaultPath + `; deploy/xdpguard.yaml documents every key): it
protects every interface the config matches as interfaces come, go and are
renamed, and applies ports, mode, fragment policy and allow list live. It
reads the config again on SIGHUP and when the file, or an allow-list file it
names, changes; a file that does not validate is refused, with its line and
reason in the log, and what runs stays as it was.

The pin path comes from the config's pin_path, not from --pin-path. An agent
that finds pinned state adopts it, with no gap. SIGKILL leaves every
interface protected; SIGTERM keeps protection too unless on_stop: detach.
Under systemd (Type=notify) it reports READY, RELOADING and STOPPING. It
serves /metrics, /healthz and /readyz on the config's metrics.listen. When an
interface's drops stay above the config's attacks.threshold_pps it logs
"attack started" (rate, reasons, top sources from the drop samples),
"attack ongoing" and "attack ended" (duration, packets, bytes, peak rate).

--check-config FILE validates FILE and the allow-list files it names without
touching the kernel, and exits 1 with every error (FILE:LINE: FIELD: ...).`,
	example: `  sudo xdpguard agent                                   # ` + config.DefaultPath + `
  xdpguard agent --check-config /etc/xdpguard/xdpguard.yaml
  sudo xdpguard agent --config ./xdpguard.yaml --log-format json
  sudo systemctl reload xdpguard                        # SIGHUP: read the config again`,
	flags: func(fs *pflag.FlagSet) {
		fs.String("config", config.DefaultPath, "the config file")
		fs.String("check-config", "", "validate this config file (and its allow-list files) and exit")
		fs.String("log-format", "text", "log format: text or json (one object a line)")
		fs.String("log-level", "info", "log level: debug, info, warn or error")
		fs.Int("netlink-buffer", 0, "receive buffer for link events in bytes (0: 8 MiB)")
	},
	run: runAgent,
}

func runAgent(c *cli, fs *pflag.FlagSet, args []string) error {
	if len(args) > 0 {
		return usagef("takes no arguments; give the config with --config FILE")
	}
	if file, _ := fs.GetString("check-config"); file != "" || fs.Changed("check-config") {
		if file == "" {
			return usagef("--check-config needs a file")
		}
		return checkConfig(c.stdout, file)
	}
	format, _ := fs.GetString("log-format")
	levelArg, _ := fs.GetString("log-level")
	log, err := newLogger(c.stderr, format, levelArg)
	if err != nil {
		return err
	}
	path, _ := fs.GetString("config")
	nlbuf, _ := fs.GetInt("netlink-buffer")
	state := metrics.NewAgentState()
	opts := agent.Options{ConfigPath: path, Log: log, Notify: sdnotify.Notify, NetlinkBuffer: nlbuf, Observer: state}
	a, err := agent.New(opts)
	if err != nil {
		return err
	}
	cfg := a.Config()
	// Attack events name their top sources from the kernel's drop samples.
	if samples, err := agent.NewRingSamples(cfg.PinPath); err != nil {
		log.Warn("attack events go without top sources", "error", err)
	} else {
		a.SetSamples(samples)
	}
	if c.pinPath != loader.DefaultPinPath && c.pinPath != cfg.PinPath {
		log.Warn("--pin-path and $"+pinPathEnv+" do not apply to the agent: it uses the config's pin_path", "pin_path", cfg.PinPath, "ignored", c.pinPath)
	}
	// Up before the first reconcile, so /healthz answers while a host's
	// interfaces are being attached. A port that cannot be bound is logged,
	// not fatal: protection matters more than its metrics.
	srv, err := metrics.Start(metrics.ServerConfig{
		Addr:     cfg.MetricsListen,
		Gatherer: metrics.NewRegistry(metrics.NewGuardSource(cfg.PinPath, metrics.FragCountCacheFor), state, version),
		Ready:    a.Ready,
		Log:      log,
	})
	if err != nil {
		log.Error("metrics endpoint not started; the agent runs without it", "error", err)
	} else if srv != nil {
		log.Info("metrics endpoint listening", "address", srv.Addr().String(), "paths", "/metrics /healthz /readyz")
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("metrics endpoint", "error", err)
		}
	}()

	ctx, stop := context.WithCancel(c.ctx)
	defer stop()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-sigs:
				if s == syscall.SIGHUP {
					select {
					case reload <- struct{}{}:
					default: // one pending reload covers several
					}
					continue
				}
				log.Info("signal received", "signal", s.String())
				stop()
				return
			}
		}
	}()
	return a.Run(ctx, reload)
}

// checkConfig validates a config file as the agent would load it.
func checkConfig(w io.Writer, file string) error {
	cfg, err := config.Load(file)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: valid\n", cfg.Path)
	tw := table(w)
	fmt.Fprintf(tw, "  pin path\t%s\n", cfg.PinPath)
	fmt.Fprintf(tw, "  include\t%s\n", strings.Join(cfg.Interfaces.Include, " "))
	fmt.Fprintf(tw, "  exclude\t%s\n", strings.Join(cfg.Interfaces.Exclude, " "))
	egress := "no egress"
	if cfg.Interfaces.Egress {
		egress = "egress via " + string(cfg.Interfaces.TCBackend)
	}
	fmt.Fprintf(tw, "  attach\txdp %s, %s, force %v\n", cfg.Interfaces.XDPMode, egress, cfg.Interfaces.Force)
	fmt.Fprintf(tw, "  ports\t%s\n", joinPorts(cfg.Ports))
	if n := len(cfg.LoaderConfig().ResponsePorts()); n > 0 && !cfg.Interfaces.Egress {
		fmt.Fprintf(tw, "  WARNING\t%d response port(s) but interfaces.egress is false: no request is recorded, every reply from them is dropped; set egress: true\n", n)
	}
	fmt.Fprintf(tw, "  mode\t%s\n", cfg.Mode)
	fmt.Fprintf(tw, "  fragments\t%s\n", cfg.Fragments)
	fmt.Fprintf(tw, "  allow\t%d prefixes (%d inline, %d files)\n", len(cfg.Allow.All), len(cfg.Allow.Prefixes), len(cfg.Allow.Files))
	metrics := cfg.MetricsListen
	if metrics == "" {
		metrics = "off"
	}
	fmt.Fprintf(tw, "  metrics\t%s\n", metrics)
	fmt.Fprintf(tw, "  on stop\t%s\n", cfg.OnStop)
	if at := cfg.Attacks; at.ThresholdPPS == 0 {
		fmt.Fprintf(tw, "  attacks\toff\n")
	} else {
		fmt.Fprintf(tw, "  attacks\tat %d drops/s for %s, ended after %s below, updates every %s\n", at.ThresholdPPS, at.MinDuration, at.QuietPeriod, at.UpdateEvery)
	}
	return tw.Flush()
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("invalid --log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("invalid --log-format %q: use text or json", format)
}
