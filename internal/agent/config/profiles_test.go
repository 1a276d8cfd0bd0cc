package config

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/xdpguard/xdpguard/internal/profiles"
	"github.com/xdpguard/xdpguard/loader"
)

func TestPortsProfiles(t *testing.T) {
	c, err := Load(write(t, `
interfaces:
  include: [eth0]
ports:
  - 11211
  - {profile: dns}
  - profile: NTP
  - {profile: chargen, direction: request}
  - {profile: snmp, expiry: 10s}
`, nil))
	if err != nil {
		t.Fatal(err)
	}
	resp := func(n uint16) loader.Port {
		return loader.Port{Number: n, Direction: loader.DirResponse, Expiry: loader.DefaultSolicitExpiry}
	}
	want := []loader.Port{
		{Number: 19, Direction: loader.DirRequest},
		resp(53), resp(123),
		{Number: 161, Direction: loader.DirResponse, Expiry: 10e9},
		{Number: loader.DefaultPort, Direction: loader.DirBoth},
	}
	if !slices.Equal(c.Ports, want) {
		t.Fatalf("ports %v, want %v", c.Ports, want)
	}
	if lc := c.LoaderConfig(); !slices.Equal(lc.Ports, want) {
		t.Fatalf("loader config ports %v, want %v", lc.Ports, want)
	}
}

func TestPortsProfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		line       int
		field, msg string
	}{
		{"unknown profile", "interfaces:\n  include: [eth0]\nports:\n  - {profile: dnss}\n", 4, "ports[0].profile", `unknown reflection profile "dnss"`},
		{"bad direction", "interfaces:\n  include: [eth0]\nports:\n  - {profile: dns, direction: in}\n", 4, "ports[0].direction", `invalid direction "in"`},
		{"expiry on both", "interfaces:\n  include: [eth0]\nports:\n  - {profile: chargen, expiry: 5s}\n", 4, "ports[0]", "expiry is for response ports only"},
		{"unknown key", "interfaces:\n  include: [eth0]\nports:\n  - {profile: dns, port: 53}\n", 4, "ports[0].port", "unknown key"},
		{"conflicts with a port", "interfaces:\n  include: [eth0]\nports:\n  - 53\n  - {profile: dns}\n", 5, "ports[1]", "port 53 is given twice with different settings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, tc.body, nil)
			_, err := Load(path)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *config.Error", err)
			}
			prefix := path + ":" + strconv.Itoa(tc.line) + ": " + tc.field + ": "
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error:\n  %v\nwant it to start with %q and contain %q", err, prefix, tc.msg)
			}
		})
	}
	// The unknown-profile error lists the valid names.
	_, err := Load(write(t, "interfaces:\n  include: [eth0]\nports:\n  - {profile: nope}\n", nil))
	for _, n := range profiles.Names() {
		if err == nil || !strings.Contains(err.Error(), n) {
			t.Fatalf("error %v does not list profile %s", err, n)
		}
	}
}
