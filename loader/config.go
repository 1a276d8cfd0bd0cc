package loader

import (
	"fmt"
	"strconv"
)

// DefaultPort is memcached's: UDP to or from it is what xdpguard stops.
const DefaultPort = 11211

// Config is the live configuration every attached program reads per packet.
type Config struct {
	Mode       Mode
	FragPolicy FragPolicy
	// Ports are the protected UDP ports, ascending.
	Ports []uint16
}

// DefaultConfig protects memcached's port in enforce mode, tracking fragments.
func DefaultConfig() Config {
	return Config{Mode: ModeEnforce, FragPolicy: FragTrack, Ports: []uint16{DefaultPort}}
}

// ParsePort parses a UDP port number, 1 to 65535.
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q: give a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

func portBitmap(ports []uint16) (bm [len(xdpguardConfig{}.Ports)]uint64) {
	for _, p := range ports {
		bm[p/64] |= 1 << (p % 64)
	}
	return bm
}

func portsFromBitmap(bm *[len(xdpguardConfig{}.Ports)]uint64) []uint16 {
	var ports []uint16
	for w, bits := range bm {
		for b := 0; b < 64; b++ {
			if bits&(1<<b) != 0 {
				ports = append(ports, uint16(w*64+b))
			}
		}
	}
	return ports
}
