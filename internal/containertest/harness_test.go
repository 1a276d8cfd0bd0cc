package containertest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/xdpguard/xdpguard/internal/agent/config"
	"github.com/xdpguard/xdpguard/internal/deploytest"
	"github.com/xdpguard/xdpguard/internal/nstest"
)

// The VM's settings (see the package comment): the harness's alone.
var (
	podmanGlobal  = []string{"--runtime", "runc"}
	podmanRunVM   = []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}
	podmanTimeout = 3 * time.Minute
)

// podman runs podman with the VM's global settings and returns its trimmed
// output; a failure carries the output.
func podman(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("podman", append(slices.Clone(podmanGlobal), args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("podman %s: %w", strings.Join(args, " "), err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return stdout.String(), fmt.Errorf("podman %s: %w: %s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
		}
	case <-time.After(podmanTimeout):
		_ = cmd.Process.Kill()
		<-done
		return stdout.String(), fmt.Errorf("podman %s: no answer in %v", strings.Join(args, " "), podmanTimeout)
	}
	return strings.TrimSpace(stdout.String()), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// repoRoot is the repository's root, failing the test without one.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := deploytest.Root()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// manifests renders and decodes deploy/kubernetes.
func manifests(t testing.TB) (*deploytest.Manifests, *corev1.Container) {
	t.Helper()
	m, err := deploytest.Load(deploytest.Dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.Agent()
	if err != nil {
		t.Fatal(err)
	}
	return m, c
}

// bpffsMount is the agent's mount of the host's /sys/fs/bpf.
func bpffsMount(t testing.TB, m *deploytest.Manifests, c *corev1.Container) corev1.VolumeMount {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		for _, v := range m.DaemonSet.Spec.Template.Spec.Volumes {
			if v.Name == vm.Name && v.HostPath != nil && v.HostPath.Path == "/sys/fs/bpf" {
				return vm
			}
		}
	}
	t.Fatal("the DaemonSet does not mount the host's /sys/fs/bpf")
	return corev1.VolumeMount{}
}

// node is one pod's view of a lab node: where its config is, its pins as
// the host and as the pod see them, and the network namespace it joins.
type node struct {
	m         *deploytest.Manifests
	c         *corev1.Container
	netns     string         // the namespace's path, for --network ns:PATH
	configDir string         // the ConfigMap's files, adapted
	hostPin   string         // pin_path on the host
	podPin    string         // pin_path in the pod
	cfg       *config.Config // the adapted config, as the agent reads it
	caps      []corev1.Capability
	env       map[string]string // overrides of the DaemonSet's env
	// unconfined runs without the runtime's default seccomp profile (the
	// DaemonSet asks for RuntimeDefault): only to tell the kernel's checks
	// from the profile's.
	unconfined bool
	// hostBPFFS stands in for the node's /sys/fs/bpf when set: a node
	// without a BPF filesystem.
	hostBPFFS string
}

// includeLine and friends are the lines of the shipped config the test
// overrides (see the package comment); each must be there exactly once.
var (
	pinPathLine = regexp.MustCompile(`(?m)^pin_path: .*$`)
	includeLine = regexp.MustCompile(`(?m)^  include: .*$`)
	excludeLine = regexp.MustCompile(`(?m)^  exclude: .*$`)
)

// newNode writes the ConfigMap's files with the test's overrides: the
// interfaces (ifaces) and a random pin path under the DaemonSet's bpffs
// mount. It checks with the agent's config package that the result is
// valid and that the overrides took, and removes the pins at the end.
func newNode(t *testing.T, netns string, ifaces []string) *node {
	t.Helper()
	m, c := manifests(t)
	mount := bpffsMount(t, m, c)
	dir := t.TempDir()
	file, err := m.WriteConfigMap(dir)
	if err != nil {
		t.Fatal(err)
	}
	name := "xgk8s-" + randomHex(4)
	n := &node{
		m: m, c: c, netns: netns, configDir: dir,
		hostPin: filepath.Join("/sys/fs/bpf", name),
		podPin:  filepath.Join(mount.MountPath, name),
		caps:    c.SecurityContext.Capabilities.Add,
	}
	n.env = map[string]string{"XDPGUARD_PIN_PATH": n.podPin}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	quoted := make([]string, len(ifaces))
	for i, s := range ifaces {
		quoted[i] = strconv.Quote(s)
	}
	for _, o := range []struct {
		re   *regexp.Regexp
		with string
	}{
		{pinPathLine, "pin_path: " + n.podPin},
		{includeLine, "  include: [" + strings.Join(quoted, ", ") + "]"},
		{excludeLine, "  exclude: []"},
	} {
		if got := len(o.re.FindAllIndex(raw, -1)); got != 1 {
			t.Fatalf("the ConfigMap's config has %d lines matching %s, want 1: the test's overrides must be updated", got, o.re)
		}
		raw = o.re.ReplaceAll(raw, []byte(o.with))
	}
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatalf("the adapted config does not load: %v", err)
	}
	if cfg.PinPath != n.podPin || !slices.Equal(cfg.Interfaces.Include, ifaces) || len(cfg.Interfaces.Exclude) != 0 {
		t.Fatalf("overrides did not take: pin_path %s, include %v, exclude %v", cfg.PinPath, cfg.Interfaces.Include, cfg.Interfaces.Exclude)
	}
	n.cfg = cfg
	return n
}

// runArgs are `podman run` arguments that run the DaemonSet's container as
// the kubelet would: its command and args, its env, its capabilities (n.caps,
// the DaemonSet's unless a test removes one) with all else dropped, its
// user, read-only root without the tmpfs mounts podman adds by default
// (the kubelet adds none), no privilege escalation, its limits, and its
// volumes: the host's bpffs with its propagation and the ConfigMap's files
// read-only.
func (n *node) runArgs(name string) ([]string, error) {
	c, sc := n.c, n.c.SecurityContext
	args := []string{"run", "--detach", "--name", name, "--network", "ns:" + n.netns}
	args = append(args, podmanRunVM...)
	if sc.Privileged != nil && *sc.Privileged {
		args = append(args, "--privileged")
	}
	args = append(args, "--cap-drop", "all")
	for _, cp := range n.caps {
		args = append(args, "--cap-add", "CAP_"+string(cp))
	}
	if sc.RunAsUser != nil {
		args = append(args, "--user", strconv.FormatInt(*sc.RunAsUser, 10))
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		args = append(args, "--read-only", "--read-only-tmpfs=false")
	}
	if n.unconfined {
		args = append(args, "--security-opt", "seccomp=unconfined")
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		args = append(args, "--security-opt", "no-new-privileges")
	}
	if mem, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		args = append(args, "--memory", strconv.FormatInt(mem.Value(), 10))
	}
	if cpu, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		args = append(args, "--cpus", strconv.FormatFloat(float64(cpu.MilliValue())/1000, 'f', 3, 64))
	}
	for _, e := range c.Env {
		v := e.Value
		if o, ok := n.env[e.Name]; ok {
			v = o
		}
		args = append(args, "--env", e.Name+"="+v)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range n.m.DaemonSet.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		v := volumes[vm.Name]
		opts := "rw"
		if vm.ReadOnly {
			opts = "ro"
		}
		switch {
		case v.HostPath != nil:
			switch p := vm.MountPropagation; {
			case p == nil || *p == corev1.MountPropagationNone:
				opts += ",rprivate"
			case *p == corev1.MountPropagationHostToContainer:
				opts += ",rslave"
			case *p == corev1.MountPropagationBidirectional:
				opts += ",rshared"
			}
			src := v.HostPath.Path
			if n.hostBPFFS != "" && src == "/sys/fs/bpf" {
				src = n.hostBPFFS
			}
			args = append(args, "--volume", src+":"+vm.MountPath+":"+opts)
		case v.ConfigMap != nil:
			args = append(args, "--volume", n.configDir+":"+vm.MountPath+":"+opts)
		default:
			return nil, fmt.Errorf("volume %s: only hostPath and configMap volumes are known here", vm.Name)
		}
	}
	if len(c.Command) > 0 {
		args = append(args, "--entrypoint", c.Command[0])
	}
	args = append(args, c.Image)
	args = append(args, c.Command[min(1, len(c.Command)):]...)
	return append(args, c.Args...), nil
}

// pod is one run of the DaemonSet's container.
type pod struct {
	name string
}

// startPod starts the container and removes it when the test ends.
func startPod(t *testing.T, n *node) *pod {
	t.Helper()
	p := &pod{name: "xgk8s-" + randomHex(4)}
	args, err := n.runArgs(p.name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := podman("rm", "--force", "--time", "0", p.name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if _, err := podman(args...); err != nil {
		t.Fatal(err)
	}
	return p
}

// stop stops the pod as the kubelet does: SIGTERM, then SIGKILL after the
// DaemonSet's grace period. It returns the exit code.
func (p *pod) stop(grace int64) (int, error) {
	if _, err := podman("stop", "--time", strconv.FormatInt(grace, 10), p.name); err != nil {
		return 0, err
	}
	out, err := podman("inspect", "--format", "{{.State.ExitCode}}", p.name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(out)
}

// running reports whether the container still runs.
func (p *pod) running() (bool, error) {
	out, err := podman("inspect", "--format", "{{.State.Running}}", p.name)
	return out == "true", err
}

// logs is what the agent wrote (podman logs passes the container's stderr
// through its own).
func (p *pod) logs() string {
	out, err := exec.Command("podman", append(slices.Clone(podmanGlobal), "logs", p.name)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("podman logs %s: %v: %s", p.name, err, out)
	}
	return string(out)
}

// exec runs a command in the pod, as `kubectl exec` does.
func (p *pod) exec(args ...string) (string, error) {
	return podman(append([]string{"exec", p.name}, args...)...)
}

// httpGet fetches path from addr over a connection made inside ns, where
// the pod's network is: as the kubelet's probes and Prometheus reach it.
func httpGet(ns *nstest.NS, addr netip.AddrPort, path string) (int, string, error) {
	var conn net.Conn
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
		conn = c
		return err
	})
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return 0, "", err
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+addr.String()+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Close = true
	if err := req.Write(conn); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitReady waits until the pod answers 200 on the readiness probe's path,
// on the node's address, as the kubelet's probe would.
func waitReady(t *testing.T, ns *nstest.NS, addr netip.AddrPort, p *pod, n *node, timeout time.Duration) {
	t.Helper()
	path := n.c.ReadinessProbe.HTTPGet.Path
	err := nstest.WaitFor(timeout, p.name+" ready ("+path+" 200)", func() (bool, error) {
		if ok, err := p.running(); err != nil || !ok {
			return false, fmt.Errorf("container not running (%v)", err)
		}
		code, body, err := httpGet(ns, addr, path)
		if err != nil {
			return false, err
		}
		return code == http.StatusOK, fmt.Errorf("%s: %d %s", path, code, strings.TrimSpace(body))
	})
	if err != nil {
		t.Fatalf("%v\nlogs of %s:\n%s", err, p.name, p.logs())
	}
}

// memory is the pod's memory cgroup's usage now and at its peak, BPF maps
// the pod created included (Linux 5.11+ charges them to the creator's
// cgroup), and the agent's own peak RSS.
func (p *pod) memory() (current, peak, rss uint64, err error) {
	pidStr, err := podman("inspect", "--format", "{{.State.Pid}}", p.name)
	if err != nil {
		return 0, 0, 0, err
	}
	cg, err := os.ReadFile("/proc/" + pidStr + "/cgroup")
	if err != nil {
		return 0, 0, 0, err
	}
	readUint := func(path string) (uint64, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	for _, line := range strings.Split(string(cg), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[1] == "memory": // cgroup v1
			dir := filepath.Join("/sys/fs/cgroup/memory", f[2])
			if current, err = readUint(filepath.Join(dir, "memory.usage_in_bytes")); err == nil {
				peak, err = readUint(filepath.Join(dir, "memory.max_usage_in_bytes"))
			}
		case f[0] == "0" && f[1] == "": // cgroup v2
			dir := filepath.Join("/sys/fs/cgroup", f[2])
			if current, err = readUint(filepath.Join(dir, "memory.current")); err == nil {
				peak, err = readUint(filepath.Join(dir, "memory.peak"))
			}
		default:
			continue
		}
		if err != nil {
			return 0, 0, 0, err
		}
		status, err := os.ReadFile("/proc/" + pidStr + "/status")
		if err != nil {
			return 0, 0, 0, err
		}
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err != nil {
					return 0, 0, 0, err
				}
				rss = kb << 10
			}
		}
		return current, peak, rss, nil
	}
	return 0, 0, 0, fmt.Errorf("no memory cgroup for %s in /proc/%s/cgroup", p.name, pidStr)
}
