package filewatch

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// next waits for the next change report; false after 5 s without one.
func next(w *Watcher) bool {
	select {
	case <-w.Changed:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

// drain empties Changed, so the next report is for what follows.
func drain(w *Watcher) {
	for {
		select {
		case <-w.Changed:
		default:
			return
		}
	}
}

// TestEveryWayOfChanging: in-place writes, rename over the file (editors,
// configuration management), delete and create, and a Kubernetes-style
// symlink swap are all seen.
func TestEveryWayOfChanging(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "xdpguard.yaml")
	if err := os.WriteFile(file, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Watch(file); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		do   func() error
	}{
		{"write in place", func() error { return os.WriteFile(file, []byte("b"), 0o600) }},
		{"rename over", func() error {
			tmp := filepath.Join(dir, ".xdpguard.yaml.tmp")
			if err := os.WriteFile(tmp, []byte("c"), 0o600); err != nil {
				return err
			}
			return os.Rename(tmp, file)
		}},
		{"delete", func() error { return os.Remove(file) }},
		{"create", func() error { return os.WriteFile(file, []byte("d"), 0o600) }},
		{"symlink swap", func() error {
			data := filepath.Join(dir, "..data_1")
			if err := os.Mkdir(data, 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(data, "x"), []byte("e"), 0o600); err != nil {
				return err
			}
			tmp := filepath.Join(dir, "..data_tmp")
			if err := os.Symlink("..data_1", tmp); err != nil {
				return err
			}
			return os.Rename(tmp, filepath.Join(dir, "..data"))
		}},
	}
	for _, s := range steps {
		drain(w)
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !next(w) {
			t.Fatalf("%s: no change reported", s.name)
		}
	}
}

func TestWatchFollowsTheFileSet(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Watch(filepath.Join(a, "x"), filepath.Join(a, "y"), filepath.Join(b, "z")); err != nil {
		t.Fatal(err)
	}
	if got := w.Dirs(); len(got) != 2 {
		t.Fatalf("dirs %v, want %s and %s", got, a, b)
	}
	if err := w.Watch(filepath.Join(a, "x")); err != nil {
		t.Fatal(err)
	}
	if got := w.Dirs(); len(got) != 1 || got[0] != a {
		t.Fatalf("dirs %v, want only %s", got, a)
	}
	drain(w)
	if err := os.WriteFile(filepath.Join(b, "z"), []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, "x"), []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !next(w) {
		t.Fatal("change in a not seen")
	}
	if err := w.Watch(filepath.Join(a, "absent", "f")); err == nil {
		t.Fatal("watching a directory that does not exist: no error")
	}
}
