package main

import (
	"net/netip"
	"testing"
)

func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1 000", 1_000_000: "1 000 000", 12345678: "12 345 678"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestNiceCeil(t *testing.T) {
	for v, want := range map[float64]float64{0: 1, 0.3: 0.5, 7: 10, 10: 10, 11: 20, 29.7: 50, 51: 100, 101: 200} {
		if got := niceCeil(v); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", v, got, want)
		}
	}
}

func TestRateAndSize(t *testing.T) {
	if got := rate(1_320_000); got != "1.32 M" {
		t.Errorf("rate = %q", got)
	}
	if got := rate(608_400); got != "608 k" {
		t.Errorf("rate = %q", got)
	}
	if got := bytesize(29_045_000); got != "27.7 MiB" {
		t.Errorf("bytesize = %q", got)
	}
	if got := bytesize(512); got != "512 B" {
		t.Errorf("bytesize = %q", got)
	}
}

func TestTouchedShare(t *testing.T) {
	list := []netip.Prefix{netip.MustParsePrefix("10.0.0.128/25"), netip.MustParsePrefix("10.1.0.0/23"), netip.MustParsePrefix("10.2.0.7/32")}
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("10.1.1.9"), netip.MustParseAddr("10.2.0.8"), netip.MustParseAddr("10.3.0.7")}
	if got := touchedShare(list, addrs); got != 0.75 {
		t.Fatalf("touchedShare = %v, want 0.75 (three of four in a touched /24)", got)
	}
	covers := coversAny(addrs)
	for p, want := range map[string]bool{"10.0.0.0/24": true, "10.0.0.128/25": false, "10.3.0.0/16": true, "10.4.0.0/16": false, "0.0.0.0/0": true} {
		if got := covers(netip.MustParsePrefix(p)); got != want {
			t.Errorf("coversAny(%s) = %v, want %v", p, got, want)
		}
	}
}
