package agent

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"time"

	"github.com/xdpguard/xdpguard/internal/agent/config"
	"github.com/xdpguard/xdpguard/loader"
)

// attackPoll is how often the monitor reads the counters: rates are per
// second, and an attack is announced within a second of min_duration.
const attackPoll = time.Second

// AttackObserver is told when attacks start and end, for metrics. An
// Options.Observer that also implements it gets these calls, from the
// monitor's goroutine; they must not block.
type AttackObserver interface {
	AttackStarted(iface string)
	AttackEnded(iface string)
}

// TopSource is one source address of an attack and its share of the drops
// sampled on the interface.
type TopSource struct {
	Address string  `json:"address"`
	Share   float64 `json:"share"`
}

// SampleSource gives the kernel's drop samples, from which the agent's
// events name an attack's top sources (only when one is set; RingSamples
// reads the kernel's).
type SampleSource interface {
	// ReadSamples returns the drop samples of the agent's network
	// namespace not returned before: those waiting and those that come
	// within a short window.
	ReadSamples() ([]loader.Sample, error)
}

// topSourcesN is how many sources an event names.
const topSourcesN = 5

// attackMonitor turns counters into attack events: one detector per
// interface (by ifindex, so a rename keeps its attack).
type attackMonitor struct {
	log     *slog.Logger
	obs     AttackObserver // nil: no metrics
	samples SampleSource   // nil: no top sources
	cfg     config.Attacks
	dets    map[int]*attackDetector
	// tallies holds, per ifindex with an attack, the sources of the
	// attack's samples so far: each read drains the ring, so an event
	// names the sources of the whole attack, not of its last read.
	tallies map[int]*sourceTally
	// told holds, per ifindex, the name the observer was given at an
	// attack's start: the end goes to the same series even if the
	// interface was renamed meanwhile.
	told map[int]string
}

func newAttackMonitor(log *slog.Logger, obs AttackObserver, samples SampleSource, cfg config.Attacks) *attackMonitor {
	return &attackMonitor{log: log, obs: obs, samples: samples, cfg: cfg, dets: map[int]*attackDetector{}, tallies: map[int]*sourceTally{}, told: map[int]string{}}
}

// setConfig takes new thresholds for every interface.
func (m *attackMonitor) setConfig(cfg config.Attacks) {
	m.cfg = cfg
	for _, d := range m.dets {
		d.setConfig(cfg)
	}
}

// step takes the counters read at now. Interfaces missing from stats
// (detached or deleted) end their attack.
func (m *attackMonitor) step(now time.Time, stats []loader.InterfaceStats) {
	byIndex := map[int]map[string]loader.Counter{}
	names := map[int]string{}
	for _, s := range stats {
		sum := byIndex[s.Ifindex]
		if sum == nil {
			sum = map[string]loader.Counter{}
			byIndex[s.Ifindex] = sum
		}
		names[s.Ifindex] = s.Interface
		for r, c := range s.Counters {
			t := sum[r]
			t.Packets += c.Packets
			t.Bytes += c.Bytes
			sum[r] = t
		}
	}
	for idx, d := range m.dets {
		if _, ok := byIndex[idx]; !ok {
			m.emit(d.gone(now, "the interface is no longer protected or no longer exists"))
			delete(m.dets, idx)
		}
	}
	for idx, counters := range byIndex {
		d := m.dets[idx]
		if d == nil {
			d = newAttackDetector(names[idx], idx, m.cfg)
			m.dets[idx] = d
			// Drops before this first read are no attack's.
			m.log.Debug("attack monitor: watching interface", "interface", names[idx], "ifindex", idx)
		}
		d.iface = names[idx]
		m.emit(d.observe(now, counters))
	}
}

// emit logs an event and tells the observer.
func (m *attackMonitor) emit(ev *AttackEvent) {
	if ev == nil {
		return
	}
	attrs := []any{
		"interface", ev.Interface,
		"since", ev.Start.UTC().Format(time.RFC3339Nano),
		"duration_seconds", round(ev.Duration.Seconds(), 3),
		"rate_pps", round(ev.RatePPS, 1),
		"peak_pps", round(ev.PeakPPS, 1),
		"packets", ev.Packets,
		"bytes", ev.Bytes,
	}
	if len(ev.Reasons) > 0 {
		rs := make(map[string]float64, len(ev.Reasons))
		for r, v := range ev.Reasons {
			rs[r] = round(v, 1)
		}
		attrs = append(attrs, "reasons_pps", rs)
	}
	if ev.Why != "" {
		attrs = append(attrs, "why", ev.Why)
	}
	switch ev.Kind {
	case AttackStarted:
		m.tallies[ev.Ifindex] = newSourceTally(ev.Start)
	case AttackEnded:
		delete(m.tallies, ev.Ifindex)
	}
	if tally := m.tallies[ev.Ifindex]; tally != nil && m.samples != nil {
		if err := m.readSamples(); err != nil {
			m.log.Debug("no top sources for the attack event", "interface", ev.Interface, "error", err)
		} else {
			attrs = append(attrs, "top_sources", tally.top(topSourcesN))
		}
	}
	level := slog.LevelWarn
	if ev.Kind == AttackEnded {
		level = slog.LevelInfo
	}
	m.log.Log(context.Background(), level, ev.Kind.String(), attrs...)
	if m.obs == nil {
		return
	}
	switch ev.Kind {
	case AttackStarted:
		m.told[ev.Ifindex] = ev.Interface
		m.obs.AttackStarted(ev.Interface)
	case AttackEnded:
		name, ok := m.told[ev.Ifindex]
		if !ok {
			name = ev.Interface
		}
		delete(m.told, ev.Ifindex)
		m.obs.AttackEnded(name)
	}
}

func round(v float64, places int) float64 {
	p := math.Pow10(places)
	return math.Round(v*p) / p
}

// runAttacks reads the counters under pinPath every attackPoll until ctx
// ends. cfg returns the attack thresholds in force (they change on reload).
// It opens the pinned state read-only each time, as a scrape does: it never
// takes the pin path's lock, so it never holds up a reconcile.
func (a *Agent) runAttacks(ctx context.Context, pinPath string) {
	cfg := *a.attackCfg.Load()
	var obs AttackObserver
	if o, ok := a.opts.Observer.(AttackObserver); ok {
		obs = o
	}
	m := newAttackMonitor(a.log, obs, a.opts.Samples, cfg)
	t := time.NewTicker(attackPoll)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if c := *a.attackCfg.Load(); c != cfg {
			cfg = c
			m.setConfig(c)
		}
		stats, err := readStats(pinPath)
		if errors.Is(err, loader.ErrNotSetUp) {
			stats, err = nil, nil // nothing attached: no interface under attack
		}
		if err != nil {
			// An interface detached between listing and reading fails
			// one read; the next sees the state after it.
			if msg := err.Error(); msg != lastErr {
				a.log.Debug("attack monitor: cannot read the counters", "error", msg)
				lastErr = msg
			}
			continue
		}
		lastErr = ""
		m.step(time.Now(), stats)
	}
}

func readStats(pinPath string) ([]loader.InterfaceStats, error) {
	g, err := loader.OpenReadOnly(pinPath)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	return g.Stats()
}

// readSamples drains the sample source into the tallies of the interfaces
// under attack; samples of other interfaces belong to no attack.
func (m *attackMonitor) readSamples() error {
	samples, err := m.samples.ReadSamples()
	if err != nil {
		return err
	}
	for _, s := range samples {
		if t := m.tallies[s.Ifindex]; t != nil {
			t.add(s)
		}
	}
	return nil
}
