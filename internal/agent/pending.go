package agent

import (
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// pending coalesces events into one reconcile: it runs once events have
// been quiet for `quiet`, or `maxDelay` after the first, whichever is
// sooner, and does all that any of them asked for.
type pending struct {
	reload bool // read the config again (a watched file changed)
	full   bool // reconcile config and allow list too, not only interfaces
	links  bool // reconcile interfaces
	whys   []string
	// first and last are when the burst's first and latest events came.
	first, last time.Time
}

func (p *pending) empty() bool { return !p.reload && !p.full && !p.links }

func (p *pending) add(now time.Time, why string, set func(p *pending)) {
	if p.empty() {
		p.first = now
	}
	p.last = now
	set(p)
	switch {
	case slices.Contains(p.whys, why):
	case len(p.whys) < 4:
		p.whys = append(p.whys, why)
	case len(p.whys) == 4:
		p.whys = append(p.whys, "...")
	}
}

// due says how long until the reconcile should run, if one is pending.
func (p *pending) due(now time.Time) (time.Duration, bool) {
	if p.empty() {
		return 0, false
	}
	wait := min(p.last.Add(quiet).Sub(now), p.first.Add(maxDelay).Sub(now))
	return max(wait, 0), true
}

// take ends the burst and returns it, with its reasons in words.
func (p *pending) take() (pending, string) {
	got := *p
	*p = pending{}
	return got, strings.Join(got.whys, "; ")
}

// monotonicNow is CLOCK_MONOTONIC, the clock systemd's MONOTONIC_USEC uses.
func monotonicNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}
