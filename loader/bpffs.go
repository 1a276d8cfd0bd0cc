package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// DefaultPinPath is where attach pins its programs, links and maps.
const DefaultPinPath = "/sys/fs/bpf/xdpguard"

// bpffsRoot is where a missing BPF filesystem is mounted.
const bpffsRoot = "/sys/fs/bpf"

// ErrNotBPFFS means the pin path is not on a BPF filesystem.
var ErrNotBPFFS = errors.New("not on a BPF filesystem")

func isBPFFS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, err
	}
	return st.Type == unix.BPF_FS_MAGIC, nil
}

// nearestExisting returns path or its closest existing ancestor.
func nearestExisting(path string) string {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || p == "/" {
			return p
		}
	}
}

// EnsureBPFFS makes sure pinPath can hold pins: when it lies under
// /sys/fs/bpf and no BPF filesystem is mounted there, it mounts one (as
// systemd does at boot); any other path must already be on a BPF filesystem.
func EnsureBPFFS(pinPath string) error {
	pinPath = filepath.Clean(pinPath)
	if ok, err := isBPFFS(nearestExisting(pinPath)); err == nil && ok {
		return nil
	}
	under := pinPath == bpffsRoot || filepath.Dir(pinPath) == bpffsRoot ||
		len(pinPath) > len(bpffsRoot) && pinPath[:len(bpffsRoot)+1] == bpffsRoot+"/"
	if !under {
		return fmt.Errorf("pin path %s: %w: choose a directory under %s, or mount one first: mount -t bpf bpf %s",
			pinPath, ErrNotBPFFS, bpffsRoot, filepath.Dir(pinPath))
	}
	if ok, err := isBPFFS(bpffsRoot); err == nil && ok {
		return nil
	}
	if err := os.MkdirAll(bpffsRoot, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", bpffsRoot, err)
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w (mount it by hand: mount -t bpf bpf %s)", bpffsRoot, err, bpffsRoot)
	}
	return nil
}

// lockDir takes an exclusive flock on dir: writers of one pin path are
// serialised, so a config read-modify-write never loses another's change.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}
