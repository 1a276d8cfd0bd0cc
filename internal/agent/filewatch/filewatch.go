// Package filewatch tells when files may have changed, however they were
// changed: written in place, replaced by rename (editors, configuration
// management's atomic replace), deleted and created again, or swapped
// behind a symlink (Kubernetes ConfigMap volumes swap a "..data" symlink).
//
// It watches the directories that hold the files, not the files: a watch on
// a file follows its inode, which a rename-over-write leaves behind. Any
// event in a watched directory is reported, and the caller compares
// contents to decide whether anything changed; that also covers symlink
// swaps, whose events name the link, not the file.
package filewatch

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/fsnotify/fsnotify"
)

// Watcher reports changes in the directories of a set of files.
type Watcher struct {
	w    *fsnotify.Watcher
	dirs []string
	// Changed receives a value when something changed in a watched
	// directory; bursts are coalesced (it has room for one).
	Changed chan struct{}
	// Errors receives the watcher's errors (an inotify queue overflow,
	// say): the caller should then assume everything changed.
	Errors chan error
	done   chan struct{}
}

// New starts a watcher with nothing watched yet.
func New() (*Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch files: %w", err)
	}
	fw := &Watcher{w: w, Changed: make(chan struct{}, 1), Errors: make(chan error, 1), done: make(chan struct{})}
	go fw.run()
	return fw, nil
}

func (fw *Watcher) run() {
	defer close(fw.done)
	for {
		select {
		case _, ok := <-fw.w.Events:
			if !ok {
				return
			}
			select {
			case fw.Changed <- struct{}{}:
			default:
			}
		case err, ok := <-fw.w.Errors:
			if !ok {
				return
			}
			select {
			case fw.Errors <- err:
			default:
			}
		}
	}
}

// Watch makes the watched directories those of files: directories no
// longer needed are dropped, new ones added. A directory that cannot be
// watched (it does not exist) is an error; the others are watched anyway.
func (fw *Watcher) Watch(files ...string) error {
	var want []string
	for _, f := range files {
		d := filepath.Dir(filepath.Clean(f))
		if !slices.Contains(want, d) {
			want = append(want, d)
		}
	}
	var errs []error
	var now []string
	for _, d := range fw.dirs {
		if slices.Contains(want, d) {
			now = append(now, d)
			continue
		}
		_ = fw.w.Remove(d) // gone already, or no longer wanted
	}
	for _, d := range want {
		if slices.Contains(now, d) {
			continue
		}
		if err := fw.w.Add(d); err != nil {
			errs = append(errs, fmt.Errorf("watch %s: %w", d, err))
			continue
		}
		now = append(now, d)
	}
	fw.dirs = now
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// Dirs lists the directories being watched.
func (fw *Watcher) Dirs() []string { return slices.Clone(fw.dirs) }

// Close stops the watcher.
func (fw *Watcher) Close() error {
	err := fw.w.Close()
	<-fw.done
	return err
}
