package nstest

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// OnOneCPU runs fn on a thread bound to the first CPU this process may use,
// then puts the thread's affinity back: for work whose kernel state is per
// CPU (per-CPU LRU free lists, per-CPU token buckets), which a thread that
// migrates would spread over several.
func OnOneCPU(t testing.TB, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var was, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		t.Fatal(err)
	}
	for cpu := 0; cpu < 1024; cpu++ {
		if was.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.SchedSetaffinity(0, &was); err != nil {
			t.Error(err)
		}
	}()
	fn()
}
