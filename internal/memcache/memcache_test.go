package memcache

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// serve answers each request line read from conn with the reply script
// gives for it, as memcached would.
func serve(t *testing.T, conn net.Conn, script map[string]string) {
	t.Helper()
	go func() {
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			if strings.HasPrefix(line, "set ") {
				r.ReadString('\n') // the data line
			}
			reply, ok := script[line]
			if !ok {
				reply = "ERROR\r\n"
			}
			if _, err := conn.Write([]byte(reply)); err != nil {
				return
			}
		}
	}()
}

func pipe(t *testing.T, script map[string]string) *Client {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	serve(t, b, script)
	return New(a, time.Second)
}

func TestGet(t *testing.T) {
	script := map[string]string{
		"get k":     "VALUE k 0 7\r\nab\r\ncde\r\nEND\r\n",
		"get miss":  "END\r\n",
		"get bad":   "VALUE k 0 -1\r\nEND\r\n",
		"get error": "SERVER_ERROR out of memory\r\n",
	}
	c := pipe(t, script)
	v, found, err := c.Get("k")
	if err != nil || !found || string(v) != "ab\r\ncde" {
		t.Fatalf("get k = %q, %v, %v; want \"ab\\r\\ncde\", true, nil", v, found, err)
	}
	if v, found, err := c.Get("miss"); err != nil || found || v != nil {
		t.Fatalf("get miss = %q, %v, %v; want nil, false, nil", v, found, err)
	}
	// A protocol error leaves the connection out of step: a fresh one each.
	for _, key := range []string{"bad", "error"} {
		if _, _, err := pipe(t, script).Get(key); err == nil || !strings.Contains(err.Error(), "memcached get "+key) {
			t.Errorf("get %s: error %v, want one naming the key", key, err)
		}
	}
}

func TestSetAndStats(t *testing.T) {
	c := pipe(t, map[string]string{
		"set k 0 0 5":    "STORED\r\n",
		"set full 0 0 1": "SERVER_ERROR out of memory storing object\r\n",
		"stats":          "STAT pid 42\r\nSTAT version 1.6.18\r\nSTAT cmd_get 7\r\nEND\r\n",
	})
	if err := c.Set("k", []byte("hello")); err != nil {
		t.Fatalf("set: %v", err)
	}
	if err := c.Set("full", []byte("x")); err == nil {
		t.Fatal("set answered with SERVER_ERROR returned no error")
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	// Numeric statistics only: version is not a counter.
	if len(st) != 2 || st["pid"] != 42 || st["cmd_get"] != 7 {
		t.Fatalf("stats = %v, want pid 42 and cmd_get 7 only", st)
	}
}

func TestDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { bufio.NewReader(b).ReadString('\n') }() // reads, never answers
	c := New(a, 50*time.Millisecond)
	start := time.Now()
	if _, err := c.Stats(); err == nil {
		t.Fatal("stats from a silent server returned no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stats took %v to fail, deadline was 50ms", d)
	}
}
