package agent

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/loader"
)

// TestPendingCoalesces: a burst runs once its events stop for `quiet`, or
// `maxDelay` after its first event however long it goes on, and does all
// that any event asked for.
func TestPendingCoalesces(t *testing.T) {
	var p pending
	if _, ok := p.due(time.Now()); ok {
		t.Fatal("nothing pending, yet due")
	}
	t0 := time.Unix(1000, 0)
	p.add(t0, "link event: a", func(p *pending) { p.links = true })
	if d, ok := p.due(t0); !ok || d != quiet {
		t.Fatalf("one event: due in %v, want %v", d, quiet)
	}
	// Events keep coming every quiet/2: the burst is held back, but no
	// longer than maxDelay after its first event.
	now := t0
	for now.Sub(t0) < 2*maxDelay {
		now = now.Add(quiet / 2)
		p.add(now, "link event: b", func(p *pending) { p.links = true })
	}
	if d, _ := p.due(now); d != 0 {
		t.Fatalf("a burst longer than maxDelay: due in %v, want now", d)
	}
	p.add(now, "a watched file changed", func(p *pending) { p.reload = true })
	got, why := p.take()
	if !got.links || !got.reload || got.full {
		t.Fatalf("take: %+v, want links and reload", got)
	}
	if why != "link event: a; link event: b; a watched file changed" {
		t.Fatalf("why %q: each reason once, in order", why)
	}
	if !p.empty() {
		t.Fatal("take left the burst pending")
	}
	for i := range 10 {
		p.add(now, string(rune('a'+i)), func(p *pending) { p.full = true })
	}
	if _, why := p.take(); why != "a; b; c; d; ..." {
		t.Fatalf("many reasons: %q, want the first four and ...", why)
	}
}

// TestSplitNew: few new interfaces go in one transaction with the rest;
// many are attached after the rest, in batches of newBatch.
func TestSplitNew(t *testing.T) {
	specs := func(prefix string, n int) []loader.InterfaceSpec {
		var out []loader.InterfaceSpec
		for i := range n {
			out = append(out, loader.InterfaceSpec{Name: fmt.Sprintf("%s%d", prefix, i)})
		}
		return out
	}
	old := specs("old", 3)
	few := append(slices.Clone(old), specs("new", newBatch)...)
	if first, later := splitNew(few, old); len(first) != len(few) || later != nil {
		t.Fatalf("%d new: first %d, %d batches; want all at once", newBatch, len(first), len(later))
	}
	many := append(slices.Clone(old), specs("new", 2*newBatch+1)...)
	first, later := splitNew(many, old)
	if !slices.Equal(first, old) || len(later) != 3 || len(later[0]) != newBatch || len(later[2]) != 1 {
		t.Fatalf("%d new: first %v, batches %v", 2*newBatch+1, first, later)
	}
	var all []loader.InterfaceSpec
	for _, b := range later {
		all = append(all, b...)
	}
	if !slices.Equal(all, many[len(old):]) {
		t.Fatalf("batches %v do not hold every new interface once, in order", later)
	}
}
