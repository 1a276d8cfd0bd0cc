package config

import (
	"fmt"
	"path"
)

// Match says whether the interface called name is to be protected, and
// why, in words that follow an interface's name in a log line ("matches
// eth*", "is excluded by docker*").
//
// An exclude pattern wins over every include. "lo" is matched only when an
// include names it exactly: a glob such as "*" never selects loopback, where
// no spoofed datagram can arrive from outside and the host's own clients of
// a protected port (memcached on 127.0.0.1) must keep working.
func (in Interfaces) Match(name string) (bool, string) {
	for _, pat := range in.Exclude {
		if ok, _ := path.Match(pat, name); ok {
			return false, fmt.Sprintf("is excluded by %s", pat)
		}
	}
	for _, pat := range in.Include {
		if ok, _ := path.Match(pat, name); !ok {
			continue
		}
		if name == Loopback && pat != Loopback {
			continue
		}
		return true, fmt.Sprintf("matches %s", pat)
	}
	if name == Loopback {
		return false, `is loopback, protected only when include names "lo"`
	}
	return false, "matches no include pattern"
}
