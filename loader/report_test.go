package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// TestReadersSkipIncompleteEntries: status and stats take no lock, so they
// may meet an interface's directory before its pins exist (an attach half
// way) or after they went (a detach half way). They list what is complete
// and leave the rest out, not fail: vmtest on 5.10 saw `xdpguard status`
// fail with "open counters: no such file or directory" beside an agent
// attaching.
func TestReadersSkipIncompleteEntries(t *testing.T) {
	r := newRig(t)
	nstest.Veth(t, r.peer, "xg2", r.host, "xg3", 0)
	r.attach(t, AttachOptions{Egress: true})
	xg3, err := r.host.Link("xg3")
	if err != nil {
		t.Fatal(err)
	}
	ns := netnsOf(t, r.host)
	// xg3: a directory with no pins yet. 999999: one with counters only.
	empty := filepath.Join(r.pin, netnsDir, strconv.FormatUint(ns, 10), strconv.Itoa(xg3.Attrs().Index))
	statsOnly := filepath.Join(r.pin, netnsDir, strconv.FormatUint(ns, 10), "999999")
	for _, d := range []string{empty, statsOnly} {
		if err := os.Mkdir(d, sharedPinMode); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	spec, _, err := specs()
	if err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(spec.Maps["xdpguard_stats"])
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(statsOnly, pinStats)); err != nil {
		t.Fatal(err)
	}

	err = r.host.Do(func() error {
		g, err := OpenReadOnly(r.pin)
		if err != nil {
			return err
		}
		defer g.Close()
		atts, err := g.Attachments()
		if err != nil {
			return fmt.Errorf("status beside incomplete entries: %w", err)
		}
		if len(atts) != 2 || atts[0].Interface != rigHostIf || atts[1].Interface != rigHostIf || atts[0].ProgramID == 0 || atts[1].ProgramID == 0 {
			return fmt.Errorf("status beside incomplete entries: %+v, want xg1's xdp and tc only", atts)
		}
		st, err := g.Stats()
		if err != nil {
			return fmt.Errorf("stats beside incomplete entries: %w", err)
		}
		if len(st) != 2 || st[0].Interface != rigHostIf || st[1].Interface != rigHostIf {
			return fmt.Errorf("stats beside incomplete entries: %+v, want xg1's xdp and tc only", st)
		}
		if _, err := g.Stats("xg3"); !errors.Is(err, ErrNotAttached) {
			return fmt.Errorf("stats xg3, half attached: %v, want ErrNotAttached", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReadersRaceAttachDetach: readers (status, stats) running while a
// writer attaches and detaches an interface over and over never fail, with
// either egress backend (legacy also removes a clsact qdisc under them).
// xg3 stays attached throughout, so the state itself stays.
func TestReadersRaceAttachDetach(t *testing.T) {
	for _, backend := range egressBackends(t) {
		t.Run(string(backend), func(t *testing.T) {
			r := newRig(t)
			nstest.Veth(t, r.peer, "xg2", r.host, "xg3", 0)
			if _, err := r.tryAttach("xg3", AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			var done atomic.Bool
			var reads atomic.Int64
			var wg sync.WaitGroup
			readErrs := make(chan error, 2)
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !done.Load() {
						err := r.host.Do(func() error {
							g, err := OpenReadOnly(r.pin)
							if err != nil {
								return err
							}
							defer g.Close()
							if _, err := g.Attachments(); err != nil {
								return fmt.Errorf("status: %w", err)
							}
							if _, err := g.Stats(); err != nil {
								return fmt.Errorf("stats: %w", err)
							}
							return nil
						})
						if err != nil {
							readErrs <- err
							return
						}
						reads.Add(1)
					}
				}()
			}
			cycles := 8
			if nstest.Emulated() {
				// Each attach verifies both programs, seconds
				// under TCG, where the readers get through many
				// reads per cycle all the same.
				cycles = 4
			}
			var werr error
			for i := 0; i < cycles && werr == nil && len(readErrs) == 0; i++ {
				if _, werr = r.tryAttach(rigHostIf, AttachOptions{Egress: true, TCBackend: backend}); werr == nil {
					werr = r.host.Do(func() error {
						g, err := Open(r.pin, false)
						if err != nil {
							return err
						}
						defer g.Close()
						_, err = g.Detach(rigHostIf)
						return err
					})
				}
			}
			done.Store(true)
			wg.Wait()
			close(readErrs)
			if werr != nil {
				t.Fatalf("writer: %v", werr)
			}
			for err := range readErrs {
				t.Errorf("a reader racing attach/detach failed: %v", err)
			}
			if reads.Load() == 0 {
				t.Fatal("no read completed while the writer ran")
			}
			t.Logf("%d reads over %d attach/detach cycles", reads.Load(), cycles)
		})
	}
}
