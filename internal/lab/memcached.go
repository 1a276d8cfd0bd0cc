package lab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xdpguard/xdpguard/internal/memcache"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// memcached is the lab's memcached process: a child (tests) or, for the
// command line tool, a detached process known by its pid file.
type memcached struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	pidFile string
}

// StartMemcached starts memcached in the reflector namespace, TCP and UDP on
// port 11211, all addresses of both families, one worker thread (so UDP
// requests are answered in the order they arrive, which the attack's
// sentinel relies on), and waits until it answers over TCP and UDP.
// Detached, it outlives this process and is found again by its pid file.
func (l *Lab) StartMemcached(detached bool) error {
	if l.memcached != nil && l.memcached.cmd != nil {
		return errors.New("memcached already started")
	}
	if detached {
		if err := os.MkdirAll(StateDir, 0o755); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	cmd := l.Reflector.Command("memcached", "-u", "nobody", "-p", strconv.Itoa(MemcachedPort), "-U", strconv.Itoa(MemcachedPort),
		"-t", "1", "-m", "64", "-c", "1024")
	m := &memcached{cmd: cmd, exited: make(chan struct{}), pidFile: pidFile(l.Prefix)}
	if detached {
		log, err := os.Create(logFile(l.Prefix))
		if err != nil {
			return fmt.Errorf("memcached log: %w", err)
		}
		defer log.Close()
		cmd.Stdout, cmd.Stderr = log, log
		// Its own session: `lab.sh up` returning must not take it along.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start memcached in %s: %w", l.Reflector.Name(), err)
	}
	// nsenter execs memcached in place: the pid is memcached's.
	if detached {
		if err := os.WriteFile(m.pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			_ = cmd.Process.Kill()
			return fmt.Errorf("memcached pid file: %w", err)
		}
	}
	go func() {
		_ = cmd.Wait()
		close(m.exited)
	}()
	l.memcached = m
	err := nstest.WaitFor(10*time.Second, "memcached to answer on TCP and UDP", func() (bool, error) {
		select {
		case <-m.exited:
			return false, fmt.Errorf("memcached exited: %v %s", cmd.ProcessState, cmd.Stdout)
		default:
		}
		if _, err := l.MemcachedStats(); err != nil {
			return false, err
		}
		for _, fam := range []Addrs{V4, V6} {
			if err := l.udpProbe(fam); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	if detached {
		// The child's Wait goroutine ends with this process; memcached
		// does not.
		_ = cmd.Process.Release()
	}
	return nil
}

// udpProbe asks memcached over UDP on the reflector's loopback (which
// xdpguard never filters) and waits for its answer.
func (l *Lab) udpProbe(fam Addrs) error {
	return l.Reflector.Do(func() error {
		c, err := net.Dial("udp", net.JoinHostPort(fam.loopback.String(), strconv.Itoa(MemcachedPort)))
		if err != nil {
			return fmt.Errorf("udp probe: %w", err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Write(testpkt.MemcachedPayload(7, "version\r\n")); err != nil {
			return fmt.Errorf("udp probe: %w", err)
		}
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("udp probe over %s: %w", fam.loopback, err)
		}
		if n < 8 || !bytes.HasPrefix(buf[8:n], []byte("VERSION")) {
			return fmt.Errorf("udp probe: unexpected answer %q", buf[:n])
		}
		return nil
	})
}

func (m *memcached) stop() error {
	if m.cmd == nil {
		return stopPidFile(m.pidFile)
	}
	if m.cmd.Process == nil {
		return nil
	}
	select {
	case <-m.exited:
		return nil
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	_ = os.Remove(m.pidFile)
	return nil
}

// stopPidFile stops the detached memcached named in a pid file, checking
// the pid still is a memcached first, and waits for it to go.
func stopPidFile(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("memcached pid file: %w", err)
	}
	defer os.Remove(path)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("memcached pid file %s: bad pid %q", path, b)
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "memcached" {
		return nil // already gone (or the pid was reused: leave it alone)
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return fmt.Errorf("memcached %d: %w", pid, err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return nil
	}
	return nstest.WaitFor(5*time.Second, fmt.Sprintf("memcached %d to exit", pid), func() (bool, error) {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		return errors.Is(err, os.ErrNotExist), nil
	})
}

// MemcachedStats reads memcached's `stats` over TCP on the reflector's
// loopback: the oracle for what memcached actually received.
func (l *Lab) MemcachedStats() (map[string]uint64, error) {
	c, err := l.Dial(l.Reflector, V4.loopback)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Stats()
}

// Dial opens a memcached text-protocol TCP connection from namespace ns to
// the reflector address addr.
func (l *Lab) Dial(ns *nstest.NS, addr netip.Addr) (*memcache.Client, error) {
	return memcache.Dial(ns, netip.AddrPortFrom(addr, MemcachedPort).String(), 10*time.Second)
}
