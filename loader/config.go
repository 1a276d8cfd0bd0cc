package loader

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultPort is memcached's: UDP to or from it is what xdpguard stops.
const DefaultPort = 11211

// Direction says which UDP of a protected port is dropped.
type Direction string

const (
	// DirBoth drops UDP to the port (requests) and from it (responses),
	// at both hooks: memcached's protection, the default.
	DirBoth Direction = "both"
	// DirRequest drops requests arriving for the port and responses
	// leaving from it: a service here must not reflect. This host may
	// still be a client of the port.
	DirRequest Direction = "request"
	// DirResponse drops responses arriving from the port unless they
	// answer a request this host sent (solicited): this host must not be
	// flooded with reflected answers, and can still use the service.
	DirResponse Direction = "response"
)

// ParseDirection parses "both", "request" or "response".
func ParseDirection(s string) (Direction, error) {
	switch d := Direction(strings.ToLower(strings.TrimSpace(s))); d {
	case DirBoth, DirRequest, DirResponse:
		return d, nil
	}
	return "", fmt.Errorf("invalid direction %q: use both, request or response", s)
}

// Solicited replies are awaited for DefaultSolicitExpiry after their request,
// unless a port says otherwise, within MinSolicitExpiry to MaxSolicitExpiry.
const (
	DefaultSolicitExpiry = 30 * time.Second
	MinSolicitExpiry     = time.Second
	MaxSolicitExpiry     = time.Hour
)

// ParseExpiry parses how long a response port awaits a reply: a Go
// duration (30s, 2m) of whole seconds from 1s to 1h.
func ParseExpiry(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid expiry %q: give a duration from 1s to 1h, such as 30s or 2m", s)
	}
	if err := checkExpiry(d); err != nil {
		return 0, err
	}
	return d, nil
}

func checkExpiry(d time.Duration) error {
	if d < MinSolicitExpiry || d > MaxSolicitExpiry || d%time.Second != 0 {
		return fmt.Errorf("invalid expiry %s: give whole seconds from %s to %s", d, MinSolicitExpiry, MaxSolicitExpiry)
	}
	return nil
}

// Port is one protected UDP port.
type Port struct {
	Number    uint16
	Direction Direction // "" is DirBoth
	// Expiry is how long a request to a response port awaits its reply;
	// 0 is DefaultSolicitExpiry. Only response ports have one: it must
	// be 0 for the others.
	Expiry time.Duration
}

// PortSpec is the JSON form of a Port.
type PortSpec struct {
	Port      uint16 `json:"port"`
	Direction string `json:"direction"`
	Expiry    string `json:"expiry,omitempty"` // response ports only
}

// Spec returns p as output shows it: its direction and, for a response
// port, its expiry (the default spelled out).
func (p Port) Spec() PortSpec {
	p = p.normal()
	s := PortSpec{Port: p.Number, Direction: string(p.Direction)}
	if p.Direction == DirResponse {
		s.Expiry = p.Expiry.String()
	}
	return s
}

// String is the port as ports lists show it: 11211, 53/response(30s),
// 123/request.
func (p Port) String() string {
	p = p.normal()
	switch p.Direction {
	case DirResponse:
		return fmt.Sprintf("%d/%s(%s)", p.Number, p.Direction, p.Expiry)
	case DirRequest:
		return fmt.Sprintf("%d/%s", p.Number, p.Direction)
	}
	return strconv.Itoa(int(p.Number))
}

// normal fills in the defaults: DirBoth, and DefaultSolicitExpiry for a
// response port.
func (p Port) normal() Port {
	if p.Direction == "" {
		p.Direction = DirBoth
	}
	if p.Direction == DirResponse && p.Expiry == 0 {
		p.Expiry = DefaultSolicitExpiry
	}
	return p
}

// check validates p (normalised).
func (p Port) check() error {
	if p.Number == 0 {
		return fmt.Errorf("invalid port 0: give ports from 1 to 65535")
	}
	if _, err := ParseDirection(string(p.Direction)); err != nil {
		return fmt.Errorf("port %d: %w", p.Number, err)
	}
	if p.Direction != DirResponse {
		if p.Expiry != 0 {
			return fmt.Errorf("port %d: an expiry is for response ports only (this one is %s): drop it or use --direction response", p.Number, p.Direction)
		}
		return nil
	}
	if err := checkExpiry(p.Expiry); err != nil {
		return fmt.Errorf("port %d: %w", p.Number, err)
	}
	return nil
}

// BothPorts returns ports protected in both directions, as they were
// before directions existed.
func BothPorts(numbers ...uint16) []Port {
	out := make([]Port, len(numbers))
	for i, n := range numbers {
		out[i] = Port{Number: n, Direction: DirBoth}
	}
	return out
}

// PortNumbers returns the numbers of ports, in their order.
func PortNumbers(ports []Port) []uint16 {
	out := make([]uint16, len(ports))
	for i, p := range ports {
		out[i] = p.Number
	}
	return out
}

// normalisePorts checks ports, fills in defaults, sorts them by number and
// refuses one number given twice with different settings.
func normalisePorts(ports []Port) ([]Port, error) {
	out := make([]Port, 0, len(ports))
	for _, p := range ports {
		p = p.normal()
		if err := p.check(); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b Port) int { return int(a.Number) - int(b.Number) })
	dedup := out[:0]
	for _, p := range out {
		if n := len(dedup); n > 0 && dedup[n-1].Number == p.Number {
			if dedup[n-1] != p {
				return nil, fmt.Errorf("port %d given twice, as %s and as %s: give it once", p.Number, dedup[n-1], p)
			}
			continue
		}
		dedup = append(dedup, p)
	}
	return dedup, nil
}

// Config is the live configuration every attached program reads per packet.
type Config struct {
	Mode       Mode
	FragPolicy FragPolicy
	// Ports are the protected UDP ports, ascending by number.
	Ports []Port
}

// ResponsePorts returns the numbers of c's response ports.
func (c Config) ResponsePorts() []uint16 {
	var out []uint16
	for _, p := range c.Ports {
		if p.normal().Direction == DirResponse {
			out = append(out, p.Number)
		}
	}
	return out
}

// DefaultConfig protects memcached's port in both directions in enforce
// mode, tracking fragments.
func DefaultConfig() Config {
	return Config{Mode: ModeEnforce, FragPolicy: FragTrack, Ports: BothPorts(DefaultPort)}
}

// ParsePort parses a UDP port number, 1 to 65535.
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q: give a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

type portBits = [len(xdpguardConfig{}.RequestPorts)]uint64

// portBitmaps encodes ports as the data plane reads them: a request port
// sets its request bit, a response port its response bit, a port of both
// directions both bits.
func portBitmaps(ports []Port) (req, resp portBits) {
	for _, p := range ports {
		w, b := p.Number/64, p.Number%64
		switch p.normal().Direction {
		case DirRequest:
			req[w] |= 1 << b
		case DirResponse:
			resp[w] |= 1 << b
		default:
			req[w] |= 1 << b
			resp[w] |= 1 << b
		}
	}
	return req, resp
}

// portsFromBitmaps decodes the bitmaps; expiry gives a response port's
// expiry (nil: the default).
func portsFromBitmaps(req, resp *portBits, expiry func(uint16) time.Duration) []Port {
	var ports []Port
	for w := range req {
		bits := req[w] | resp[w]
		for b := 0; b < 64; b++ {
			if bits&(1<<b) == 0 {
				continue
			}
			p := Port{Number: uint16(w*64 + b), Direction: DirBoth}
			switch {
			case req[w]&(1<<b) == 0:
				p.Direction = DirResponse
				p.Expiry = DefaultSolicitExpiry
				if expiry != nil {
					if e := expiry(p.Number); e != 0 {
						p.Expiry = e
					}
				}
			case resp[w]&(1<<b) == 0:
				p.Direction = DirRequest
			}
			ports = append(ports, p)
		}
	}
	return ports
}
