package containertest

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/internal/deploytest"
)

// built is what TestMain's `make image` made.
var built struct {
	image   string // the DaemonSet's image reference
	id      string // its image ID (the config's digest)
	digest  string // its manifest's digest
	version string // make's VERSION
	took    time.Duration
}

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		if err := buildImage(); err != nil {
			fmt.Fprintln(os.Stderr, "containertest:", err)
			os.Exit(1)
		}
	} else {
		fmt.Println("containertest: skipping: needs root (podman, namespaces, XDP, bpffs); run `sudo make test`")
	}
	os.Exit(m.Run())
}

// makeImage runs `make image` in the repository with extra make arguments
// and environment, and returns make's VERSION.
func makeImage(root string, env []string, args ...string) (string, error) {
	cmd := exec.Command("make", append([]string{"image"}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("make image %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	// The Makefile's VERSION, computed as it computes it.
	v, err := exec.Command("git", "-C", root, "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		return "", fmt.Errorf("git describe: %w", err)
	}
	return strings.TrimSpace(string(v)), nil
}

// buildImage runs `make image` as a user would and finds the image the
// DaemonSet names among what it tagged.
func buildImage() error {
	root, err := deploytest.Root()
	if err != nil {
		return err
	}
	m, err := deploytest.Load(deploytest.Dir)
	if err != nil {
		return err
	}
	c, err := m.Agent()
	if err != nil {
		return err
	}
	start := time.Now()
	version, err := makeImage(root, nil)
	if err != nil {
		return err
	}
	built.took = time.Since(start)
	built.image, built.version = c.Image, version
	out, err := podman("image", "inspect", "--format", "{{.Id}} {{.Digest}}", c.Image)
	if err != nil {
		return fmt.Errorf("make image did not make the DaemonSet's image %s: %w", c.Image, err)
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return fmt.Errorf("podman image inspect %s: %q", c.Image, out)
	}
	built.id, built.digest = f[0], f[1]
	return nil
}

func requireImage(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (podman, namespaces, XDP, bpffs); run `sudo make test`")
	}
}

// The image holds the static binary and nothing else, labelled with the
// OCI annotation keys, and runs the agent as root by default.
func TestImageContents(t *testing.T) {
	requireImage(t)
	t.Logf("make image took %v", built.took.Round(time.Millisecond))
	for _, tag := range []string{"latest", built.version} {
		id, err := podman("image", "inspect", "--format", "{{.Id}}", "localhost/xdpguard:"+tag)
		if err != nil || id != built.id {
			t.Errorf("localhost/xdpguard:%s is %q (%v), want %s", tag, id, err, built.id)
		}
	}
	mnt, err := podman("image", "mount", built.image)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := podman("image", "unmount", built.image); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	var files []string
	var binSize int64
	err = filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == mnt {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		if !d.IsDir() {
			files = append(files, rel)
			if info, err := d.Info(); err == nil {
				binSize = info.Size()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(files, []string{"usr/local/bin/xdpguard"}) {
		t.Errorf("image files = %v, want the binary alone", files)
	}
	if out, err := exec.Command("file", filepath.Join(mnt, "usr/local/bin/xdpguard")).Output(); err == nil &&
		!strings.Contains(string(out), "statically linked") {
		t.Errorf("the binary is not static: %s", out)
	}
	size, err := podman("image", "inspect", "--format", "{{.Size}}", built.image)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s: id %s, digest %s, size %s bytes (binary %d bytes)", built.image, built.id, built.digest, size, binSize)

	labels := map[string]string{}
	out, err := podman("image", "inspect", "--format", `{{range $k, $v := .Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}`, built.image)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			labels[k] = v
		}
	}
	rev, err := exec.Command("git", "-C", repoRoot(t), "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.source":   "https://github.com/xdpguard/xdpguard",
		"org.opencontainers.image.version":  built.version,
		"org.opencontainers.image.revision": strings.TrimSpace(string(rev)),
	} {
		if labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, labels[k], want)
		}
	}
	if _, ok := labels["io.buildah.version"]; ok {
		t.Error("label io.buildah.version: the builder's version would change the digest across machines")
	}
	user, err := podman("image", "inspect", "--format", "{{.User}}", built.image)
	if err != nil || (user != "" && user != "0" && user != "root") {
		t.Errorf("image user %q (%v): the agent runs as root (the DaemonSet says runAsUser 0)", user, err)
	}
	got, err := podman(append([]string{"run", "--rm", "--network", "none", "--cap-drop", "all", "--read-only"},
		append(slices.Clone(podmanRunVM), built.image, "version")...)...)
	if err != nil || !strings.Contains(got, built.version) {
		t.Errorf("xdpguard version in the image: %q (%v), want %s", got, err, built.version)
	}
}

// Same source, same digest: `make image` once more under another name, with
// an empty Go build cache so that the binary too is compiled anew, gives the
// image TestMain built, to the digest.
func TestImageReproducible(t *testing.T) {
	requireImage(t)
	name := "localhost/xgk8s-repro-" + randomHex(4)
	t.Cleanup(func() {
		// The tags alone when it is the same image; the image when not.
		if _, err := podman("rmi", name+":latest", name+":"+built.version); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	start := time.Now()
	if _, err := makeImage(repoRoot(t), []string{"GOCACHE=" + t.TempDir()}, "IMAGE="+name); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	got, err := podman("image", "inspect", "--format", "{{.Id}} {{.Digest}}", name+":latest")
	if err != nil {
		t.Fatal(err)
	}
	if want := built.id + " " + built.digest; got != want {
		t.Fatalf("rebuilt: %s, want %s", got, want)
	}
	t.Logf("rebuilt from scratch in %v (Go build cache empty): same image id and digest %s", took.Round(time.Millisecond), got)
}

// The ConfigMap as shipped, mounted where the DaemonSet mounts it, is one
// the agent in the image accepts (`xdpguard agent --check-config`, no
// capabilities, no network); a broken copy is refused with its file and
// line, so the check can fail.
func TestConfigMapCheckedInImage(t *testing.T) {
	requireImage(t)
	m, c := manifests(t)
	var mount string
	for _, vm := range c.VolumeMounts {
		for _, v := range m.DaemonSet.Spec.Template.Spec.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil {
				mount = vm.MountPath
			}
		}
	}
	if mount == "" {
		t.Fatal("the DaemonSet mounts no ConfigMap")
	}
	var cfgArg string
	for i, a := range c.Args {
		if a == "--config" && i+1 < len(c.Args) {
			cfgArg = c.Args[i+1]
		}
	}
	if filepath.Dir(cfgArg) != mount {
		t.Fatalf("the agent's --config %q is not in the ConfigMap's mount %s", cfgArg, mount)
	}
	check := func(dir string) (string, error) {
		args := append([]string{"run", "--rm", "--network", "none", "--cap-drop", "all", "--read-only", "--read-only-tmpfs=false",
			"--volume", dir + ":" + mount + ":ro"}, podmanRunVM...)
		args = append(args, "--entrypoint", c.Command[0], c.Image, "agent", "--check-config", cfgArg)
		return podman(args...)
	}
	dir := t.TempDir()
	if _, err := m.WriteConfigMap(dir); err != nil {
		t.Fatal(err)
	}
	out, err := check(dir)
	if err != nil {
		t.Fatalf("the agent in the image refuses the ConfigMap: %v", err)
	}
	t.Logf("%s", out)

	broken := t.TempDir()
	if _, err := m.WriteConfigMap(broken); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(broken, deploytest.ConfigKey)
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(raw), "\nmode: enforce\n", "\nmode: enforcing\n", 1)
	if bad == string(raw) {
		t.Fatal("the config has no line `mode: enforce` to break")
	}
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = check(broken)
	if err == nil {
		t.Fatalf("the agent accepts mode: enforcing:\n%s", out)
	}
	if !strings.Contains(err.Error(), cfgArg+":") || !strings.Contains(err.Error(), "mode") {
		t.Errorf("the refusal does not name the file, line and field: %v", err)
	}
}
