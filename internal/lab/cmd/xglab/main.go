// Command xglab builds, inspects and tears down xdpguard's lab (see package
// lab), and runs its attacks, for scripts/lab.sh and scripts/demo.sh.
//
//	xglab [--prefix xgl] up|down|status
//	xglab [--prefix xgl] set KEY SIZE
//	xglab [--prefix xgl] attack --family 4|6 --via refl0|refl1 --cmd stats|get:KEY --count N
//	      [--label TEXT] [--xdpguard BIN --pin-path DIR]
//	xglab table-header
//
// It exits 0 on success, 1 on failure and 2 on a usage error.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"github.com/xdpguard/xdpguard/internal/lab"
)

func main() {
	err := run(os.Args[1:])
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "xglab:", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "xglab:", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(args []string) error {
	fs := pflag.NewFlagSet("xglab", pflag.ContinueOnError)
	fs.SetInterspersed(true)
	prefix := fs.String("prefix", "xgl", "namespace name prefix")
	family := fs.Int("family", 4, "attack: 4 or 6")
	via := fs.String("via", lab.Refl0If, "attack: reflector interface the requests arrive on")
	command := fs.String("cmd", "stats", "attack: stats or get:KEY")
	count := fs.Int("count", 10, "attack: number of requests")
	label := fs.String("label", "", "attack: row label")
	bin := fs.String("xdpguard", "", "attack: xdpguard binary, to learn when it has dropped the requests")
	pin := fs.String("pin-path", "", "attack: xdpguard's pin path")
	expect := fs.String("expect", "", "attack: fail unless the victim got: open (reflected traffic reached its IP layer), blocked (nothing beyond neighbour probes reached its link), clean (nothing reached its IP layer)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() == 0 {
		return usageError{errors.New("usage: xglab [--prefix P] up|down|status|set|attack|table-header")}
	}
	switch fs.Arg(0) {
	case "up":
		return up(*prefix)
	case "down":
		if err := lab.Down(*prefix); err != nil {
			return err
		}
		fmt.Printf("lab %s is down\n", *prefix)
		return nil
	case "status":
		return status(*prefix)
	case "set":
		if fs.NArg() != 3 {
			return usageError{errors.New("usage: xglab set KEY SIZE")}
		}
		size, err := strconv.Atoi(fs.Arg(2))
		if err != nil || size <= 0 {
			return usageError{fmt.Errorf("bad size %q", fs.Arg(2))}
		}
		return set(*prefix, fs.Arg(1), size)
	case "table-header":
		fmt.Printf("  %-34s %8s %10s %12s %10s %10s %8s\n", "ATTACK", "REQUESTS", "SENT B", "AT VICTIM B", "VICTIM IP", "MEMCACHED", "FACTOR")
		return nil
	case "attack":
		var mc string
		switch {
		case *command == "stats":
			mc = "stats\r\n"
		case strings.HasPrefix(*command, "get:"):
			mc = "get " + strings.TrimPrefix(*command, "get:") + "\r\n"
		default:
			return usageError{fmt.Errorf("--cmd %q: stats or get:KEY", *command)}
		}
		if *family != 4 && *family != 6 {
			return usageError{fmt.Errorf("--family %d: 4 or 6", *family)}
		}
		if (*bin == "") != (*pin == "") {
			return usageError{errors.New("--xdpguard and --pin-path go together")}
		}
		switch *expect {
		case "", "open", "blocked", "clean":
		default:
			return usageError{fmt.Errorf("--expect %q: open, blocked or clean", *expect)}
		}
		return attack(*prefix, lab.Attack{Family: *family, Via: *via, Command: mc, Count: *count}, *label, *bin, *pin, *expect)
	default:
		return usageError{fmt.Errorf("unknown command %q", fs.Arg(0))}
	}
}

// up builds the lab unless it is already up and healthy; a half-built lab
// (an earlier failure) is removed and built again.
func up(prefix string) error {
	if lab.Exists(prefix) {
		if l, err := lab.Open(prefix); err == nil {
			_, serr := l.MemcachedStats()
			l.Release()
			if serr == nil {
				fmt.Printf("lab %s is already up\n", prefix)
				return nil
			}
		}
		if err := lab.Down(prefix); err != nil {
			return err
		}
	}
	l, err := lab.Build(prefix)
	if err == nil {
		err = l.StartMemcached(true)
	}
	if err == nil {
		err = l.ResolveNeighbours()
	}
	if err != nil {
		if l != nil {
			_ = l.Close()
		}
		return err
	}
	defer l.Release()
	fmt.Print(l)
	return nil
}

func status(prefix string) error {
	if !lab.Exists(prefix) {
		fmt.Printf("lab %s is down\n", prefix)
		return nil
	}
	l, err := lab.Open(prefix)
	if err != nil {
		return fmt.Errorf("lab %s is partly up (run down, then up): %w", prefix, err)
	}
	defer l.Release()
	fmt.Print(l)
	st, err := l.MemcachedStats()
	if err != nil {
		return fmt.Errorf("memcached is not answering: %w", err)
	}
	fmt.Printf("  memcached: pid %d, %d items, cmd_get %d (hits %d, misses %d)\n",
		st["pid"], st["curr_items"], st["cmd_get"], st["get_hits"], st["get_misses"])
	return nil
}

func set(prefix, key string, size int) error {
	l, err := lab.Open(prefix)
	if err != nil {
		return err
	}
	defer l.Release()
	c, err := l.Dial(l.Reflector, lab.V4.Refl0)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Set(key, bytes.Repeat([]byte("A"), size)); err != nil {
		return err
	}
	v, found, err := c.Get(key)
	if err != nil {
		return err
	}
	if !found || len(v) != size {
		return fmt.Errorf("stored %d bytes under %s, read back %d (found %v)", size, key, len(v), found)
	}
	fmt.Printf("stored %d bytes under %q in memcached (over TCP)\n", size, key)
	return nil
}

func attack(prefix string, a lab.Attack, label, bin, pin, expect string) error {
	l, err := lab.Open(prefix)
	if err != nil {
		return err
	}
	defer l.Release()
	if bin != "" {
		g := lab.Guard{Bin: bin, PinPath: pin, NS: l.Reflector}
		base, err := g.Stats()
		if err != nil {
			return err
		}
		// Requests xdpguard drops never reach memcached: they are dealt
		// with once its XDP counters show them all dropped. (Answers its
		// egress program drops are not: memcached sees those requests.)
		a.Dealt = func(frames int) (bool, error) {
			st, err := g.Stats()
			if err != nil {
				return false, err
			}
			return st.XDPDrops() >= base.XDPDrops()+uint64(frames), nil
		}
	}
	r, err := l.Attack(a)
	if err != nil {
		return err
	}
	if label == "" {
		label = fmt.Sprintf("IPv%d %s via %s", a.Family, strings.TrimSpace(a.Command), a.Via)
	}
	answered := "answered"
	if !r.Answered {
		answered = "never saw"
	}
	fmt.Printf("  %-34s %8d %10d %12d %10d %10s %7.0fx\n", label, r.Requests, r.RequestBytes, r.Victim.LinkBytes, r.Victim.Reflected(), answered, r.Amplification())
	switch {
	case expect == "open" && r.Victim.Reflected() == 0:
		return fmt.Errorf("%s: expected the attack to reach the victim, nothing did", label)
	// The victim's link also carries the router's neighbour probes (an
	// IPv6 unicast NUD probe is 78 bytes), so "nothing" allows for those;
	// the smallest reflected answer is far larger.
	case expect == "blocked" && (r.Victim.LinkBytes > 200 || r.Victim.Reflected() != 0):
		return fmt.Errorf("%s: expected nothing at the victim, got %d bytes on its link, %d packets at its IP layer", label, r.Victim.LinkBytes, r.Victim.Reflected())
	case expect == "clean" && r.Victim.Reflected() != 0:
		return fmt.Errorf("%s: %d reflected packets or fragments reached the victim's IP layer", label, r.Victim.Reflected())
	}
	return nil
}
