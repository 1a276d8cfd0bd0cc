package nstest

import (
	"strings"
	"testing"
)

func TestParseTimeScale(t *testing.T) {
	for _, c := range []struct {
		in   string
		want float64
		bad  bool
	}{
		{"", 1, false},
		{"1", 1, false},
		{"20", 20, false},
		{"2.5", 2.5, false},
		{"0.5", 0, true}, // faster than real time: never shrink a bound
		{"0", 0, true},
		{"-3", 0, true},
		{"1001", 0, true},
		{"fast", 0, true},
	} {
		got, err := parseTimeScale(c.in)
		if c.bad {
			if err == nil || !strings.Contains(err.Error(), TimeScaleEnv) {
				t.Errorf("parseTimeScale(%q) = %v, %v; want an error naming %s", c.in, got, err, TimeScaleEnv)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("parseTimeScale(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}
