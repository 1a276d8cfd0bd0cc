package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// machine is what the numbers were measured on.
type machine struct {
	kernel   string
	cpu      string
	cpus     int
	memory   string
	versions map[string]string // tool -> version
}

func describeMachine() (machine, error) {
	var m machine
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return m, fmt.Errorf("uname: %w", err)
	}
	m.kernel = unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
	m.cpus = runtime.NumCPU()
	m.cpu = procField("/proc/cpuinfo", "model name")
	m.memory = procField("/proc/meminfo", "MemTotal")
	m.versions = map[string]string{
		"go":          runtime.Version(),
		"xdp-tools":   debVersion("xdp-tools"),
		"memcached":   debVersion("memcached"),
		"nftables":    debVersion("nftables"),
		"netsniff-ng": debVersion("netsniff-ng"),
	}
	return m, nil
}

// procField returns the value of the first "key: value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "unknown"
}

// debVersion is the installed Debian package's version.
func debVersion(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return "not from a Debian package"
	}
	return string(bytes.TrimSpace(out))
}
