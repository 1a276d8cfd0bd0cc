// Package agent is `xdpguard agent`: it keeps the kernel matching one
// declarative config file. It protects every interface the config matches
// as interfaces come, go and are renamed (netlink link events), applies
// ports, mode, fragment policy and allow list live, and reads the config
// again on SIGHUP and whenever the file or an allow-list file it names
// changes. Every change goes through the loader's Apply, one transaction
// that leaves the previous state in force when it fails.
//
// Protection does not depend on the agent running: it lives in pinned BPF
// links. A killed agent leaves it in place, and an agent that starts adopts
// what it finds (Apply changes nothing that already matches).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdpguard/xdpguard/internal/agent/config"
	"github.com/xdpguard/xdpguard/internal/agent/filewatch"
	"github.com/xdpguard/xdpguard/internal/agent/sdnotify"
	"github.com/xdpguard/xdpguard/loader"
)

// Observer is told what the agent does, for metrics. Methods are called
// from the agent's one loop goroutine and must not block.
type Observer interface {
	// ConfigLoaded follows every attempt to read the config: at start, on
	// SIGHUP, on a file change and at each resync. err is nil when the
	// file validated (and is in force).
	ConfigLoaded(err error)
	// Reconciled follows every reconcile that called the loader; err is
	// nil when every wanted interface ended up protected.
	Reconciled(trigger string, err error)
	// SetInterfaces follows every reconcile that read back what is
	// attached: how many interfaces the config wants and how many of
	// them are protected.
	SetInterfaces(wanted, protected int)
}

// Options configure an Agent.
type Options struct {
	// ConfigPath is the config file (config.DefaultPath if empty).
	ConfigPath string
	Log        *slog.Logger
	// Observer, if set, is told about config loads and reconciles.
	Observer Observer
	// Notify tells the service manager how the agent is doing
	// (sdnotify.Notify); nil tells nobody.
	Notify func(state string) error
	// NetlinkBuffer is the link-event socket's receive buffer in bytes
	// (0: a default big enough for thousands of links at once). An
	// overrun is survived (resubscribe, resync) but costs a full pass.
	NetlinkBuffer int
	// Samples, if set, names the top sources in attack events.
	Samples SampleSource
}

// Timing of reconciles.
const (
	// quiet is how long events must stop before a reconcile runs, so a
	// burst (1000 veths for 1000 containers) is one pass, not 1000.
	quiet = 30 * time.Millisecond
	// maxDelay bounds how long a burst can hold a reconcile back: a new
	// interface is protected well within a second of appearing.
	maxDelay = 200 * time.Millisecond
	// retryMin and retryMax bound the back-off after a reconcile left an
	// interface unprotected.
	retryMin = time.Second
	retryMax = 30 * time.Second
)

// Agent is one running agent.
type Agent struct {
	opts Options
	log  *slog.Logger
	obs  Observer

	cfg *config.Config // the config in force
	fw  *filewatch.Watcher
	// stopping reports whether the agent has been told to stop: a long
	// reconcile ends early between batches.
	stopping func() bool
	// links is ifindex -> name as the last reconcile saw them, to say in
	// the log why an interface changed (appeared, renamed, gone).
	links map[int]string
	// clean is set when the last reconcile protected every wanted
	// interface with the config in force: a link event that changes no
	// name or index then needs no Apply.
	clean bool
	// failedLogged remembers each interface's last logged failure, so a
	// retry that fails the same way does not log it again.
	failedLogged map[string]string
	// absentLogged holds the literal include names logged as absent,
	// nonEtherLogged the matching interfaces logged as of a link type
	// xdpguard cannot parse.
	absentLogged, nonEtherLogged map[string]bool
	retry                        time.Duration
	configErr                    string // the last config load's error, logged once
	lastApplyErr                 string // the last whole Apply's error, logged once

	// attackCfg is the attack thresholds in force, for the attack
	// monitor's goroutine.
	attackCfg atomic.Pointer[config.Attacks]

	mu     sync.Mutex
	status Status
}

// Status is what the agent reports on /readyz and to metrics.
type Status struct {
	// Ready is true when the config file on disk is the one in force and
	// every interface it wants is protected.
	Ready bool `json:"ready"`
	// Why says what is missing when not ready.
	Why        string `json:"why,omitempty"`
	ConfigPath string `json:"config_path"`
	// ConfigError is the last load's error: the file on disk does not
	// validate and the previous config stays in force.
	ConfigError string `json:"config_error,omitempty"`
	// Wanted are the interfaces the config matches, Protected those of
	// them that are, Unprotected the others with the reason.
	Wanted      []string          `json:"wanted"`
	Protected   []string          `json:"protected"`
	Unprotected map[string]string `json:"unprotected,omitempty"`
	Reconciles  uint64            `json:"reconciles"`
	Errors      uint64            `json:"reconcile_errors"`
	Last        time.Time         `json:"last_reconcile"`
}

// New reads the config; an invalid one is an error and nothing starts.
func New(opts Options) (*Agent, error) {
	if opts.ConfigPath == "" {
		opts.ConfigPath = config.DefaultPath
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Notify == nil {
		opts.Notify = func(string) error { return nil }
	}
	cfg, err := config.Load(opts.ConfigPath)
	if opts.Observer != nil {
		opts.Observer.ConfigLoaded(err)
	}
	if err != nil {
		return nil, err
	}
	a := &Agent{
		opts: opts, log: opts.Log, obs: opts.Observer, cfg: cfg,
		stopping:     func() bool { return false },
		failedLogged: map[string]string{}, absentLogged: map[string]bool{}, nonEtherLogged: map[string]bool{},
	}
	if a.obs == nil {
		a.obs = nopObserver{}
	}
	a.status.ConfigPath = cfg.Path
	a.attackCfg.Store(&cfg.Attacks)
	return a, nil
}

type nopObserver struct{}

func (nopObserver) ConfigLoaded(error)       {}
func (nopObserver) Reconciled(string, error) {}
func (nopObserver) SetInterfaces(int, int)   {}

// SetSamples makes attack events name their top sources from s; call it
// before Run.
func (a *Agent) SetSamples(s SampleSource) { a.opts.Samples = s }

// Config is the config in force.
func (a *Agent) Config() *config.Config { return a.cfg }

// Status is a snapshot of the agent's state; safe from any goroutine.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.status
	s.Wanted = slices.Clone(s.Wanted)
	s.Protected = slices.Clone(s.Protected)
	if s.Unprotected != nil {
		u := make(map[string]string, len(s.Unprotected))
		for k, v := range s.Unprotected {
			u[k] = v
		}
		s.Unprotected = u
	}
	return s
}

// Ready is nil when the agent is ready (the config on disk is in force and
// every wanted interface is protected), else why not; for /readyz.
func (a *Agent) Ready() error {
	st := a.Status()
	if st.Ready {
		return nil
	}
	return errors.New(st.Why)
}

func (a *Agent) updateStatus(f func(s *Status)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(&a.status)
	s := &a.status
	switch {
	case s.ConfigError != "":
		s.Ready, s.Why = false, "the config file does not validate; the previous config stays in force: "+s.ConfigError
	case s.Last.IsZero():
		s.Ready, s.Why = false, "not reconciled yet"
	case len(s.Unprotected) > 0:
		names := make([]string, 0, len(s.Unprotected))
		for n := range s.Unprotected {
			names = append(names, n)
		}
		slices.Sort(names)
		s.Ready, s.Why = false, "unprotected: "+strings.Join(names, ", ")
	default:
		s.Ready, s.Why = true, ""
	}
}

func (a *Agent) notify(state string) {
	if err := a.opts.Notify(state); err != nil {
		a.log.Warn("cannot notify the service manager", "error", err)
	}
}

// Run reconciles at once, then whenever something changes, until ctx is
// done; reload carries SIGHUP. It returns an error only when the first
// reconcile cannot even open the pinned state (no privileges, no bpffs):
// then nothing could ever be protected and the service manager should
// know. When ctx ends it applies on_stop.
func (a *Agent) Run(ctx context.Context, reload <-chan struct{}) error {
	a.log.Info("agent starting", "config", a.cfg.Path, "pin_path", a.cfg.PinPath,
		"include", a.cfg.Interfaces.Include, "exclude", a.cfg.Interfaces.Exclude)

	fw, err := filewatch.New()
	if err != nil {
		return err
	}
	defer fw.Close()
	a.fw = fw
	a.watchFiles()
	a.stopping = func() bool { return ctx.Err() != nil }

	links := newLinkWatcher(a.log, a.opts.NetlinkBuffer)
	linkCtx, stopLinks := context.WithCancel(ctx)
	linksDone := make(chan struct{})
	go func() { defer close(linksDone); links.run(linkCtx) }()
	defer func() { stopLinks(); <-linksDone }()

	if err := a.reconcile(true, "agent start"); errors.Is(err, errFatal) {
		return err
	}
	attacksDone := make(chan struct{})
	go func() { defer close(attacksDone); a.runAttacks(linkCtx, a.cfg.PinPath) }()
	defer func() { stopLinks(); <-attacksDone }()
	a.notify(sdnotify.Ready + "\n" + a.statusLine())

	var resync <-chan time.Time
	if a.cfg.ResyncInterval > 0 {
		t := time.NewTicker(a.cfg.ResyncInterval)
		defer t.Stop()
		resync = t.C
	}
	var (
		p         pending
		timer     = time.NewTimer(time.Hour)
		retryT    = time.NewTimer(time.Hour)
		retryWant bool
	)
	timer.Stop()
	retryT.Stop()
	defer timer.Stop()
	defer retryT.Stop()
	schedule := func() {
		if d, ok := p.due(time.Now()); ok {
			timer.Reset(d)
		}
	}
	// armRetry retries, backing off, while an interface is unprotected or
	// the last reconcile failed.
	armRetry := func() {
		if st := a.Status(); len(st.Unprotected) == 0 && a.clean {
			a.retry = 0
			return
		}
		if !retryWant {
			a.retry = min(max(a.retry*2, retryMin), retryMax)
			retryT.Reset(a.retry)
			retryWant = true
		}
	}
	armRetry()
	for {
		select {
		case <-ctx.Done():
			return a.stop()
		case <-reload:
			a.notify(sdnotify.Reloading + fmt.Sprintf("\nMONOTONIC_USEC=%d", monotonicUsec()))
			a.log.Info("reloading", "why", "SIGHUP")
			a.reloadConfig("SIGHUP", true)
			a.notify(sdnotify.Ready + "\n" + a.statusLine())
		case <-fw.Changed:
			p.add(time.Now(), "a watched file changed", func(p *pending) { p.reload = true })
			schedule()
		case err := <-fw.Errors:
			a.log.Warn("file watch error; reading the config again", "error", err)
			p.add(time.Now(), "file watch error", func(p *pending) { p.reload = true })
			schedule()
		case <-links.changed:
			full, whys := links.take()
			for _, w := range whys {
				p.add(time.Now(), w, func(p *pending) { p.links, p.full = true, p.full || full })
			}
			schedule()
		case <-resync:
			if !a.reloadConfig("periodic resync", false) {
				a.reconcile(true, "periodic resync")
			}
		case <-retryT.C:
			retryWant = false
			a.reconcile(false, "retry of unprotected interfaces")
		case <-timer.C:
			got, why := p.take()
			applied := false
			if got.reload {
				applied = a.reloadConfig(why, false)
			}
			if !applied && (got.full || got.links) {
				a.reconcile(got.full, why)
			}
		}
		armRetry()
	}
}

// watchFiles watches the config file and its allow-list files.
func (a *Agent) watchFiles() {
	if err := a.fw.Watch(a.cfg.WatchedFiles()...); err != nil {
		a.log.Warn("cannot watch a config file's directory; changes there need SIGHUP", "error", err)
	}
}

// reloadConfig reads the config again. A file that does not validate
// changes nothing and is logged (once for the same error, unless force). A
// valid one that differs from the one in force, or any valid one when force
// is set (SIGHUP), is applied. It reports whether it reconciled.
func (a *Agent) reloadConfig(why string, force bool) bool {
	cfg, err := config.Load(a.opts.ConfigPath)
	if err == nil && cfg.PinPath != a.cfg.PinPath {
		err = fmt.Errorf("%s: pin_path: changed from %s to %s: the agent cannot move its pinned state while running; run `xdpguard --pin-path %s detach --all`, then restart the agent",
			cfg.Path, a.cfg.PinPath, cfg.PinPath, a.cfg.PinPath)
	}
	a.obs.ConfigLoaded(err)
	if err != nil {
		if msg := err.Error(); msg != a.configErr || force {
			a.log.Error("config rejected; the running configuration stays in force", "file", a.opts.ConfigPath, "why", why, "error", msg)
			a.configErr = msg
		}
		a.updateStatus(func(s *Status) { s.ConfigError = err.Error() })
		return false
	}
	if a.configErr != "" {
		a.log.Info("config valid again", "file", cfg.Path)
		a.configErr = ""
	}
	a.updateStatus(func(s *Status) { s.ConfigError = "" })
	if !force && cfg.Digest == a.cfg.Digest {
		return false
	}
	if cfg.MetricsListen != a.cfg.MetricsListen {
		a.log.Warn("metrics.listen changed: it takes effect when the agent restarts", "in_force", a.cfg.MetricsListen, "in_file", cfg.MetricsListen)
	}
	if cfg.ResyncInterval != a.cfg.ResyncInterval {
		a.log.Warn("resync_interval changed: it takes effect when the agent restarts", "in_force", a.cfg.ResyncInterval, "in_file", cfg.ResyncInterval)
	}
	if cfg.Digest != a.cfg.Digest {
		a.log.Info("config changed", "file", cfg.Path, "why", why)
	}
	if ports := cfg.LoaderConfig().ResponsePorts(); len(ports) > 0 && !cfg.Interfaces.Egress {
		a.log.Warn("response ports without egress: no request is recorded, so every reply from these ports is dropped (drop_unsolicited); set interfaces.egress: true",
			"file", cfg.Path, "ports", ports)
	}
	a.cfg = cfg
	a.attackCfg.Store(&cfg.Attacks)
	a.watchFiles()
	a.reconcile(true, "config "+reloadWord(force)+": "+why)
	return true
}

func reloadWord(force bool) string {
	if force {
		return "reloaded"
	}
	return "changed"
}

// stop applies on_stop when the agent is told to stop.
func (a *Agent) stop() error {
	a.notify(sdnotify.Stopping)
	if a.cfg.OnStop != config.OnStopDetach {
		a.log.Info("agent stopping; protection stays in place", "on_stop", string(a.cfg.OnStop))
		return nil
	}
	a.log.Info("agent stopping; detaching everything", "on_stop", string(a.cfg.OnStop))
	g, err := loader.Open(a.cfg.PinPath, false)
	if errors.Is(err, loader.ErrNotSetUp) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("on_stop detach: %w", err)
	}
	defer g.Close()
	changes, err := g.DetachAll()
	for _, c := range changes {
		a.logChange(c, "agent stopping with on_stop: detach", nil)
	}
	if err != nil {
		return fmt.Errorf("on_stop detach: %w", err)
	}
	return nil
}

func (a *Agent) statusLine() string {
	st := a.Status()
	s := fmt.Sprintf("STATUS=protecting %d of %d wanted interfaces", len(st.Protected), len(st.Wanted))
	if st.ConfigError != "" {
		s += "; config on disk rejected"
	}
	return s
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd asks to
// accompany RELOADING=1.
func monotonicUsec() int64 { return monotonicNow().Microseconds() }
