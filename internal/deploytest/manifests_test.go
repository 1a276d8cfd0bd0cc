package deploytest

import (
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/xdpguard/xdpguard/internal/agent/config"
	"github.com/xdpguard/xdpguard/loader"
)

func agentConfig(t *testing.T, m *Manifests) *config.Config {
	t.Helper()
	cfg, err := m.AgentConfig(t.TempDir())
	if err != nil {
		t.Fatalf("the agent refuses the ConfigMap's config:\n%v", err)
	}
	return cfg
}

func load(t *testing.T, dir string) *Manifests {
	t.Helper()
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func agent(t *testing.T, m *Manifests) *corev1.Container {
	t.Helper()
	c, err := m.Agent()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Both kustomizations render with Debian's kubectl and decode strictly; the
// PodMonitor one is the base plus the PodMonitor, nothing else changed.
func TestKustomizationsRender(t *testing.T) {
	base := load(t, Dir)
	if base.PodMonitor != nil {
		t.Errorf("%s has a PodMonitor: it would not apply on clusters without the Prometheus Operator", Dir)
	}
	withPM := load(t, PodMonitorDir)
	if withPM.PodMonitor == nil {
		t.Fatalf("%s has no PodMonitor", PodMonitorDir)
	}
	for _, pair := range []struct {
		what string
		a, b any
	}{
		{"Namespace", base.Namespace, withPM.Namespace},
		{"ConfigMap", base.ConfigMap, withPM.ConfigMap},
		{"DaemonSet", base.DaemonSet, withPM.DaemonSet},
	} {
		a, _ := yaml.Marshal(pair.a)
		b, _ := yaml.Marshal(pair.b)
		if string(a) != string(b) {
			t.Errorf("%s differs between %s and %s:\n%s\n---\n%s", pair.what, Dir, PodMonitorDir, a, b)
		}
	}
}

// documentOf returns the rendered document of kind from dir.
func documentOf(t *testing.T, dir, kind string) string {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	stream, err := Render(filepath.Join(root, dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range splitDocuments(stream) {
		if strings.Contains(string(d), "\nkind: "+kind+"\n") {
			return string(d)
		}
	}
	t.Fatalf("%s renders no %s", dir, kind)
	return ""
}

// Strict decoding is what makes the other tests mean anything: a misspelt
// or wrongly-cased field, which the API server rejects (or, with a
// lenient client, silently drops), fails here. Each case edits the real
// rendered document in one place; the unedited document decodes.
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	ds := documentOf(t, PodMonitorDir, "DaemonSet")
	pm := documentOf(t, PodMonitorDir, "PodMonitor")
	cases := []struct {
		name, doc, old, new string
		into                func() any
		ok                  bool
	}{
		{name: "DaemonSet as rendered", doc: ds, into: func() any { return new(appsv1.DaemonSet) }, ok: true},
		{name: "PodMonitor as rendered", doc: pm, into: func() any { return new(PodMonitor) }, ok: true},
		{name: "misspelt field", doc: ds, old: "hostNetwork: true", new: "hostNetwrok: true",
			into: func() any { return new(appsv1.DaemonSet) }},
		{name: "wrongly-cased field", doc: ds, old: "readOnlyRootFilesystem: true", new: "ReadOnlyRootFilesystem: true",
			into: func() any { return new(appsv1.DaemonSet) }},
		{name: "field at the wrong level", doc: ds, old: "      hostNetwork: true", new: "      hostNetwork: true\n      readOnlyRootFilesystem: true",
			into: func() any { return new(appsv1.DaemonSet) }},
		{name: "key given twice", doc: ds, old: "hostNetwork: true", new: "hostNetwork: true\n      hostNetwork: false",
			into: func() any { return new(appsv1.DaemonSet) }},
		{name: "PodMonitor misspelt field", doc: pm, old: "podMetricsEndpoints:", new: "podMetricEndpoints:",
			into: func() any { return new(PodMonitor) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := c.doc
			if c.old != "" {
				if n := strings.Count(doc, c.old); n != 1 {
					t.Fatalf("the rendered document has %q %d times, want once: the case tests nothing", c.old, n)
				}
				doc = strings.Replace(doc, c.old, c.new, 1)
			}
			err := Strict([]byte(doc), c.into())
			switch {
			case c.ok && err != nil:
				t.Fatalf("rejected: %v", err)
			case !c.ok && err == nil:
				t.Fatalf("accepted with %q", c.new)
			case !c.ok:
				t.Logf("rejected as it must be: %v", err)
			}
		})
	}
	// And a whole stream with a foreign kind in it.
	if _, err := Decode([]byte(ds + "\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n")); err == nil {
		t.Error("a stream with a Secret decoded: unexpected kinds must fail")
	}
}

// The DaemonSet's security settings: not privileged, every capability
// dropped but the four the agent needs, read-only root, root user.
func TestDaemonSetSecurity(t *testing.T) {
	m := load(t, Dir)
	spec := m.DaemonSet.Spec.Template.Spec
	c := agent(t, m)
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("agent has no securityContext")
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("privileged must be set, to false")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser must be 0: the pins are root's, and Kubernetes cannot give a non-root user capabilities")
	}
	if sc.Capabilities == nil {
		t.Fatal("no capabilities section")
	}
	if got := sc.Capabilities.Drop; !slices.Equal(got, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities.drop = %v, want [ALL]", got)
	}
	want := []corev1.Capability{"BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"}
	got := slices.Clone(sc.Capabilities.Add)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("capabilities.add = %v, want exactly %v", sc.Capabilities.Add, want)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("seccompProfile must be RuntimeDefault")
	}
	if spec.HostPID || spec.HostIPC {
		t.Error("hostPID and hostIPC must stay off")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the agent talks to no API server: automountServiceAccountToken must be false")
	}
	for _, ic := range spec.InitContainers {
		t.Errorf("init container %s: the pod must run the agent alone", ic.Name)
	}
}

// The pod runs on every node, with the host's network, first to stay.
func TestDaemonSetPlacement(t *testing.T) {
	m := load(t, Dir)
	spec := m.DaemonSet.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("hostNetwork must be true: the agent protects the node's interfaces")
	}
	everything := false
	for _, tol := range spec.Tolerations {
		if tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == "" {
			everything = true
		}
	}
	if !everything {
		t.Errorf("tolerations %v: want {operator: Exists} (every taint, control-plane nodes included)", spec.Tolerations)
	}
	if spec.NodeSelector != nil || spec.Affinity != nil {
		t.Error("no nodeSelector or affinity: every node")
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName = %q, want system-node-critical", spec.PriorityClassName)
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || *g <= 0 || *g > 60 {
		t.Errorf("terminationGracePeriodSeconds = %v: want a few seconds (the agent stops at once, leaving protection)", g)
	}
	us := m.DaemonSet.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil {
		t.Fatalf("updateStrategy = %+v, want RollingUpdate", us)
	}
	if mu := us.RollingUpdate.MaxUnavailable; mu == nil || *mu != intstr.FromInt32(1) {
		t.Errorf("maxUnavailable = %v, want 1 (one node at a time)", mu)
	}
	if ms := us.RollingUpdate.MaxSurge; ms != nil && ms.IntValue() != 0 {
		t.Errorf("maxSurge = %v: two pods cannot hold one host port", ms)
	}
	c := agent(t, m)
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[res]
		lim, okLim := c.Resources.Limits[res]
		if !okReq || !okLim {
			t.Errorf("%s: want a request and a limit", res)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("%s: request %s above limit %s", res, req.String(), lim.String())
		}
	}
}

// The host's BPF filesystem is mounted from the host, where the agent pins,
// with propagation from the host; the config comes from the ConfigMap.
func TestDaemonSetMounts(t *testing.T) {
	m := load(t, Dir)
	spec := m.DaemonSet.Spec.Template.Spec
	c := agent(t, m)
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	pinPath := agentConfig(t, m).PinPath
	var bpffs, config *corev1.VolumeMount
	for i, vm := range c.VolumeMounts {
		v, ok := volumes[vm.Name]
		if !ok {
			t.Errorf("mount %s: no such volume", vm.Name)
			continue
		}
		switch {
		case v.HostPath != nil && v.HostPath.Path == "/sys/fs/bpf":
			bpffs = &c.VolumeMounts[i]
		case v.ConfigMap != nil:
			config = &c.VolumeMounts[i]
			if v.ConfigMap.Name != m.ConfigMap.Name {
				t.Errorf("config volume names ConfigMap %s, the kustomization makes %s", v.ConfigMap.Name, m.ConfigMap.Name)
			}
		case v.HostPath != nil:
			t.Errorf("mount %s: host path %s: the agent needs none but /sys/fs/bpf", vm.Name, v.HostPath.Path)
		}
	}
	if bpffs == nil {
		t.Fatal("the host's /sys/fs/bpf is not mounted: pins would die with the pod")
	}
	if bpffs.MountPropagation == nil || *bpffs.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("bpffs mountPropagation = %s, want HostToContainer", ptrString(bpffs.MountPropagation))
	}
	// The API server's own rule (validateMountPropagation): Bidirectional
	// only in privileged containers.
	if bpffs.MountPropagation != nil && *bpffs.MountPropagation == corev1.MountPropagationBidirectional {
		t.Error("Bidirectional propagation in a container that is not privileged: the API server refuses the pod")
	}
	if bpffs.ReadOnly {
		t.Error("bpffs mounted read-only: the agent pins there")
	}
	if !strings.HasPrefix(pinPath, bpffs.MountPath+"/") {
		t.Errorf("config pin_path %s is not under the bpffs mount %s: pins would land in the container", pinPath, bpffs.MountPath)
	}
	// On the node the pins are where the CLI and the systemd unit look by
	// default, so `xdpguard status` there needs no --pin-path.
	if onNode := filepath.Join("/sys/fs/bpf", strings.TrimPrefix(pinPath, bpffs.MountPath)); onNode != loader.DefaultPinPath {
		t.Errorf("pins at %s on the node, want %s", onNode, loader.DefaultPinPath)
	}
	if bpffs.MountPath == "/sys/fs/bpf" || strings.HasPrefix(bpffs.MountPath, "/sys/fs/bpf/") {
		t.Errorf("bpffs mounted at %s: under /sys/fs/bpf the agent mounts a BPF filesystem of its own when the node has none, and that one dies with the pod", bpffs.MountPath)
	}
	if config == nil {
		t.Fatal("the ConfigMap is not mounted")
	}
	if !config.ReadOnly || config.MountPath != ConfigMount {
		t.Errorf("config mount = %+v, want read-only at %s", config, ConfigMount)
	}
	if args := strings.Join(c.Args, " "); !strings.Contains(args, "agent --config "+ConfigMount+"/"+ConfigKey) {
		t.Errorf("args %q do not run the agent on %s/%s", args, ConfigMount, ConfigKey)
	}
	env := ""
	for _, e := range c.Env {
		if e.Name == "XDPGUARD_PIN_PATH" {
			env = e.Value
		}
	}
	if env != pinPath {
		t.Errorf("XDPGUARD_PIN_PATH = %q, config pin_path = %q: kubectl exec ... xdpguard status would read other pins", env, pinPath)
	}
	for _, key := range []string{ConfigKey, "allow.txt"} {
		if _, ok := m.ConfigMap.Data[key]; !ok {
			t.Errorf("ConfigMap has no %s", key)
		}
	}
}

// Probes, the container port, the scrape annotations and the PodMonitor all
// name the port the agent listens on (the config's metrics.listen), at an
// address the kubelet and Prometheus reach: the node's.
func TestMetricsPortsAgree(t *testing.T) {
	m := load(t, PodMonitorDir)
	c := agent(t, m)
	listen, port, err := MetricsListen(agentConfig(t, m))
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(listen)
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		t.Errorf("metrics.listen %q: with hostNetwork the kubelet and Prometheus come to the node's address; listen on all (0.0.0.0)", listen)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET of %s", p.name, p.path)
			continue
		}
		g := p.probe.HTTPGet
		got, err := ContainerPort(c, g.Port.StrVal, g.Port.IntValue())
		if err != nil {
			t.Errorf("%s probe: %v", p.name, err)
			continue
		}
		if got != port || g.Path != p.path || (g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP) {
			t.Errorf("%s probe: %s %s:%d, want HTTP %s on the config's port %d", p.name, g.Scheme, g.Path, got, p.path, port)
		}
		if g.Host != "" {
			t.Errorf("%s probe: host %q: the kubelet must probe the pod's (the node's) address", p.name, g.Host)
		}
	}
	named, err := ContainerPort(c, "metrics", 0)
	if err != nil || named != port {
		t.Errorf("container port \"metrics\" = %d (%v), want %d", named, err, port)
	}
	ann := m.DaemonSet.Spec.Template.Annotations
	for k, want := range map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(port),
		"prometheus.io/path":   "/metrics",
	} {
		if ann[k] != want {
			t.Errorf("pod annotation %s = %q, want %q", k, ann[k], want)
		}
	}

	pm := m.PodMonitor
	if pm.Namespace != m.DaemonSet.Namespace {
		t.Errorf("PodMonitor in namespace %q, DaemonSet in %q: it selects pods of its own namespace", pm.Namespace, m.DaemonSet.Namespace)
	}
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(m.DaemonSet.Spec.Template.Labels)) {
		t.Errorf("PodMonitor selector %s does not select the DaemonSet's pods %v", sel, m.DaemonSet.Spec.Template.Labels)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("PodMonitor has %d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	name := ""
	if ep.Port != nil {
		name = *ep.Port
	}
	number := 0
	if ep.PortNumber != nil {
		number = int(*ep.PortNumber)
	}
	got, err := ContainerPort(c, name, number)
	if err != nil || got != port || ep.Path != "/metrics" {
		t.Errorf("PodMonitor scrapes %s on port %d (%v), want /metrics on %d", ep.Path, got, err, port)
	}
}

// Everything lives in the namespace the kustomization makes, and that
// namespace admits the pod under Pod Security Admission.
func TestNamespace(t *testing.T) {
	m := load(t, PodMonitorDir)
	ns := m.Namespace.Name
	for what, got := range map[string]string{
		"ConfigMap": m.ConfigMap.Namespace, "DaemonSet": m.DaemonSet.Namespace, "PodMonitor": m.PodMonitor.Namespace,
	} {
		if got != ns {
			t.Errorf("%s in namespace %q, want %q", what, got, ns)
		}
	}
	// hostNetwork, hostPath and capabilities beyond the baseline standard's
	// list are refused by "baseline" and "restricted".
	if got := m.Namespace.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("pod-security.kubernetes.io/enforce = %q: the DaemonSet's pods need the privileged level", got)
	}
}

// The ConfigMap's config is one the agent accepts, read by the agent's own
// config package from the ConfigMap's files as the pod sees them; and it
// leaves protection in place when the pod stops, which the rolling update
// relies on. A broken copy is refused, so the check can fail.
func TestConfigAcceptedByAgent(t *testing.T) {
	m := load(t, Dir)
	cfg := agentConfig(t, m)
	if cfg.OnStop != config.OnStopKeep {
		t.Errorf("on_stop = %q, want keep: a rolling update would open a gap on every node", cfg.OnStop)
	}
	if len(cfg.Interfaces.Include) == 0 || len(cfg.Ports) == 0 {
		t.Errorf("config protects nothing: include %v, ports %v", cfg.Interfaces.Include, cfg.Ports)
	}
	if len(cfg.Allow.Files) != 1 || cfg.Allow.Files[0] != filepath.Join(filepath.Dir(cfg.Path), "allow.txt") {
		t.Errorf("allow.files = %v, want the ConfigMap's allow.txt beside the config", cfg.Allow.Files)
	}

	broken := *m.ConfigMap
	broken.Data = maps.Clone(m.ConfigMap.Data)
	const good, bad = "\non_stop: keep\n", "\non_stop: kept\n"
	if strings.Count(broken.Data[ConfigKey], good) != 1 {
		t.Fatalf("config has no line %q to break", strings.TrimSpace(good))
	}
	broken.Data[ConfigKey] = strings.Replace(broken.Data[ConfigKey], good, bad, 1)
	bm := *m
	bm.ConfigMap = &broken
	if _, err := bm.AgentConfig(t.TempDir()); err == nil {
		t.Errorf("the agent accepts %q", strings.TrimSpace(bad))
	} else {
		t.Logf("broken copy refused as it must be: %v", err)
	}
}

func ptrString[T ~string](p *T) string {
	if p == nil {
		return "unset"
	}
	return string(*p)
}
