package loader

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
)

// openFragsPin returns the pinned fragment table (or request table: a cache
// too) at path, or, when it has
// another layout than want (an older release's) and upgrade is set, a new
// empty table of want's layout pinned in its place. upgrade is the opener's
// create: attach, the one change that loads programs, replaces the table;
// other opens (readers without the lock, configuration commands) leave it
// as it is, since they never touch it.
//
// The table is a cache of first-fragment verdicts that live seconds, so
// nothing is copied. Programs still attached keep the old table until the
// attach that follows swaps them for new ones, which use the new table: for
// the moment between, a later fragment whose first fragment was recorded in
// the other table is an orphan (passed in track, dropped in strict), exactly
// as after a restart. Protected datagrams that are whole, and first
// fragments, are judged on their own headers throughout: no gap opens. A
// failed attach does not put the old table back: the programs still using it
// hold it, and the next attach uses the new one.
func openFragsPin(path string, want *ebpf.MapSpec, cur *ebpf.Map, upgrade bool) (*ebpf.Map, error) {
	if !upgrade || want.Compatible(cur) == nil {
		return cur, nil
	}
	defer cur.Close()
	next, err := ebpf.NewMap(want)
	if err != nil {
		return nil, fmt.Errorf("create the new layout of %s: %w", path, err)
	}
	// Pin beside the old one, then rename over it: bpffs renames
	// atomically, so the path never names no table. (bpffs refuses names
	// with a dot.)
	tmp := path + "_new"
	_ = os.Remove(tmp) // left by a crash mid-upgrade
	if err := next.Pin(tmp); err != nil {
		next.Close()
		return nil, fmt.Errorf("pin the new %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		next.Unpin()
		next.Close()
		return nil, fmt.Errorf("replace %s: %w", path, err)
	}
	return next, nil
}
