package agent_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/rlimit"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

const unitFile = "../../deploy/xdpguard.service"

// unitSettings reads the unit's KEY=VALUE lines (the last of a key wins, as
// systemd's do for these keys).
func unitSettings(t *testing.T) (map[string]string, string) {
	t.Helper()
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			m[k] = v
		}
	}
	return m, string(b)
}

// TestUnitVerifies: deploy/xdpguard.service passes `systemd-analyze verify`
// without a warning (verify checks that ExecStart exists, so a copy points
// it at the binary under test), and says what the issue asks of it.
func TestUnitVerifies(t *testing.T) {
	nstest.RequireRoot(t)
	set, text := unitSettings(t)
	const installed = "/usr/local/bin/xdpguard"
	if !strings.HasPrefix(set["ExecStart"], installed+" agent ") {
		t.Fatalf("ExecStart %q does not run %s agent", set["ExecStart"], installed)
	}
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "xdpguard.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(text, "ExecStart="+installed, "ExecStart="+xdpguardBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", copyPath).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for key, want := range map[string]string{
		"Type": "notify", "ExecReload": "/bin/kill -HUP $MAINPID", "Restart": "on-failure",
		"DefaultDependencies": "no", "Wants": "network-pre.target", "Before": "network-pre.target shutdown.target",
		"ProtectSystem": "strict", "ReadWritePaths": "/sys/fs/bpf", "ProtectHome": "yes", "NoNewPrivileges": "yes",
		"AssertPathIsMountPoint": "/sys/fs/bpf",
	} {
		if set[key] != want {
			t.Errorf("%s=%q, want %q", key, set[key], want)
		}
	}
	if set["CapabilityBoundingSet"] != set["AmbientCapabilities"] {
		t.Errorf("CapabilityBoundingSet %q and AmbientCapabilities %q differ", set["CapabilityBoundingSet"], set["AmbientCapabilities"])
	}
	if _, err := os.Stat("../../deploy/xdpguard@.service"); !os.IsNotExist(err) {
		t.Errorf("deploy/xdpguard@.service is still there: xdpguard.service replaces it")
	}
	sec, err := exec.Command("systemd-analyze", "security", "--offline=yes", copyPath).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, sec)
	}
	lines := strings.Split(strings.TrimSpace(string(sec)), "\n")
	t.Logf("systemd-analyze security: %s", lines[len(lines)-1])
}

// setprivCaps turns the unit's capability list into setpriv's
// --bounding-set argument.
func setprivCaps(caps []string) string {
	arg := "-all"
	for _, c := range caps {
		arg += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	return arg
}

// sandbox rebuilds what it can of the unit's sandbox without systemd: a
// private mount namespace whose root file system is read-only (as
// ProtectSystem=strict; /sys, and so bpffs, stay writable), no_new_privs, and
// only the given capabilities in the bounding set.
func sandbox(t *testing.T, set map[string]string, caps []string) []string {
	t.Helper()
	// The unit's locked-memory limit, which systemd sets before it drops
	// privileges: on kernels before 5.11, which charge BPF maps to it, the
	// agent cannot raise it without CAP_SYS_RESOURCE. Found by `make
	// vmtest` on 5.10, where the test's inherited 64 KiB made the agent
	// fail while the unit itself works. The agent inherits the limit from
	// this process, which raises its own as systemd would (where the
	// kernel charges maps to it; elsewhere the limit plays no part and
	// this machine may not allow raising it).
	if got := set["LimitMEMLOCK"]; got != "infinity" {
		t.Fatalf("the unit sets LimitMEMLOCK=%q, want infinity: on Linux 5.10 the agent could not create its maps", got)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatalf("give the sandbox the unit's LimitMEMLOCK=infinity: %v", err)
	}
	return []string{"unshare", "--mount", "--propagation", "private",
		"sh", "-c", `mount --bind / / && mount -o remount,bind,ro / && exec "$@"`, "sh",
		"setpriv", "--no-new-privs", "--bounding-set=" + setprivCaps(caps)}
}

// TestRunsWithUnitCapabilities: the agent, in the unit's sandbox as far as it
// can be rebuilt here (read-only root file system, no_new_privs, only the
// capabilities the unit grants, its locked-memory limit), protects an interface, with its pins seen
// from outside its mount namespace; restarted, it adopts it. Without
// CAP_SYS_ADMIN it cannot adopt, which is why the unit grants it.
func TestRunsWithUnitCapabilities(t *testing.T) {
	t.Parallel()
	set, _ := unitSettings(t)
	caps := strings.Fields(set["CapabilityBoundingSet"])
	h := newHost(t)
	h.veth(t, "xc0")
	h.wrap = sandbox(t, set, caps)
	cfg := h.writeConfig(t, "interfaces:\n  include: [xc0]\n  egress: true\n")
	a := h.startAgent(t, cfg)
	prog := h.kernelXDP(t, "xc0")
	if prog == 0 || a.notes.count("STATUS=protecting 1 of 1") != 1 {
		t.Fatalf("with the unit's capabilities %v: xc0 runs %d; told systemd %v", caps, prog, a.notes.all())
	}
	// status runs outside the agent's mount namespace: the pins are in the
	// host's bpffs, not in a mount that dies with the service.
	if st := h.status(t); st.xdp()["xc0"] != prog || !st.has("xc0", "tc") {
		t.Fatalf("status from outside the sandbox: %+v", st.Attachments)
	}
	a.stop(t, syscall.SIGKILL)
	a = h.startAgent(t, cfg)
	if got := h.kernelXDP(t, "xc0"); got != prog || a.notes.count("STATUS=protecting 1 of 1") != 1 || a.log.count(`"what":`) != 0 {
		t.Fatalf("restarted with the unit's capabilities: xc0 runs %d (want %d adopted), told systemd %v", got, prog, a.notes.all())
	}
	a.stop(t, syscall.SIGKILL)

	fewer := slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return c == "CAP_SYS_ADMIN" })
	h.wrap = sandbox(t, set, fewer)
	a = h.startAgent(t, cfg)
	nstest.Eventually(t, 5*time.Second, "adoption to fail without CAP_SYS_ADMIN", func() (bool, error) {
		return a.log.count(`"msg":"interface unprotected"`, "operation not permitted") > 0, nil
	})
	if got := h.kernelXDP(t, "xc0"); got != prog {
		t.Errorf("a failed adoption changed xc0's program %d to %d", prog, got)
	}
}

// TestMakeInstall: `make install DESTDIR=...` puts the binary, the unit
// (ExecStart following PREFIX) and the example config and allow list in
// place, and a second install keeps the operator's config.
func TestMakeInstall(t *testing.T) {
	t.Parallel()
	dest := t.TempDir()
	install := func(prefix string) {
		t.Helper()
		cmd := exec.Command("make", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX="+prefix)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
	}
	install("/usr/local")
	for path, mode := range map[string]os.FileMode{
		"usr/local/bin/xdpguard":              0o755,
		"etc/systemd/system/xdpguard.service": 0o644,
		"etc/xdpguard/xdpguard.yaml":          0o644,
		"etc/xdpguard/allow.txt":              0o644,
	} {
		fi, err := os.Stat(filepath.Join(dest, path))
		if err != nil {
			t.Errorf("make install: %v", err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	conf := filepath.Join(dest, "etc/xdpguard/xdpguard.yaml")
	if err := os.WriteFile(conf, []byte("# the operator's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	install("/usr")
	if b, _ := os.ReadFile(conf); string(b) != "# the operator's\n" {
		t.Errorf("a second make install overwrote the operator's config: %q", b)
	}
	unit, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/xdpguard.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart=/usr/bin/xdpguard agent ") || strings.Contains(string(unit), "/usr/local") {
		t.Errorf("with PREFIX=/usr the unit does not run /usr/bin/xdpguard:\n%s", unit)
	}
	if _, err := os.Stat(filepath.Join(dest, "usr/bin/xdpguard")); err != nil {
		t.Errorf("PREFIX=/usr: %v", err)
	}
}
