// Package footprint measures the agent's own cost: its resident memory and
// CPU time while idle, and while veth pairs come and go in its namespace.
// It runs the real binary (`xdpguard agent`) in a namespace it creates, with
// a pin path of its own, and reads /proc/PID/stat and /proc/PID/status.
package footprint

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/loader"
)

// Options say what to measure.
type Options struct {
	Binary  string        // the xdpguard binary
	PinRoot string        // a fresh directory under bpffs is made beside it
	Idle    time.Duration // idle window after the agent is ready
	Pairs   int           // veth pairs created and deleted
	// MatchEvery: one pair in MatchEvery has an end the include glob
	// matches, so the agent attaches to it.
	MatchEvery int
	Batch      int // pairs created, then deleted, at a time
}

// Usage is one reading of the process.
type Usage struct {
	RSS, HWM uint64        // VmRSS and VmHWM, bytes
	CPU      time.Duration // utime + stime, every thread
}

// Result is what one run measured.
type Result struct {
	Pairs, Matched int
	Ready          Usage // when the agent said READY=1
	Idle           Usage // at the end of the idle window
	IdleFor        time.Duration
	Churn          Usage // after the last pair's pins were gone
	ChurnFor       time.Duration
	LeftPins       int // interface pin directories after the churn
}

// IdleCPU is the CPU time spent in the idle window.
func (r Result) IdleCPU() time.Duration { return r.Idle.CPU - r.Ready.CPU }

// ChurnCPU is the CPU time spent while the links came and went.
func (r Result) ChurnCPU() time.Duration { return r.Churn.CPU - r.Idle.CPU }

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports (the kernel exports it as 100
// whatever its own HZ).
const clockTick = 100

// Read reads the usage of process pid.
func Read(pid int) (Usage, error) {
	var u Usage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name (field 2) may hold spaces; fields count from its ')'.
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return u, fmt.Errorf("/proc/%d/stat: %d fields after the name, want at least 13", pid, len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return u, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	u.CPU = time.Duration(utime+stime) * time.Second / clockTick
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	if u.RSS, u.HWM, err = parseStatus(string(status)); err != nil {
		return u, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return u, nil
}

// parseStatus returns VmRSS and VmHWM, in bytes, from /proc/PID/status.
func parseStatus(s string) (rss, hwm uint64, err error) {
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", k, err)
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, errors.New("no VmRSS or VmHWM (a kernel thread, or the process is gone)")
	}
	return rss, hwm, nil
}

// Interface names: the include glob matches the first end of every
// MatchEvery-th pair; no other end matches it.
const (
	matchPrefix = "xga"
	otherPrefix = "xgn"
	peerPrefix  = "xgp"
)

func randHex() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Run measures the agent. It removes what it made: the namespace, the pin
// path, and the agent, stopped with SIGTERM (on_stop: detach).
func Run(o Options) (res Result, err error) {
	if o.MatchEvery < 1 || o.Batch < 1 || o.Pairs < 1 {
		return res, fmt.Errorf("footprint: pairs %d, match every %d, batch %d: give positive numbers", o.Pairs, o.MatchEvery, o.Batch)
	}
	if err := loader.EnsureBPFFS(filepath.Dir(o.PinRoot)); err != nil {
		return res, err
	}
	id := randHex()
	pin := o.PinRoot + "-agent-" + id
	ns, err := nstest.Create("xgba" + id)
	if err != nil {
		return res, err
	}
	defer func() {
		err = errors.Join(err, ns.Close(), os.RemoveAll(pin))
	}()
	dir, err := os.MkdirTemp("", "xgbench-agent")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "xdpguard.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`pin_path: %s
interfaces:
  include: ["%s*"]
ports: [11211]
metrics:
  listen: ""
on_stop: detach
`, pin, matchPrefix)), 0o644); err != nil {
		return res, err
	}
	a, err := start(ns, o.Binary, cfg, filepath.Join(dir, "notify.sock"))
	if err != nil {
		return res, err
	}
	defer func() {
		if a != nil {
			err = errors.Join(err, a.kill())
		}
	}()
	pid := a.cmd.Process.Pid
	if res.Ready, err = Read(pid); err != nil {
		return res, err
	}
	idleStart := time.Now()
	// The idle window: nothing happens in the namespace; the agent has
	// nothing to do but its resync timer.
	if err := a.waitExit(o.Idle); err == nil {
		return res, fmt.Errorf("agent exited while idle:\n%s", a.output())
	}
	res.IdleFor = time.Since(idleStart)
	if res.Idle, err = Read(pid); err != nil {
		return res, err
	}
	churnStart := time.Now()
	if res.Matched, err = churn(ns, pin, o); err != nil {
		return res, fmt.Errorf("%w\nagent log:\n%s", err, a.output())
	}
	res.Pairs = o.Pairs
	res.ChurnFor = time.Since(churnStart)
	if res.Churn, err = Read(pid); err != nil {
		return res, err
	}
	if res.LeftPins, err = ifacePins(pin); err != nil {
		return res, err
	}
	// Stop it: on_stop: detach removes everything under the pin path.
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return res, err
	}
	if err := a.waitExit(20 * time.Second); err != nil {
		return res, fmt.Errorf("agent still running 20 s after SIGTERM")
	}
	if st := a.cmd.ProcessState; !st.Success() {
		return res, fmt.Errorf("agent exited with %v after SIGTERM:\n%s", st, a.output())
	}
	a = nil
	if left, err := ifacePins(pin); err != nil || left != 0 {
		return res, fmt.Errorf("after SIGTERM with on_stop: detach, %d interface pin directories left under %s (%v)", left, pin, err)
	}
	return res, nil
}

// churn creates and deletes o.Pairs veth pairs in batches; after each
// batch is created it waits until the agent has attached to its matching
// ends, and after it is deleted until their pins are gone. It returns how
// many pairs matched.
func churn(ns *nstest.NS, pin string, o Options) (int, error) {
	nl := ns.Handle()
	matched := 0
	for first := 0; first < o.Pairs; first += o.Batch {
		last := min(first+o.Batch, o.Pairs)
		var names []string
		want := 0
		for i := first; i < last; i++ {
			name := fmt.Sprintf("%s%d", otherPrefix, i)
			if i%o.MatchEvery == 0 {
				name = fmt.Sprintf("%s%d", matchPrefix, i)
				want++
			}
			v := netlink.NewVeth(netlink.LinkAttrs{Name: name, NumTxQueues: 1, NumRxQueues: 1})
			v.PeerName = fmt.Sprintf("%s%d", peerPrefix, i)
			v.PeerNumTxQueues, v.PeerNumRxQueues = 1, 1
			if err := nl.LinkAdd(v); err != nil {
				return matched, fmt.Errorf("add veth %s: %w", name, err)
			}
			if err := nl.LinkSetUp(v); err != nil {
				return matched, fmt.Errorf("set %s up: %w", name, err)
			}
			names = append(names, name)
		}
		if err := nstest.WaitFor(60*time.Second, fmt.Sprintf("the agent to attach to the %d matching veths of pairs %d to %d", want, first, last-1), func() (bool, error) {
			n, err := ifacePins(pin)
			return n == want, err
		}); err != nil {
			return matched, err
		}
		matched += want
		for _, name := range names {
			// Deleting one end deletes the pair.
			if err := nl.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
				return matched, fmt.Errorf("delete veth %s: %w", name, err)
			}
		}
		if err := nstest.WaitFor(30*time.Second, fmt.Sprintf("the agent to remove the pins of pairs %d to %d", first, last-1), func() (bool, error) {
			n, err := ifacePins(pin)
			return n == 0, err
		}); err != nil {
			return matched, err
		}
	}
	return matched, nil
}

// ifacePins counts the interface directories under pin (netns/NS/IFINDEX).
func ifacePins(pin string) (int, error) {
	dirs, err := filepath.Glob(filepath.Join(pin, "netns", "*", "*"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range dirs {
		if _, err := strconv.Atoi(filepath.Base(d)); err == nil {
			n++
		}
	}
	return n, nil
}

// agent is the running agent process.
type agent struct {
	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	log    strings.Builder
}

func (a *agent) output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.log.String()
}

type lockedWriter struct{ a *agent }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.a.mu.Lock()
	defer w.a.mu.Unlock()
	return w.a.log.Write(p)
}

// waitExit waits up to d for the process to end; nil if it did.
func (a *agent) waitExit(d time.Duration) error {
	select {
	case <-a.exited:
		return nil
	case <-time.After(d):
		return errors.New("still running")
	}
}

func (a *agent) kill() error {
	_ = a.cmd.Process.Kill()
	if err := a.waitExit(20 * time.Second); err != nil {
		return fmt.Errorf("agent pid %d not gone 20 s after SIGKILL", a.cmd.Process.Pid)
	}
	return nil
}

// start runs the agent in ns (nsenter execs it: the PID is the agent's) and
// waits for its READY=1 on a notify socket.
func start(ns *nstest.NS, bin, cfg, sock string) (*agent, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	a := &agent{exited: make(chan struct{})}
	a.cmd = ns.Command(bin, "agent", "--config", cfg)
	a.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	a.cmd.Stdout, a.cmd.Stderr = lockedWriter{a}, lockedWriter{a}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s agent: %w", bin, err)
	}
	go func() {
		_ = a.cmd.Wait()
		close(a.exited)
	}()
	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:n]), "READY=1") {
				close(ready)
				return
			}
		}
	}()
	select {
	case <-ready:
		return a, nil
	case <-a.exited:
		return nil, fmt.Errorf("agent exited before READY=1: %v\n%s", a.cmd.ProcessState, a.output())
	case <-time.After(30 * time.Second):
		return nil, errors.Join(fmt.Errorf("agent not READY=1 after 30 s:\n%s", a.output()), a.kill())
	}
}
