package flood

import (
	"context"
	"errors"
	"time"

	"github.com/xdpguard/xdpguard/internal/bench/quantile"
	"github.com/xdpguard/xdpguard/internal/memcache"
	"github.com/xdpguard/xdpguard/internal/nstest"
)

// opTimeout bounds every memcached request, so a starved memcached shows up
// as a timeout rather than a hang.
const opTimeout = time.Second

// dial connects to memcached from inside ns.
func dial(ns *nstest.NS, addr string) (*memcache.Client, error) {
	return memcache.Dial(ns, addr, opTimeout)
}

// Latency is the TCP get latency the client saw during a window.
type Latency struct {
	Timeouts int             // gets not answered within opTimeout
	rtts     []time.Duration // of answered gets
}

// N is the number of gets answered.
func (l Latency) N() int { return len(l.rtts) }

// P50 and P99 are percentiles of the answered gets' round trips.
func (l Latency) P50() time.Duration { return l.quantile(0.50) }
func (l Latency) P99() time.Duration { return l.quantile(0.99) }

func (l Latency) quantile(q float64) time.Duration {
	ns := make([]float64, len(l.rtts))
	for i, d := range l.rtts {
		ns[i] = float64(d)
	}
	return time.Duration(quantile.Of(ns, q))
}

func (l *Latency) merge(o Latency) {
	l.Timeouts += o.Timeouts
	l.rtts = append(l.rtts, o.rtts...)
}

// latencyInterval paces the client: 1000 gets a second at most, a light
// legitimate load whose cost is the same under every setup.
const latencyInterval = time.Millisecond

// latencyKey is the key the client sets at start-up and gets during floods.
const latencyKey = "lat"

// MeasureLatency sends one get of latencyKey every latencyInterval until
// ctx ends, each bounded by opTimeout; a failed get reconnects. It returns
// an error only if it never got an answer.
func MeasureLatency(ctx context.Context, ns *nstest.NS, addr string) (Latency, error) {
	var lat Latency
	var rtts []time.Duration
	c, err := dial(ns, addr)
	if err != nil {
		return lat, err
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	tick := time.NewTicker(latencyInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if len(rtts) == 0 {
				return lat, errors.New("memcached answered no TCP get during the flood")
			}
			lat.rtts = rtts
			return lat, nil
		case <-tick.C:
		}
		if c == nil {
			if c, err = dial(ns, addr); err != nil {
				lat.Timeouts++
				continue
			}
		}
		start := time.Now()
		if _, found, err := c.Get(latencyKey); err != nil || !found {
			lat.Timeouts++
			c.Close()
			c = nil
			continue
		}
		rtts = append(rtts, time.Since(start))
	}
}
