package flood

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/xdpguard/xdpguard/internal/memcache"
)

// tickNs is one USER_HZ tick, the unit of /proc/stat and /proc/PID/stat
// (100 Hz on every Linux ABI Go supports here).
const tickNs = 1e9 / 100

// snapshot is every counter a window is the difference of.
//
// The receiver's CPU time is softirq time from /proc/stat, summed over all
// CPUs, plus memcached's own CPU time. Everything the reflector does with a
// frame before a socket (veth's NAPI poll with XDP, or the backlog without;
// netfilter; IP and UDP) runs as NET_RX softirq, on whichever CPU and in
// whichever task it lands. Without IRQ time accounting (this kernel) the
// kernel samples it: each scheduler tick that finds a CPU serving a softirq
// is charged to softirq, so over 10 s and 2 CPUs at 250 Hz the figure rests
// on thousands of samples. trafgen's own sending is charged to trafgen as
// system time, not here. What is left is memcached parsing and answering.
type snapshot struct {
	at                   time.Time
	rxPackets, rxDropped uint64
	txPackets            uint64
	softirq              uint64
	memcachedCPU         uint64
	getMisses, cmdGet    uint64
}

func (l *Lab) snapshot(mc *memcache.Client) (snapshot, error) {
	var s snapshot
	rx, err := l.Refl.LinkStats(ReflIf)
	if err != nil {
		return s, err
	}
	tx, err := l.Atk.LinkStats(AtkIf)
	if err != nil {
		return s, err
	}
	s.rxPackets, s.rxDropped, s.txPackets = rx.RxPackets, rx.RxDropped, tx.TxPackets
	if s.softirq, err = softirqTicks(); err != nil {
		return s, err
	}
	if s.memcachedCPU, err = processTicks(l.memcached.Process.Pid); err != nil {
		return s, err
	}
	st, err := mc.Stats()
	if err != nil {
		return s, err
	}
	s.getMisses, s.cmdGet = st["get_misses"], st["cmd_get"]
	s.at = time.Now()
	return s, nil
}

// softirqTicks is the softirq column of /proc/stat's all-CPU line.
func softirqTicks() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	// cpu user nice system idle iowait irq softirq ...
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	v, err := strconv.ParseUint(f[7], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/stat softirq: %w", err)
	}
	return v, nil
}

// processTicks is a process's user plus system time, all threads.
func processTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	// The command name may hold spaces; fields count from after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat of %d: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state(3) ... utime is field 14, stime 15 of the full line.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat of %d: too short", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	k, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat of %d: bad utime/stime", pid)
	}
	return u + k, nil
}
