// Package memcache is a minimal memcached text-protocol client over TCP:
// set, get and stats, which is all the lab, the end-to-end tests and the
// benchmarks ask of memcached. Every request is bounded by a deadline, so a
// starved or blocked memcached shows up as an error, never as a hang.
package memcache

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// Client is one TCP connection to memcached.
type Client struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
}

// Dial connects to addr (host:port) from inside ns, so the connection
// belongs to that namespace; timeout bounds the connect and every request.
func Dial(ns *nstest.NS, addr string, timeout time.Duration) (*Client, error) {
	var conn net.Conn
	err := ns.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("memcached tcp %s from %s: %w", addr, ns.Name(), err)
	}
	return New(conn, timeout), nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// send writes one request under a fresh deadline for the whole exchange.
func (c *Client) send(req string) error {
	if err := c.conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return err
	}
	_, err := io.WriteString(c.conn, req)
	return err
}

func (c *Client) line() (string, error) {
	l, err := c.r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// Stats returns memcached's general statistics (the numeric ones).
func (c *Client) Stats() (map[string]uint64, error) {
	if err := c.send("stats\r\n"); err != nil {
		return nil, fmt.Errorf("memcached stats: %w", err)
	}
	st := map[string]uint64{}
	for {
		line, err := c.line()
		if err != nil {
			return nil, fmt.Errorf("memcached stats: %w", err)
		}
		if line == "END" {
			return st, nil
		}
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "STAT" {
			if v, err := strconv.ParseUint(f[2], 10, 64); err == nil {
				st[f[1]] = v
			}
		}
	}
}

// Set stores value under key.
func (c *Client) Set(key string, value []byte) error {
	if err := c.send(fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", key, len(value), value)); err != nil {
		return fmt.Errorf("memcached set %s: %w", key, err)
	}
	line, err := c.line()
	if err != nil {
		return fmt.Errorf("memcached set %s: %w", key, err)
	}
	if line != "STORED" {
		return fmt.Errorf("memcached set %s: %q", key, line)
	}
	return nil
}

// Get fetches key; found is false on a miss.
func (c *Client) Get(key string) (value []byte, found bool, err error) {
	if err := c.send("get " + key + "\r\n"); err != nil {
		return nil, false, fmt.Errorf("memcached get %s: %w", key, err)
	}
	for {
		line, err := c.line()
		if err != nil {
			return nil, false, fmt.Errorf("memcached get %s: %w", key, err)
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 1 && f[0] == "END":
			return value, found, nil
		case len(f) == 4 && f[0] == "VALUE":
			n, err := strconv.Atoi(f[3])
			if err != nil || n < 0 {
				return nil, false, fmt.Errorf("memcached get %s: %q", key, line)
			}
			value = make([]byte, n+2) // data and its \r\n
			if _, err := io.ReadFull(c.r, value); err != nil {
				return nil, false, fmt.Errorf("memcached get %s: %w", key, err)
			}
			value, found = value[:n], true
		default:
			return nil, false, fmt.Errorf("memcached get %s: %q", key, line)
		}
	}
}

// New wraps an open connection; Dial is the usual way in.
func New(conn net.Conn, timeout time.Duration) *Client {
	return &Client{conn: conn, r: bufio.NewReader(conn), timeout: timeout}
}
