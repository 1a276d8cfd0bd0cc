package agent_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/loader"
)

// xdpguardBin is the binary TestMain built, "" when not running as root.
var xdpguardBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("agent: skipping the process tests: they need root (namespaces, XDP, bpffs); run `sudo make test`")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "xdpguard-agent-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
	bin := filepath.Join(dir, "xdpguard")
	build := exec.Command("go", "build", "-o", bin, "./cmd/xdpguard")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "agent: go build ./cmd/xdpguard: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	xdpguardBin = bin
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// host is a namespace for an agent, with a pin path of its own and a peer
// namespace that holds the far ends of its veths.
type host struct {
	ns, peer *nstest.NS
	pin      string
	dir      string // config directory
	// wrap, if set, is the command the agent runs under (setpriv ...).
	wrap []string
}

func newHost(t *testing.T) *host {
	t.Helper()
	nstest.RequireRoot(t)
	h := &host{ns: nstest.New(t, "xga"), peer: nstest.New(t, "xgb"), dir: t.TempDir()}
	h.pin = "/sys/fs/bpf/xgtest-agent-" + randHex(4)
	// Registered after the namespaces, so it runs before they go: detach
	// what any agent left, from inside the namespace, then remove the pins.
	t.Cleanup(func() {
		if _, err := os.Stat(h.pin); err == nil {
			if out, err := h.ns.Run(xdpguardBin, "--pin-path", h.pin, "detach", "--all"); err != nil {
				t.Errorf("cleanup: %v %s", err, out)
			}
		}
		if err := os.RemoveAll(h.pin); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return h
}

// veth makes a veth whose end name is in the host namespace (up), and whose
// peer is in the peer namespace.
func (h *host) veth(t *testing.T, name string) {
	t.Helper()
	nstest.Veth(t, h.ns, name, h.peer, "p"+name, 0)
}

// writeConfig writes the agent's config with the host's pin path in front
// and returns its path; it replaces the file by rename, as configuration
// management does.
func (h *host) writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(h.dir, "xdpguard.yaml")
	metrics := "metrics:\n  listen: \"\"\n" // off unless the test asks
	if strings.Contains(body, "metrics:") {
		metrics = "\n\n"
	}
	writeAtomic(t, p, "pin_path: "+h.pin+"\n"+metrics+body)
	return p
}

func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp-" + randHex(2)
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// agentProc is a running `xdpguard agent`, its log and what it told
// systemd.
type agentProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *lines
	notes  *lines // sd_notify messages, through a real NOTIFY_SOCKET
}

// lines collects text lines safely across goroutines.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (ls *lines) add(s string) { ls.mu.Lock(); ls.l = append(ls.l, s); ls.mu.Unlock() }

func (ls *lines) all() []string { ls.mu.Lock(); defer ls.mu.Unlock(); return slices.Clone(ls.l) }

// count counts lines containing every one of subs.
func (ls *lines) count(subs ...string) int {
	n := 0
	for _, l := range ls.all() {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// startAgent runs the agent in the host namespace on the config at cfg and
// waits for READY=1.
func (h *host) startAgent(t *testing.T, cfg string, extra ...string) *agentProc {
	t.Helper()
	a := &agentProc{exited: make(chan struct{}), log: &lines{}, notes: &lines{}}
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			a.notes.add(string(buf[:n]))
		}
	}()
	args := append([]string{"agent", "--config", cfg, "--log-format", "json", "--log-level", "debug"}, extra...)
	if len(h.wrap) > 0 {
		a.cmd = h.ns.Command(h.wrap[0], append(append(h.wrap[1:len(h.wrap):len(h.wrap)], xdpguardBin), args...)...)
	} else {
		a.cmd = h.ns.Command(xdpguardBin, args...)
	}
	a.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			a.log.add(sc.Text())
		}
	}()
	go func() {
		<-logDone
		_ = a.cmd.Wait()
		conn.Close()
		close(a.exited)
	}()
	t.Cleanup(func() {
		a.kill()
		if t.Failed() {
			t.Logf("agent log:\n%s", strings.Join(a.log.all(), "\n"))
		}
	})
	nstest.Eventually(t, 20*time.Second, "the agent to send READY=1", func() (bool, error) {
		select {
		case <-a.exited:
			// It will not become ready: say why now, not at the deadline.
			t.Fatalf("the agent exited before READY=1: %v\n%s", a.cmd.ProcessState, strings.Join(a.log.all(), "\n"))
		default:
		}
		return a.notes.count("READY=1") > 0, nil
	})
	return a
}

// logged waits for a log line holding every one of subs (a pass logs its
// changes after making them, so the kernel or the status can show a change
// before its line comes) and returns how many such lines there are.
func (a *agentProc) logged(t *testing.T, subs ...string) int {
	t.Helper()
	nstest.Eventually(t, 5*time.Second, fmt.Sprintf("a log line with %q", subs), func() (bool, error) {
		return a.log.count(subs...) > 0, nil
	})
	return a.log.count(subs...)
}

func (a *agentProc) kill() {
	select {
	case <-a.exited:
		return
	default:
	}
	_ = a.cmd.Process.Kill()
	<-a.exited
}

// signal sends sig and, for a stop, waits for the process to end.
func (a *agentProc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.exited:
	case <-time.After(nstest.Scaled(20 * time.Second)):
		t.Fatalf("agent still running %v after %v", nstest.Scaled(20*time.Second), sig)
	}
}

// status is `xdpguard status --json`.
type status struct {
	Attachments []struct {
		Interface string `json:"interface"`
		Ifindex   int    `json:"ifindex"`
		Hook      string `json:"hook"`
		Mode      string `json:"mode"`
		ProgramID uint32 `json:"program_id"`
	} `json:"attachments"`
	Config struct {
		Mode  string      `json:"mode"`
		Ports portNumbers `json:"ports"`
		Allow struct {
			IPv4 int `json:"ipv4"`
			IPv6 int `json:"ipv6"`
		} `json:"allow"`
		Fragments string `json:"fragments"`
	} `json:"config"`
}

// portNumbers reads status's ports ({"port": 53, "direction": ...}) as
// their numbers: the agent's tests configure ports of direction both.
type portNumbers []uint16

func (p *portNumbers) UnmarshalJSON(b []byte) error {
	var specs []loader.PortSpec
	if err := json.Unmarshal(b, &specs); err != nil {
		return err
	}
	*p = loader.PortNumbers(specsPorts(specs))
	return nil
}

func specsPorts(specs []loader.PortSpec) []loader.Port {
	out := make([]loader.Port, len(specs))
	for i, s := range specs {
		out[i] = loader.Port{Number: s.Port, Direction: loader.Direction(s.Direction)}
	}
	return out
}

func (h *host) status(t *testing.T) status {
	t.Helper()
	st, err := h.tryStatus()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (h *host) tryStatus() (status, error) {
	var st status
	cmd := h.ns.Command(xdpguardBin, "--pin-path", h.pin, "status", "--json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return st, fmt.Errorf("status --json: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("status --json: %w: %s", err, out)
	}
	return st, nil
}

// xdp maps each interface with an XDP attachment to its program id.
func (st status) xdp() map[string]uint32 {
	m := map[string]uint32{}
	for _, a := range st.Attachments {
		if a.Hook == "xdp" {
			m[a.Interface] = a.ProgramID
		}
	}
	return m
}

func (st status) has(iface, hook string) bool {
	for _, a := range st.Attachments {
		if a.Interface == iface && a.Hook == hook && a.ProgramID != 0 {
			return true
		}
	}
	return false
}

// kernelXDP is the XDP program id the kernel reports on an interface of
// the host namespace (0: none): the ground truth, not xdpguard's word.
func (h *host) kernelXDP(t *testing.T, name string) uint32 {
	t.Helper()
	l, err := h.ns.Link(name)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return x.ProgId
	}
	return 0
}

// allowList is `xdpguard allow list --json`.
func (h *host) allowList(t *testing.T) []string {
	t.Helper()
	out, err := h.ns.Command(xdpguardBin, "--pin-path", h.pin, "allow", "list", "--json").Output()
	if err != nil {
		t.Fatalf("allow list --json: %v", err)
	}
	var al struct {
		IPv4 []string `json:"ipv4"`
		IPv6 []string `json:"ipv6"`
	}
	if err := json.Unmarshal(out, &al); err != nil {
		t.Fatalf("allow list --json: %v: %s", err, out)
	}
	return append(al.IPv4, al.IPv6...)
}

// waitFor is Eventually on the host's status.
func (h *host) waitFor(t *testing.T, timeout time.Duration, what string, cond func(st status) bool) status {
	t.Helper()
	var st status
	nstest.Eventually(t, timeout, what, func() (bool, error) {
		var err error
		if st, err = h.tryStatus(); err != nil {
			// Read while the agent changes the state, status may
			// fail; the next poll reads it again.
			return false, err
		}
		return cond(st), fmt.Errorf("status: %+v", st)
	})
	return st
}

// pinsFor lists paths under the pin path with a component equal to the
// ifindex: a per-interface entry the loader made for it.
func (h *host) pinsFor(t *testing.T, ifindex int) []string {
	t.Helper()
	var found []string
	want := fmt.Sprint(ifindex)
	_ = filepath.WalkDir(h.pin, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == want {
			found = append(found, p)
		}
		return nil
	})
	return found
}
