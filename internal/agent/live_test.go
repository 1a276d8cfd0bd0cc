package agent_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// TestLiveConfig: SIGHUP and edits of the config file and of an allow-list
// file change ports, mode and allow list live, without touching the
// attached programs; a config that does not validate changes nothing and
// is logged with its file, line and reason.
func TestLiveConfig(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.veth(t, "xl0")
	allow := filepath.Join(h.dir, "allow.txt")
	writeAtomic(t, allow, "192.0.2.0/24\n")
	base := "interfaces:\n  include: [xl0]\nallow:\n  files: [allow.txt]\n"
	cfg := h.writeConfig(t, base+"ports: [11211]\n")
	a := h.startAgent(t, cfg)

	st := h.status(t)
	prog := st.xdp()["xl0"]
	if prog == 0 || !reflect.DeepEqual([]uint16(st.Config.Ports), []uint16{11211}) || st.Config.Allow.IPv4 != 1 {
		t.Fatalf("start: %+v", st)
	}

	// An edit of the config file (replaced by rename) is applied by itself.
	h.writeConfig(t, base+"ports: [11211, 11212]\nmode: monitor\n")
	h.waitFor(t, 5*time.Second, "ports 11211,11212 and monitor mode from the edited file", func(st status) bool {
		return reflect.DeepEqual([]uint16(st.Config.Ports), []uint16{11211, 11212}) && st.Config.Mode == "monitor"
	})
	if n := a.logged(t, `"what":"ports"`, `11211 -> 11211,11212`); n != 1 {
		t.Errorf("want one log line for the ports change, got %d", n)
	}

	// An edit of an allow-list file, written in place.
	if err := os.WriteFile(allow, []byte("192.0.2.0/24\n198.51.100.0/24\n2001:db8::/48\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.waitFor(t, 5*time.Second, "the allow list from the edited file", func(st status) bool {
		return st.Config.Allow.IPv4 == 2 && st.Config.Allow.IPv6 == 1
	})
	if got := h.allowList(t); !reflect.DeepEqual(got, []string{"192.0.2.0/24", "198.51.100.0/24", "2001:db8::/48"}) {
		t.Errorf("allow list %v", got)
	}

	// A broken config: nothing changes, the log names file, line, field.
	before := h.status(t)
	broken := base + "ports: [11211, 70000]\nmode: enforce\n"
	h.writeConfig(t, broken)
	nstest.Eventually(t, 5*time.Second, "the broken config to be rejected in the log", func() (bool, error) {
		return a.log.count("config rejected", cfg+":8: ports[1]: invalid port", "70000") == 1, nil
	})
	// SIGHUP with the broken file: rejected again, and still nothing
	// changes.
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	nstest.Eventually(t, 5*time.Second, "RELOADING=1, the rejection logged again, READY=1", func() (bool, error) {
		return a.notes.count("RELOADING=1") == 1 && a.notes.count("READY=1") == 2 &&
			a.log.count("config rejected", "SIGHUP", cfg+":8: ports[1]") == 1, nil
	})
	if after := h.status(t); !reflect.DeepEqual(after, before) {
		t.Errorf("a broken config changed the state:\nbefore %+v\nafter  %+v", before, after)
	}
	if a.log.count(`"what":"mode"`) != 1 {
		t.Errorf("mode changed although the config was rejected")
	}

	// Fixed, and applied on SIGHUP even though the file watch also sees it.
	h.writeConfig(t, base+"ports: [53]\n")
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	st = h.waitFor(t, 5*time.Second, "port 53 and enforce mode", func(st status) bool {
		return reflect.DeepEqual([]uint16(st.Config.Ports), []uint16{53}) && st.Config.Mode == "enforce"
	})
	if st.xdp()["xl0"] != prog {
		t.Errorf("config changes replaced the XDP program %d with %d: they must be live map updates", prog, st.xdp()["xl0"])
	}
	if a.log.count("config valid again") != 1 {
		t.Errorf("no log line saying the config is valid again")
	}

	// A pin_path that moves: refused, the state stays where it is.
	writeAtomic(t, cfg, "pin_path: /sys/fs/bpf/elsewhere\nmetrics:\n  listen: \"\"\n"+base+"ports: [53]\n")
	nstest.Eventually(t, 5*time.Second, "the moved pin_path to be refused", func() (bool, error) {
		return a.log.count("config rejected", "pin_path: changed from "+h.pin) == 1, nil
	})
	if _, err := os.Stat("/sys/fs/bpf/elsewhere"); !os.IsNotExist(err) {
		t.Errorf("a refused pin_path was created (%v)", err)
	}
	for _, l := range a.log.all() {
		if strings.Contains(l, `"level":"ERROR"`) && !strings.Contains(l, "config rejected") {
			t.Errorf("unexpected error logged: %s", l)
		}
	}
}

// TestCheckConfigTouchesNothing: --check-config validates, allow-list files
// included, and exits 1 with file and line; it creates no pinned state.
func TestCheckConfigTouchesNothing(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	cfg := h.writeConfig(t, "interfaces:\n  include: [\"*\"]\nallow:\n  files: [missing.txt]\n")
	out, err := h.ns.Command(xdpguardBin, "agent", "--check-config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), cfg+":7: allow.files[0]: allow-list file: open "+filepath.Join(h.dir, "missing.txt")) {
		t.Fatalf("check of a config naming a missing file: %v\n%s", err, out)
	}
	if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 1 {
		t.Errorf("exit %v, want 1", err)
	}
	writeAtomic(t, filepath.Join(h.dir, "missing.txt"), "192.0.2.1\n")
	out, err = h.ns.Command(xdpguardBin, "agent", "--check-config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "valid") {
		t.Fatalf("check of a valid config: %v\n%s", err, out)
	}
	if _, err := os.Stat(h.pin); !os.IsNotExist(err) {
		t.Errorf("--check-config made %s (%v)", h.pin, err)
	}
}

// TestResyncRepairs: what the agent cannot hear about (interfaces detached
// by hand, which raises no link event, and with them the shared state) is put
// right by the periodic resync.
func TestResyncRepairs(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.veth(t, "xr0")
	h.veth(t, "xr1")
	cfg := h.writeConfig(t, "interfaces:\n  include: [\"xr*\"]\nports: [11211, 53]\nresync_interval: 1s\n")
	a := h.startAgent(t, cfg)
	// One command, one transaction: the next resync cannot come between
	// the two detaches. Whether it comes before this test looks is not
	// known, so the proof is the resync's own log line below.
	if out, err := h.ns.Run(xdpguardBin, "--pin-path", h.pin, "detach", "xr0", "xr1"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	st := h.waitFor(t, 10*time.Second, "the resync to protect xr0 and xr1 again", func(st status) bool {
		return st.has("xr0", "xdp") && st.has("xr1", "xdp") &&
			a.log.count(`"what":"attached"`, `"interface":"xr0"`, `"trigger":"periodic resync"`) == 1
	})
	if !reflect.DeepEqual([]uint16(st.Config.Ports), []uint16{53, 11211}) {
		t.Errorf("after the state was removed and made again, ports %v, want the config's 53,11211", st.Config.Ports)
	}
}

// TestConfigMapSymlinkSwap: a config mounted as Kubernetes mounts a
// ConfigMap (xdpguard.yaml -> ..data/xdpguard.yaml, ..data -> a timestamped
// directory, swapped by renaming a new ..data over it) is applied when the
// swap happens, though no event names xdpguard.yaml.
func TestConfigMapSymlinkSwap(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.veth(t, "xk0")
	version := func(name, ports string) {
		t.Helper()
		d := filepath.Join(h.dir, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		body := "pin_path: " + h.pin + "\nmetrics:\n  listen: \"\"\ninterfaces:\n  include: [xk0]\nports: " + ports + "\n"
		if err := os.WriteFile(filepath.Join(d, "xdpguard.yaml"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(h.dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(h.dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_11_28_01", "[11211]")
	cfg := filepath.Join(h.dir, "xdpguard.yaml")
	if err := os.Symlink("..data/xdpguard.yaml", cfg); err != nil {
		t.Fatal(err)
	}
	h.startAgent(t, cfg)
	if st := h.status(t); !st.has("xk0", "xdp") || !reflect.DeepEqual([]uint16(st.Config.Ports), []uint16{11211}) {
		t.Fatalf("start: %+v", st)
	}
	version("..2026_11_28_02", "[11211, 11311]")
	h.waitFor(t, 5*time.Second, "the swapped-in ports", func(st status) bool {
		return reflect.DeepEqual([]uint16(st.Config.Ports), []uint16{11211, 11311})
	})
}
