// Package deploytest reads xdpguard's Kubernetes manifests (deploy/kubernetes)
// the way the API server does: rendered by `kubectl kustomize`, every
// document decoded strictly into its Kubernetes type (an unknown or
// wrongly-cased field, or a key given twice, is an error), and hands them to
// the tests: its own, which check what matters in them, and the container
// test, which runs the image exactly as the DaemonSet says.
package deploytest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/xdpguard/xdpguard/internal/agent/config"
)

// Kustomizations, relative to the repository's root.
const (
	// Dir is the kustomization operators apply: the base.
	Dir = "deploy/kubernetes"
	// PodMonitorDir is the base plus a PodMonitor.
	PodMonitorDir = "deploy/kubernetes/podmonitor"
)

// ConfigKey is the ConfigMap's key holding the agent's config file, and
// ConfigMount where the DaemonSet mounts the ConfigMap.
const (
	ConfigKey   = "xdpguard.yaml"
	ConfigMount = "/etc/xdpguard"
)

// Root is the repository's root: the nearest directory above the working
// directory holding go.mod (tests run in their package's directory).
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from inside the repository")
		}
		dir = parent
	}
}

// Render runs `kubectl kustomize DIR` and returns the rendered stream.
// $KUBECTL names another kubectl to use (the manifests render with Debian
// 12's kubectl 1.20 and with current ones).
func Render(dir string) ([]byte, error) {
	kubectl := "kubectl"
	if k := os.Getenv("KUBECTL"); k != "" {
		kubectl = k
	}
	var stderr bytes.Buffer
	cmd := exec.Command(kubectl, "kustomize", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s kustomize %s: %w: %s", kubectl, dir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// Strict decodes one YAML document into v as the API server does: YAML to
// JSON refusing duplicate keys, then JSON with case-sensitive field names
// refusing unknown fields. (encoding/json alone would match "HostNetwork"
// to hostNetwork and let it through.)
func Strict(doc []byte, v any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(js, v)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// PodMonitor is the part of the Prometheus Operator's monitoring.coreos.com/v1
// PodMonitor that xdpguard's manifest uses, field names as in the operator's
// Go types (pkg/apis/monitoring/v1, v0.95). Decoded strictly, a field
// outside this subset is an error too: add it here when the manifest needs it.
type PodMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              PodMonitorSpec `json:"spec"`
}

// PodMonitorSpec selects the pods and says how to scrape them.
type PodMonitorSpec struct {
	JobLabel            string               `json:"jobLabel,omitempty"`
	PodTargetLabels     []string             `json:"podTargetLabels,omitempty"`
	PodMetricsEndpoints []PodMetricsEndpoint `json:"podMetricsEndpoints"`
	Selector            metav1.LabelSelector `json:"selector"`
	NamespaceSelector   *NamespaceSelector   `json:"namespaceSelector,omitempty"`
}

// NamespaceSelector picks the namespaces the selector looks in.
type NamespaceSelector struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

// PodMetricsEndpoint is one scrape endpoint of the selected pods.
type PodMetricsEndpoint struct {
	Port          *string         `json:"port,omitempty"`
	PortNumber    *int32          `json:"portNumber,omitempty"`
	Path          string          `json:"path,omitempty"`
	Scheme        *string         `json:"scheme,omitempty"`
	Interval      string          `json:"interval,omitempty"`
	ScrapeTimeout string          `json:"scrapeTimeout,omitempty"`
	HonorLabels   bool            `json:"honorLabels,omitempty"`
	Relabelings   []RelabelConfig `json:"relabelings,omitempty"`
}

// RelabelConfig is one Prometheus relabelling step.
type RelabelConfig struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    *string  `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      int64    `json:"modulus,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// Manifests are the objects of one rendered kustomization.
type Manifests struct {
	Namespace  *corev1.Namespace
	ConfigMap  *corev1.ConfigMap
	DaemonSet  *appsv1.DaemonSet
	PodMonitor *PodMonitor // nil when the kustomization has none
}

// kinds maps each apiVersion and kind the manifests may hold to a fresh
// object of its type; anything else is an error.
var kinds = map[string]func() any{
	"v1/Namespace":                        func() any { return new(corev1.Namespace) },
	"v1/ConfigMap":                        func() any { return new(corev1.ConfigMap) },
	"apps/v1/DaemonSet":                   func() any { return new(appsv1.DaemonSet) },
	"monitoring.coreos.com/v1/PodMonitor": func() any { return new(PodMonitor) },
}

// Decode splits a rendered stream into its documents and decodes each
// strictly into its type. It fails on an unknown kind, on a kind given
// twice, and when the namespace, the ConfigMap or the DaemonSet is missing.
func Decode(stream []byte) (*Manifests, error) {
	var m Manifests
	for i, doc := range splitDocuments(stream) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		key := tm.APIVersion + "/" + tm.Kind
		newObj, ok := kinds[key]
		if !ok {
			return nil, fmt.Errorf("document %d: unexpected kind %s", i+1, key)
		}
		obj := newObj()
		if err := Strict(doc, obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i+1, key, err)
		}
		var dup bool
		switch o := obj.(type) {
		case *corev1.Namespace:
			dup, m.Namespace = m.Namespace != nil, o
		case *corev1.ConfigMap:
			dup, m.ConfigMap = m.ConfigMap != nil, o
		case *appsv1.DaemonSet:
			dup, m.DaemonSet = m.DaemonSet != nil, o
		case *PodMonitor:
			dup, m.PodMonitor = m.PodMonitor != nil, o
		}
		if dup {
			return nil, fmt.Errorf("document %d: a second %s", i+1, key)
		}
	}
	switch {
	case m.Namespace == nil:
		return nil, errors.New("no Namespace")
	case m.ConfigMap == nil:
		return nil, errors.New("no ConfigMap")
	case m.DaemonSet == nil:
		return nil, errors.New("no DaemonSet")
	}
	return &m, nil
}

// splitDocuments splits a YAML stream at its "---" lines, dropping empty
// documents.
func splitDocuments(stream []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), stream...), []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

// Load renders the kustomization dir (relative to the repository's root)
// and decodes it.
func Load(dir string) (*Manifests, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	stream, err := Render(filepath.Join(root, dir))
	if err != nil {
		return nil, err
	}
	m, err := Decode(stream)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

// Agent is the DaemonSet's one container, the agent.
func (m *Manifests) Agent() (*corev1.Container, error) {
	cs := m.DaemonSet.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		return nil, fmt.Errorf("DaemonSet %s has %d containers, want the agent alone", m.DaemonSet.Name, len(cs))
	}
	return &cs[0], nil
}

// Config is the agent's config file as the ConfigMap holds it.
func (m *Manifests) Config() ([]byte, error) {
	s, ok := m.ConfigMap.Data[ConfigKey]
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s has no key %s", m.ConfigMap.Name, ConfigKey)
	}
	return []byte(s), nil
}

// WriteConfigMap writes every key of the ConfigMap into dir as a file, as
// the kubelet does where it mounts the ConfigMap, and returns the agent's
// config file among them.
func (m *Manifests) WriteConfigMap(dir string) (string, error) {
	if _, err := m.Config(); err != nil {
		return "", err
	}
	for key, val := range m.ConfigMap.Data {
		if key != filepath.Base(key) || key == "." || key == ".." {
			return "", fmt.Errorf("ConfigMap key %q is not a file name", key)
		}
		if err := os.WriteFile(filepath.Join(dir, key), []byte(val), 0o644); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, ConfigKey), nil
}

// AgentConfig loads the ConfigMap's config with the agent's own config
// package, from the ConfigMap's files written into dir: what the agent
// accepts, and how it reads it. Paths in it are the pod's.
func (m *Manifests) AgentConfig(dir string) (*config.Config, error) {
	file, err := m.WriteConfigMap(dir)
	if err != nil {
		return nil, err
	}
	return config.Load(file)
}

// MetricsListen is the agent's metrics.listen, and its port.
func MetricsListen(cfg *config.Config) (string, int, error) {
	_, port, err := net.SplitHostPort(cfg.MetricsListen)
	if err != nil {
		return "", 0, fmt.Errorf("%s: metrics.listen %q: %w", ConfigKey, cfg.MetricsListen, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n > 65535 {
		return "", 0, fmt.Errorf("%s: metrics.listen %q: port %q is not a port number", ConfigKey, cfg.MetricsListen, port)
	}
	return cfg.MetricsListen, n, nil
}

// ContainerPort resolves a probe's or a PodMonitor's port, a number or the
// name of one of c's ports, to its number.
func ContainerPort(c *corev1.Container, name string, number int) (int, error) {
	if name == "" {
		return number, nil
	}
	for _, p := range c.Ports {
		if p.Name == name {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, name)
}
