package loader

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// presampleObject is a data plane from before drop sampling: the netns
// layout, no sampling maps (testdata/v1/README.md).
const presampleObject = "testdata/v1/xdpguard_bpfel.o"

// TestUpgradeAddsSampling: an interface attached by the release before
// sampling upgrades in place (the same XDP link, its counters kept) and gets
// its sample counters and the shared sampling maps; its drops are then
// sampled and counted, sampled + suppressed == drops from the upgrade on.
func TestUpgradeAddsSampling(t *testing.T) {
	r := newRig(t)
	linkID := attachObject(t, presampleObject, func(netns uint64, ifindex int) string {
		return filepath.Join(r.pin, netnsDir, strconv.FormatUint(netns, 10), strconv.Itoa(ifindex))
	}, r.host, r.pin, rigHostIf, "")
	for _, name := range []string{pinSamples, pinSampleRate, pinSampleBudget} {
		if _, err := os.Stat(filepath.Join(r.pin, name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the old release's state has %s: %v", name, err)
		}
	}
	// A reader of the old state gets no sample counters and no error.
	r.host.Do(func() error {
		g, err := OpenReadOnly(r.pin)
		if err != nil {
			t.Fatalf("read-only open of the old state: %v", err)
		}
		defer g.Close()
		st, err := g.Stats()
		if err != nil || len(st) != 1 || st[0].Samples != nil {
			t.Fatalf("stats of the old state: %+v, %v: want one hook, no sample counters", st, err)
		}
		if rd, err := g.OpenSamples(); err == nil || !strings.Contains(err.Error(), "release before sampling") {
			if rd != nil {
				rd.Close()
			}
			t.Fatalf("reading samples of the old state: %v, want an error saying it predates sampling", err)
		}
		return nil
	})
	r.send(t, request(t, attacker))
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": 1})

	res := r.attach(t, AttachOptions{})
	if res.Action != "replaced" {
		t.Fatalf("upgrade attach: %+v, want replaced", res)
	}
	if got := r.xdpLinkID(t, rigHostIf); got != linkID {
		t.Fatalf("the upgrade re-made the XDP link (%d, was %d): a gap", got, linkID)
	}
	for _, name := range []string{pinSamples, pinSampleRate, pinSampleBudget} {
		if _, err := os.Stat(filepath.Join(r.pin, name)); err != nil {
			t.Fatalf("after the upgrade: %v", err)
		}
	}
	l := r.hostLink(t)
	ns := netnsOf(t, r.host)
	if _, err := os.Stat(filepath.Join(r.pin, netnsDir, strconv.FormatUint(ns, 10), strconv.Itoa(l.Attrs().Index), pinSampleStats)); err != nil {
		t.Fatalf("no sample counters pinned by the upgrade: %v", err)
	}

	var rd *SampleReader
	r.do(t, func(g *Guard) (err error) {
		if rate, err := g.Maps.SampleRate(); err != nil || rate != DefaultSampleRate {
			t.Errorf("sampling rate after the upgrade: %d, %v, want %d", rate, err, DefaultSampleRate)
		}
		rd, err = g.OpenSamples()
		return err
	})
	defer rd.Close()
	r.send(t, request(t, attacker))
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": 2}) // kept
	rd.SetDeadline(time.Now().Add(5 * time.Second))
	s, err := rd.Read()
	if err != nil {
		t.Fatalf("no sample of the drop after the upgrade: %v", err)
	}
	if s.Reason != ReasonDropRequest || s.Hook != HookXDP || s.Ifindex != l.Attrs().Index || s.Netns != ns || s.Src != attacker {
		t.Fatalf("sample %+v: want drop_request at xdp on ifindex %d netns %d from %s", s, l.Attrs().Index, ns, attacker)
	}
	nstest.Eventually(t, 5*time.Second, "one sample counted", func() (bool, error) {
		var st []InterfaceStats
		err := r.host.Do(func() error {
			g, err := OpenReadOnly(r.pin)
			if err != nil {
				return err
			}
			defer g.Close()
			st, err = g.Stats()
			return err
		})
		if err != nil {
			return false, err
		}
		c := st[0].Samples[ReasonDropRequest.String()]
		return c == (SampleCounter{Sampled: 1}), nil
	})
	r.do(t, func(g *Guard) error { _, err := g.DetachAll(); return err })
	r.requireNothingLeft(t, "after detach")
}
