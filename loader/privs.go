package loader

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrPrivileges means the process lacks the capabilities xdpguard needs.
var ErrPrivileges = errors.New("insufficient privileges")

// Capability bits (linux/capability.h).
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capBPF      = 39
)

// CheckPrivileges reports whether the process may load programs and attach
// them to interfaces: CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN).
func CheckPrivileges() error {
	eff, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	if has(capNetAdmin) && (has(capBPF) || has(capSysAdmin)) {
		return nil
	}
	return fmt.Errorf("%w: xdpguard needs CAP_BPF and CAP_NET_ADMIN: run it as root (sudo)", ErrPrivileges)
}

func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}
