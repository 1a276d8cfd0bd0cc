package agent

import (
	"maps"
	"time"

	"github.com/xdpguard/xdpguard/internal/agent/config"
	"github.com/xdpguard/xdpguard/loader"
)

// An attack, to the agent, is a drop rate on one interface that stays at or
// above the configured threshold. The detector below decides when one starts
// and ends from nothing but the times and counter values it is given, so its
// tests drive it with a fake clock; the monitor (attackmon.go) feeds it the
// kernel's counters once a second and turns its events into log lines and
// metrics.

// AttackEventKind is what an attack event says.
type AttackEventKind int

const (
	// AttackStarted: the rate has stayed at or above the threshold for
	// the minimum duration.
	AttackStarted AttackEventKind = iota + 1
	// AttackOngoing: the attack goes on; at most one per update period.
	AttackOngoing
	// AttackEnded: the rate has stayed below the threshold for the quiet
	// period, or the interface went away.
	AttackEnded
)

func (k AttackEventKind) String() string {
	switch k {
	case AttackStarted:
		return "attack started"
	case AttackOngoing:
		return "attack ongoing"
	case AttackEnded:
		return "attack ended"
	}
	return "attack event"
}

// AttackEvent is one event of one attack.
type AttackEvent struct {
	Kind      AttackEventKind
	Interface string
	Ifindex   int
	// Start is when the attack began: the start of the first counter
	// interval at or above the threshold, or of the interval before it
	// when that one had drops (a flood's first partial second).
	Start time.Time
	// Duration is from Start to the last moment the rate was at or above
	// the threshold (to now for started and ongoing).
	Duration time.Duration
	// RatePPS is the drop rate over the last counter interval, and
	// Reasons the same split by reason (reasons with drops only).
	RatePPS float64
	Reasons map[string]float64
	// PeakPPS is the highest one-interval rate of the attack so far.
	PeakPPS float64
	// Packets and Bytes are the drops counted since Start, the quiet
	// period included (drops of the attack's tail are its drops too).
	Packets, Bytes uint64
	// Why says why an attack ended early (the interface went away).
	Why string
}

// dropReasons are the reasons an attack is made of: every drop, and
// would_drop (monitor mode counts what enforce would drop).
var dropReasons = func() []string {
	var out []string
	for _, r := range loader.Reasons() {
		if r.Dropped() || r == loader.ReasonWouldDrop {
			out = append(out, r.String())
		}
	}
	return out
}()

// attackDetector follows one interface's counters. It is not safe for
// concurrent use; the monitor owns it.
type attackDetector struct {
	cfg     config.Attacks
	iface   string
	ifindex int

	prev   map[string]loader.Counter // counters at prevAt, by reason
	prevAt time.Time

	// A candidate or an attack: above (since aboveSince) marks a run of
	// intervals at or above the threshold; active an announced attack.
	above      bool
	aboveSince time.Time
	// lead is the last interval below the threshold (outside an
	// attack); from is when the attack being considered began: the
	// lead's start when it had drops, else aboveSince.
	lead       interval
	from       time.Time
	active     bool
	start      time.Time
	belowSince time.Time // start of the run of quiet intervals, if below
	below      bool
	lastEvent  time.Time
	peak       float64
	packets    uint64
	bytes      uint64
}

// interval is the drops of one counter interval starting at from.
type interval struct {
	from           time.Time
	packets, bytes uint64
}

func newAttackDetector(iface string, ifindex int, cfg config.Attacks) *attackDetector {
	return &attackDetector{iface: iface, ifindex: ifindex, cfg: cfg}
}

// setConfig takes new thresholds; a running attack keeps going and is
// judged by them from the next interval on.
func (d *attackDetector) setConfig(cfg config.Attacks) { d.cfg = cfg }

// observe takes the interface's cumulative counters (by reason, summed over
// hooks) read at now and returns the event they make, if any. The first
// observation only sets the baseline. Counters that went backwards (the
// interface was detached and attached again) start a new baseline; an
// attack in progress keeps what it counted.
func (d *attackDetector) observe(now time.Time, counters map[string]loader.Counter) *AttackEvent {
	cur := make(map[string]loader.Counter, len(dropReasons))
	for _, r := range dropReasons {
		cur[r] = counters[r]
	}
	prev, prevAt := d.prev, d.prevAt
	d.prev, d.prevAt = cur, now
	dt := now.Sub(prevAt).Seconds()
	if prev == nil || dt <= 0 {
		return nil
	}
	var pkts, bytes uint64
	reasons := map[string]float64{}
	for _, r := range dropReasons {
		c, p := cur[r], prev[r]
		if c.Packets < p.Packets || c.Bytes < p.Bytes {
			d.lead = interval{}
			return nil // counters reset: this interval is unknown
		}
		if dp := c.Packets - p.Packets; dp > 0 {
			pkts += dp
			bytes += c.Bytes - p.Bytes
			reasons[r] = float64(dp) / dt
		}
	}
	rate := float64(pkts) / dt
	atOrAbove := d.cfg.ThresholdPPS > 0 && rate >= float64(d.cfg.ThresholdPPS)

	if !d.active {
		if !atOrAbove {
			d.above, d.packets, d.bytes, d.peak = false, 0, 0, 0
			d.lead = interval{from: prevAt, packets: pkts, bytes: bytes}
			return nil
		}
		if !d.above {
			// A flood rarely starts on a second's boundary: the
			// interval before the first one at or above the
			// threshold holds its first packets. It belongs to the
			// attack when it had drops.
			d.above, d.aboveSince, d.from = true, prevAt, prevAt
			if d.lead.packets > 0 && d.lead.from.Before(prevAt) {
				d.from = d.lead.from
				d.packets, d.bytes = d.lead.packets, d.lead.bytes
			}
			d.lead = interval{}
		}
		d.packets += pkts
		d.bytes += bytes
		d.peak = max(d.peak, rate)
		if now.Sub(d.aboveSince) < d.cfg.MinDuration {
			return nil
		}
		d.active, d.start, d.below, d.lastEvent = true, d.from, false, now
		return d.event(AttackStarted, now, rate, reasons)
	}

	d.packets += pkts
	d.bytes += bytes
	if atOrAbove {
		d.below = false
		d.peak = max(d.peak, rate)
		if d.cfg.UpdateEvery > 0 && now.Sub(d.lastEvent) >= d.cfg.UpdateEvery {
			d.lastEvent = now
			return d.event(AttackOngoing, now, rate, reasons)
		}
		return nil
	}
	if !d.below {
		d.below, d.belowSince = true, prevAt
	}
	if now.Sub(d.belowSince) < d.cfg.QuietPeriod {
		return nil
	}
	ev := d.event(AttackEnded, d.belowSince, rate, reasons)
	d.reset()
	return ev
}

// gone ends an attack in progress on an interface that went away (or is no
// longer protected), at now.
func (d *attackDetector) gone(now time.Time, why string) *AttackEvent {
	if !d.active {
		return nil
	}
	end := now
	if d.below {
		end = d.belowSince
	}
	ev := d.event(AttackEnded, end, 0, nil)
	ev.Why = why
	d.reset()
	return ev
}

func (d *attackDetector) reset() {
	d.active, d.above, d.below = false, false, false
	d.packets, d.bytes, d.peak = 0, 0, 0
}

// event reports the attack as it stands, lasting until end.
func (d *attackDetector) event(kind AttackEventKind, end time.Time, rate float64, reasons map[string]float64) *AttackEvent {
	return &AttackEvent{
		Kind: kind, Interface: d.iface, Ifindex: d.ifindex, Start: d.start, Duration: end.Sub(d.start),
		RatePPS: rate, Reasons: maps.Clone(reasons), PeakPPS: d.peak,
		Packets: d.packets, Bytes: d.bytes,
	}
}
