package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpguard/xdpguard/internal/metrics"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
	"github.com/xdpguard/xdpguard/loader"
)

// kernelEgress is the egress backend attach picks on this kernel: "tcx"
// where the kernel has it, else "legacy" (clsact + cls_bpf). It asks for a
// tcx link on ifindex 0, which attaches nothing: a kernel with tcx answers
// ENODEV, one without makes cilium/ebpf report ErrNotSupported.
func kernelEgress(t *testing.T) string {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		t.Fatalf("probe tcx: %v", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: 0, Program: prog, Attach: ebpf.AttachTCXEgress})
	switch {
	case errors.Is(err, ebpf.ErrNotSupported):
		return string(loader.TCLegacy)
	case errors.Is(err, unix.ENODEV):
		return string(loader.TCX)
	case err == nil:
		l.Close()
		t.Fatal("probe tcx: a link on ifindex 0 was made")
	}
	t.Fatalf("probe tcx: %v", err)
	return ""
}

// runCLI runs the CLI in-process and returns its exit status and output.
func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	pin := "--pin-path=" + filepath.Join(t.TempDir(), "never-created")
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--bogus"}, "unknown flag"},
		{[]string{pin, "attach"}, "name at least one interface"},
		{[]string{pin, "attach", "eth0", "--mode", "offload"}, `invalid XDP mode "offload"`},
		{[]string{pin, "attach", "eth0", "--tc-backend", "x"}, `invalid TC backend "x"`},
		{[]string{pin, "detach"}, "--all"},
		{[]string{pin, "detach", "eth0", "--all"}, "not both"},
		{[]string{pin, "ports", "add", "0"}, `invalid port "0"`},
		{[]string{pin, "ports", "add", "11211", "70000"}, `invalid port "70000"`},
		{[]string{pin, "ports", "open", "1"}, `unknown action "open"`},
		{[]string{pin, "ports", "add", "53", "--direction", "sideways"}, `invalid direction "sideways": use both, request or response`},
		{[]string{pin, "ports", "add", "53", "--direction", "response", "--expiry", "2h"}, "invalid expiry 2h0m0s: give whole seconds from 1s to 1h0m0s"},
		{[]string{pin, "ports", "add", "53", "--direction", "response", "--expiry", "soon"}, `invalid expiry "soon"`},
		{[]string{pin, "ports", "add", "53", "--expiry", "10s"}, "--expiry is for response ports only"},
		{[]string{pin, "ports", "del", "53", "--direction", "response"}, "--direction and --expiry go with ports add"},
		{[]string{pin, "allow", "add", "10.1.2.3/8"}, "did you mean 10.0.0.0/8?"},
		{[]string{pin, "allow", "add", "192.0.2.0/24", "bogus"}, `invalid CIDR "bogus"`},
		{[]string{pin, "allow", "load"}, "one FILE"},
		{[]string{pin, "allow"}, "give an action"},
		{[]string{pin, "mode", "drop"}, `invalid mode "drop"`},
		{[]string{pin, "fragments", "maybe"}, `invalid fragment policy "maybe"`},
		{[]string{pin, "stats", "--watch", "1ns"}, "invalid --watch"},
		{[]string{pin, "status", "extra"}, "no arguments"},
	} {
		code, _, stderr := runCLI(tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("xdpguard %v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestHelpHasExamples(t *testing.T) {
	code, out, _ := runCLI("--help")
	if code != exitOK || !strings.Contains(out, "Examples:") || !strings.Contains(out, "attach") {
		t.Fatalf("--help: exit %d, %q", code, out)
	}
	for _, cmd := range commands {
		code, out, _ := runCLI(cmd.name, "--help")
		if code != exitOK || !strings.Contains(out, "Usage: xdpguard") || !strings.Contains(out, "Examples:\n  ") {
			t.Errorf("%s --help: exit %d, no usage or example:\n%s", cmd.name, code, out)
		}
	}
}

func TestStatsRates(t *testing.T) {
	prev := []loader.InterfaceStats{{Interface: "eth0", Ifindex: 2, Hook: "xdp", Counters: map[string]loader.Counter{
		"pass": {Packets: 100, Bytes: 10000}, "drop_request": {Packets: 10, Bytes: 500},
	}}}
	cur := []loader.InterfaceStats{{Interface: "eth0", Ifindex: 2, Hook: "xdp", Counters: map[string]loader.Counter{
		"pass": {Packets: 300, Bytes: 30000}, "drop_request": {Packets: 10, Bytes: 500},
	}}}
	got := statsRates(prev, cur, 2*time.Second)
	if len(got) != 1 || got[0].Counters["pass"] != (loader.Counter{Packets: 100, Bytes: 10000}) || got[0].Counters["drop_request"] != (loader.Counter{}) {
		t.Fatalf("rates: %+v", got)
	}
}

func TestPrintStatsAlignsEveryReason(t *testing.T) {
	var b bytes.Buffer
	printStats(&b, []loader.InterfaceStats{{Interface: "eth0", Hook: "xdp", Counters: map[string]loader.Counter{"drop_request": {Packets: 7, Bytes: 420}}}})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 1+loader.ReasonCount {
		t.Fatalf("%d lines, want a header and one per reason:\n%s", len(lines), b.String())
	}
	col := strings.Index(lines[0], "PACKETS")
	for _, l := range lines[1:] {
		if strings.Contains(l, "drop_request") && !strings.HasPrefix(l[col:], "7 ") {
			t.Errorf("drop_request row not aligned under PACKETS:\n%s", b.String())
		}
	}
}

func TestNotRootIsRefused(t *testing.T) {
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	bin := filepath.Join(t.TempDir(), "xdpguard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	os.Chmod(filepath.Dir(bin), 0o755)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin, "attach", "lo")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailed || !strings.Contains(string(out), "run it as root") {
		t.Fatalf("attach as nobody: %v, %q; want exit 1 and a hint to run as root", err, out)
	}
}

func TestPinPathOffBPFFS(t *testing.T) {
	nstest.RequireRoot(t)
	dir := t.TempDir()
	code, _, stderr := runCLI("--pin-path", filepath.Join(dir, "pins"), "attach", "lo")
	if code != exitFailed || !strings.Contains(stderr, "not on a BPF filesystem") || !strings.Contains(stderr, "mount -t bpf") {
		t.Fatalf("exit %d, %q; want 1 and how to fix it", code, stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a refused attach created %v", entries)
	}
}

// TestCLIInNamespace drives every command against a veth pair in namespaces.
func TestCLIInNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	peer, host := nstest.New(t, "xgcp"), nstest.New(t, "xgch")
	for _, ns := range []*nstest.NS{peer, host} {
		if err := ns.Sysctl("net.ipv6.conf.default.disable_ipv6", "1"); err != nil {
			t.Fatal(err)
		}
	}
	nstest.Veth(t, peer, "xg0", host, "xg1", 0)
	pin := filepath.Join("/sys/fs/bpf", "xgcli-"+host.Name())
	cli := func(args ...string) (int, string, string) {
		var code int
		var out, errb string
		err := host.Do(func() error {
			code, out, errb = runCLI(append([]string{"--pin-path", pin}, args...)...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return code, out, errb
	}
	mustCLI := func(args ...string) string {
		t.Helper()
		code, out, errb := cli(args...)
		if code != exitOK {
			t.Fatalf("xdpguard %v: exit %d: %s", args, code, errb)
		}
		return out
	}
	t.Cleanup(func() { cli("detach", "--all") })

	// Bad input changes nothing.
	code, _, errb := cli("attach", "nosuch0")
	if code != exitFailed || !strings.Contains(errb, `"nosuch0"`) || !strings.Contains(errb, "ip link") {
		t.Fatalf("attach nosuch0: exit %d, %q", code, errb)
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed attach left %s behind", pin)
	}

	if out := mustCLI("attach", "xg1", "--egress"); !strings.Contains(out, "xg1: attached (xdp native, egress via "+kernelEgress(t)+")") {
		t.Fatalf("attach output: %q", out)
	}
	if out := mustCLI("attach", "xg1", "--egress"); !strings.Contains(out, "unchanged") {
		t.Fatalf("second attach output: %q", out)
	}

	var st statusReport
	if err := json.Unmarshal([]byte(mustCLI("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Attachments) != 2 || st.Attachments[0].Hook != "xdp" || st.Attachments[1].Hook != "tc" ||
		st.Attachments[0].Interface != "xg1" || st.Attachments[0].ProgramID == 0 ||
		st.Config.Mode != "enforce" || st.Config.Fragments != "track" || len(st.Config.Ports) != 1 || st.Config.Ports[0] != (loader.PortSpec{Port: 11211, Direction: "both"}) {
		t.Fatalf("status --json: %+v", st)
	}
	var ino uint64
	if err := host.Do(func() (err error) { ino, err = loader.CurrentNetns(); return err }); err != nil {
		t.Fatal(err)
	}
	if a := st.Attachments[0]; a.Netns != ino || !a.Here {
		t.Fatalf("status --json: netns %d here %v, want %d (this one)", a.Netns, a.Here, ino)
	}
	if out := mustCLI("status"); !strings.Contains(out, fmt.Sprintf("%d (this one)", ino)) {
		t.Fatalf("status does not name the namespace:\n%s", out)
	}

	// A failed attach --monitor takes everything back, the mode included:
	// it used to leave the whole host in monitor, passing attacks.
	code, _, errb = cli("attach", "xg1", "nosuch0", "--monitor")
	if code != exitFailed || !strings.Contains(errb, `"nosuch0"`) {
		t.Fatalf("attach xg1 nosuch0 --monitor: exit %d, %q; want 1 naming nosuch0", code, errb)
	}
	if out := mustCLI("mode"); out != "enforce\n" {
		t.Fatalf("mode after a failed attach --monitor: %q, want enforce", out)
	}
	var after statusReport
	if err := json.Unmarshal([]byte(mustCLI("status", "--json")), &after); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after.Attachments) != fmt.Sprint(st.Attachments) {
		t.Fatalf("a failed attach changed the attachments:\n got %+v\nwant %+v", after.Attachments, st.Attachments)
	}
	// The same when the failure comes after the mode was written and
	// another interface attached: a bridge has no native XDP.
	nstest.Veth(t, peer, "xg2", host, "xg3", 0)
	if err := host.Handle().LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "xgbr0"}}); err != nil {
		t.Fatal(err)
	}
	code, _, errb = cli("attach", "xg3", "xgbr0", "--mode", "native", "--monitor")
	if code != exitFailed || !strings.Contains(errb, "xgbr0") {
		t.Fatalf("attach xg3 xgbr0 --mode native --monitor: exit %d, %q; want 1 naming xgbr0", code, errb)
	}
	if out := mustCLI("mode"); out != "enforce\n" {
		t.Fatalf("mode after an attach --monitor that failed half-way: %q, want enforce", out)
	}
	if l, err := host.Link("xg3"); err != nil || (l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached) {
		t.Fatalf("xg3 after the failed attach: %v, XDP %+v; want nothing attached", err, l.Attrs().Xdp)
	}
	after = statusReport{}
	if err := json.Unmarshal([]byte(mustCLI("status", "--json")), &after); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after.Attachments) != fmt.Sprint(st.Attachments) {
		t.Fatalf("an attach that failed half-way changed the attachments:\n got %+v\nwant %+v", after.Attachments, st.Attachments)
	}

	mustCLI("allow", "add", "203.0.113.0/24", "2001:db8::/48")
	allowFile := filepath.Join(t.TempDir(), "allow.txt")
	os.WriteFile(allowFile, []byte("# peers\n198.51.100.0/25\n"), 0o600)
	mustCLI("allow", "load", allowFile)
	var al allowListJSON
	if err := json.Unmarshal([]byte(mustCLI("allow", "list", "--json")), &al); err != nil {
		t.Fatal(err)
	}
	if strings.Join(al.IPv4, ",") != "198.51.100.0/25,203.0.113.0/24" || strings.Join(al.IPv6, ",") != "2001:db8::/48" {
		t.Fatalf("allow list: %+v", al)
	}
	if code, _, errb := cli("allow", "del", "192.0.2.0/24"); code != exitFailed || !strings.Contains(errb, "not on the allow list") {
		t.Fatalf("allow del of an absent prefix: exit %d, %q", code, errb)
	}
	mustCLI("allow", "flush")
	if out := mustCLI("allow", "list"); out != "" {
		t.Fatalf("after flush: %q", out)
	}

	mustCLI("ports", "add", "11212", "5353")
	if out := mustCLI("ports", "list"); out != "PORT   DIRECTION  EXPIRY\n5353   both       -\n11211  both       -\n11212  both       -\n" {
		t.Fatalf("ports list: %q", out)
	}
	if code, _, errb := cli("ports", "del", "9"); code != exitFailed || !strings.Contains(errb, "port 9 is not protected") {
		t.Fatalf("ports del 9: exit %d, %q", code, errb)
	}
	mustCLI("ports", "del", "5353", "11212")
	mustCLI("fragments", "strict")
	if out := mustCLI("fragments"); out != "strict\n" {
		t.Fatalf("fragments: %q", out)
	}
	mustCLI("fragments", "track")

	// Counters equal what was injected: 3 requests, 2 TCP segments.
	inj := nstest.NewInjector(t, peer, "xg0")
	src, dst := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("192.0.2.1")
	req := testpkt.Must(testpkt.MemcachedRequest(src, dst, 40000, testpkt.Stats).Frame())
	tcp := testpkt.Must(testpkt.TCP(src, dst, 40000, 443, nil).Frame())
	if err := inj.SendAll(req, req, req, tcp, tcp); err != nil {
		t.Fatal(err)
	}
	var sr statsReport
	nstest.Eventually(t, 5*time.Second, "5 packets counted", func() (bool, error) {
		sr = statsReport{}
		if err := json.Unmarshal([]byte(mustCLI("stats", "xg1", "--json")), &sr); err != nil {
			return false, err
		}
		return len(sr.Interfaces) == 2 && sr.Interfaces[0].Counters["drop_request"].Packets+sr.Interfaces[0].Counters["pass"].Packets == 5, nil
	})
	x := sr.Interfaces[0]
	if x.Hook != "xdp" || x.Counters["drop_request"] != (loader.Counter{Packets: 3, Bytes: 3 * uint64(len(req))}) ||
		x.Counters["pass"] != (loader.Counter{Packets: 2, Bytes: 2 * uint64(len(tcp))}) {
		t.Fatalf("xdp counters: %+v", x)
	}
	if len(x.Counters) != loader.ReasonCount {
		t.Fatalf("stats --json lists %d reasons, want all %d", len(x.Counters), loader.ReasonCount)
	}

	mustCLI("mode", "monitor")
	if out := mustCLI("mode"); out != "monitor\n" {
		t.Fatalf("mode: %q", out)
	}
	if err := inj.Send(req); err != nil {
		t.Fatal(err)
	}
	nstest.Eventually(t, 5*time.Second, "would_drop counted", func() (bool, error) {
		sr = statsReport{}
		err := json.Unmarshal([]byte(mustCLI("stats", "--json")), &sr)
		return err == nil && sr.Interfaces[0].Counters["would_drop"].Packets == 1, err
	})
	if out := mustCLI("stats", "--watch", "20ms", "--count", "2"); strings.Count(out, "(per second)") != 2 {
		t.Fatalf("stats --watch --count 2 printed:\n%s", out)
	}

	if out := mustCLI("detach", "xg1"); out != "xg1: detached\n" {
		t.Fatalf("detach: %q", out)
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin path left after the last detach")
	}
	if out := mustCLI("status"); !strings.Contains(out, "not attached to any interface") {
		t.Fatalf("status after detach: %q", out)
	}
}

// TestPrintPrometheus checks stats --prometheus's text: exact lines for the
// counters with an interface name that needs escaping, the config series,
// none of the agent's or the Go runtime's, and nothing written when the read
// fails.
func TestPrintPrometheus(t *testing.T) {
	var b bytes.Buffer
	src := metrics.SourceFunc(func() (*metrics.Snapshot, error) {
		return &metrics.Snapshot{
			Stats:  []loader.InterfaceStats{{Interface: `we"ird`, Hook: "xdp", Counters: map[string]loader.Counter{"drop_response": {Packets: 3, Bytes: 4200}}}},
			Config: loader.DefaultConfig(),
		}, nil
	})
	if err := printPrometheus(&b, src); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"# TYPE xdpguard_packets_total counter\n",
		`xdpguard_packets_total{hook="xdp",interface="we\"ird",reason="drop_response"} 3` + "\n",
		`xdpguard_bytes_total{hook="xdp",interface="we\"ird",reason="drop_response"} 4200` + "\n",
		`xdpguard_packets_total{hook="xdp",interface="we\"ird",reason="pass"} 0` + "\n",
		`xdpguard_config_info{fragments="track",mode="enforce"} 1` + "\n",
		`xdpguard_protected_port{port="11211"} 1` + "\n",
		`xdpguard_build_info{goversion="`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\nxdpguard_packets_total{"); n != loader.ReasonCount {
		t.Errorf("%d packet series, want one per reason (%d)", n, loader.ReasonCount)
	}
	for _, absent := range []string{"\ngo_", "\nprocess_", "xdpguard_reconcile_total", "xdpguard_interfaces_wanted"} {
		if strings.Contains(out, absent) {
			t.Errorf("%q in the textfile output: it holds the kernel's state only\n%s", absent, out)
		}
	}

	b.Reset()
	failing := metrics.SourceFunc(func() (*metrics.Snapshot, error) { return nil, errors.New("read counters: boom") })
	if err := printPrometheus(&b, failing); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("failed read: error %v, want one naming the cause", err)
	}
	if b.Len() != 0 {
		t.Errorf("failed read wrote %q: a textfile must not hold part of the state", b.String())
	}
}

// TestMountsMissingBPFFS runs the CLI in a private mount namespace without
// bpffs at /sys/fs/bpf: it must mount one, as the README says.
func TestMountsMissingBPFFS(t *testing.T) {
	nstest.RequireRoot(t)
	bin := filepath.Join(t.TempDir(), "xdpguard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	script := `set -e
while mountpoint -q /sys/fs/bpf; do umount /sys/fs/bpf; done
if mountpoint -q /sys/fs/bpf; then echo "could not unmount"; exit 3; fi
"$1" --pin-path /sys/fs/bpf/xgmount check >/dev/null
stat -f -c %T /sys/fs/bpf`
	out, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("check without bpffs: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "bpf_fs" {
		t.Fatalf("/sys/fs/bpf after check is %q, want bpf_fs", got)
	}
}

func TestPortRangeAdvice(t *testing.T) {
	for _, tc := range []struct {
		ports           []uint16
		rng, reserved   string
		want, wantValue string // wantValue: the reserved_ports value advised
	}{
		{[]uint16{11211}, "32768\t60999\n", "\n", "", ""},
		{[]uint16{11211}, "1024 65535\n", "\n", "11211 lie in net.ipv4.ip_local_port_range (1024-65535)", "11211"},
		{[]uint16{53, 11211}, "1024 65535", "8080,11200-11300", "", ""},
		{[]uint16{11211, 40000}, "10000 50000", "8080,9000-9100", "11211,40000 lie", "8080,9000-9100,11211,40000"},
		{[]uint16{80, 11211}, "1024 65535", "11211", "", ""},
	} {
		got, err := portRangeAdvice(tc.ports, tc.rng, tc.reserved)
		if err != nil {
			t.Fatal(err)
		}
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("ports %v, range %q, reserved %q: %q, want %q", tc.ports, tc.rng, tc.reserved, got, tc.want)
		}
		if tc.wantValue != "" && (!strings.Contains(got, "sysctl -w net.ipv4.ip_local_reserved_ports="+tc.wantValue+" ") ||
			!strings.Contains(got, "'net.ipv4.ip_local_reserved_ports = "+tc.wantValue+"' > /etc/sysctl.d/")) {
			t.Errorf("advice %q does not reserve %s with sysctl and a sysctl.d file", got, tc.wantValue)
		}
	}
	if _, err := portRangeAdvice([]uint16{1}, "bogus", ""); err == nil {
		t.Error("an unreadable port range gave no error")
	}
}

// TestCheckWarnsAboutLocalPortRange: the sysctls are per network namespace;
// in one where the protected port is a local port, check warns (exit 0) and
// says how to reserve it; reserved, the warning goes.
func TestCheckWarnsAboutLocalPortRange(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "xgck")
	pin := "--pin-path=" + filepath.Join("/sys/fs/bpf", "xgcheck-"+ns.Name())
	check := func() (int, string) {
		var code int
		var out string
		if err := ns.Do(func() error { code, out, _ = runCLI(pin, "check"); return nil }); err != nil {
			t.Fatal(err)
		}
		return code, out
	}
	if err := ns.Sysctl("net.ipv4.ip_local_port_range", "10000 20000"); err != nil {
		t.Fatal(err)
	}
	code, out := check()
	if code != exitOK || !strings.Contains(out, "warn") || !strings.Contains(out, "sysctl -w net.ipv4.ip_local_reserved_ports=11211") {
		t.Fatalf("check with 11211 a local port: exit %d, want 0 and a warning with the fix:\n%s", code, out)
	}
	if err := ns.Sysctl("net.ipv4.ip_local_reserved_ports", "11211"); err != nil {
		t.Fatal(err)
	}
	if code, out := check(); code != exitOK || strings.Contains(out, "warn") {
		t.Fatalf("check with 11211 reserved: exit %d, want 0 and no warning:\n%s", code, out)
	}
}

// TestResponsePorts: ports add --direction response sets a port's
// direction and expiry, list and status show them; a response port on an
// interface without egress is said plainly by ports add, attach, status and
// check, and no longer once egress is attached; bad input changes nothing.
func TestResponsePorts(t *testing.T) {
	nstest.RequireRoot(t)
	peer, host := nstest.New(t, "xgrp"), nstest.New(t, "xgrh")
	nstest.Veth(t, peer, "xg0", host, "xg1", 0)
	pin := filepath.Join("/sys/fs/bpf", "xgresp-"+host.Name())
	cli := func(args ...string) (int, string, string) {
		var code int
		var out, errb string
		if err := host.Do(func() error {
			code, out, errb = runCLI(append([]string{"--pin-path", pin}, args...)...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return code, out, errb
	}
	mustCLI := func(args ...string) (string, string) {
		t.Helper()
		code, out, errb := cli(args...)
		if code != exitOK {
			t.Fatalf("xdpguard %v: exit %d: %s", args, code, errb)
		}
		return out, errb
	}
	t.Cleanup(func() { cli("detach", "--all") })
	portsJSON := func() []loader.PortSpec {
		t.Helper()
		out, _ := mustCLI("ports", "list", "--json")
		var pl struct {
			Ports []loader.PortSpec `json:"ports"`
		}
		if err := json.Unmarshal([]byte(out), &pl); err != nil {
			t.Fatal(err)
		}
		return pl.Ports
	}

	mustCLI("attach", "xg1")
	_, errb := mustCLI("ports", "add", "53", "123", "--direction", "response", "--expiry", "10s")
	if !strings.Contains(errb, "response port(s) 53,123") || !strings.Contains(errb, "--egress") || !strings.Contains(errb, "every reply") {
		t.Fatalf("ports add of response ports with no egress anywhere: stderr %q, want a warning naming the ports and --egress", errb)
	}
	want := []loader.PortSpec{{Port: 53, Direction: "response", Expiry: "10s"}, {Port: 123, Direction: "response", Expiry: "10s"}, {Port: 11211, Direction: "both"}}
	if got := portsJSON(); !slices.Equal(got, want) {
		t.Fatalf("ports list --json: %+v, want %+v", got, want)
	}
	// add sets the direction of a port already there; the default expiry.
	mustCLI("ports", "add", "123", "--direction", "request")
	mustCLI("ports", "add", "53", "--direction", "response")
	want = []loader.PortSpec{{Port: 53, Direction: "response", Expiry: "30s"}, {Port: 123, Direction: "request"}, {Port: 11211, Direction: "both"}}
	if got := portsJSON(); !slices.Equal(got, want) {
		t.Fatalf("ports list --json after changing directions: %+v, want %+v", got, want)
	}
	if out, _ := mustCLI("ports", "list"); out != "PORT   DIRECTION  EXPIRY\n53     response   30s\n123    request    -\n11211  both       -\n" {
		t.Fatalf("ports list: %q", out)
	}
	// Bad input: an error, and nothing changed.
	for _, args := range [][]string{
		{"ports", "add", "53", "--direction", "inbound"},
		{"ports", "add", "53", "--direction", "response", "--expiry", "0s"},
		{"ports", "add", "11211", "--expiry", "5s"},
	} {
		if code, _, errb := cli(args...); code == exitOK || errb == "" {
			t.Fatalf("xdpguard %v: exit %d, %q; want an error", args, code, errb)
		}
		if got := portsJSON(); !slices.Equal(got, want) {
			t.Fatalf("xdpguard %v changed the ports: %+v", args, got)
		}
	}

	var st statusReport
	out, _ := mustCLI("status", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if st.EgressGap == nil || !st.EgressGap.None || !slices.Equal(st.EgressGap.Ports, []uint16{53}) || !slices.Equal(st.EgressGap.Interfaces, []string{"xg1"}) {
		t.Fatalf("status --json egress_gap: %+v, want port 53, xg1, none with egress", st.EgressGap)
	}
	if out, _ := mustCLI("status"); !strings.Contains(out, "WARNING: response port(s) 53") || !strings.Contains(out, "53/response(30s),123/request,11211") {
		t.Fatalf("status does not show the directions or the missing egress:\n%s", out)
	}
	if code, out, _ := cli("check"); code != exitOK || !strings.HasPrefix(checkLine(out, "response ports have egress"), "warn") {
		t.Fatalf("check with a response port and no egress: exit %d, want 0 and a warning:\n%s", code, out)
	}

	// Egress attached: no warning anywhere.
	if out, errb := mustCLI("attach", "xg1", "--egress"); !strings.Contains(out, "egress added") || strings.Contains(errb, "response port") {
		t.Fatalf("attach --egress: %q, %q", out, errb)
	}
	st = statusReport{}
	out, _ = mustCLI("status", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.EgressGap != nil {
		t.Fatalf("status --json with egress: gap %+v, %v", st.EgressGap, err)
	}
	code, out, _ := cli("check")
	if line := checkLine(out, "response ports have egress"); code != exitOK || !strings.HasPrefix(line, "ok") || !strings.HasSuffix(line, "1 response port(s), egress on every attached interface") {
		t.Fatalf("check with egress: exit %d:\n%s", code, out)
	}
	// A second interface without egress: named.
	nstest.Veth(t, peer, "xg2", host, "xg3", 0)
	if _, errb := mustCLI("attach", "xg3"); !strings.Contains(errb, "xg3 has no egress program") {
		t.Fatalf("attach xg3 without egress: stderr %q, want a warning naming xg3", errb)
	}
}

// checkLine is the line of check's output for the check named name.
func checkLine(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, name) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}
