// Package solicit measures what checking replies against the request table
// costs (issue 12): on ingress, a reply from memcached's port with the port
// a response port, solicited (its request in the table) and unsolicited (not
// in it), beside the same reply dropped with the port protected both ways;
// on egress, a request to the port recorded in the table, beside the same
// request dropped with the port protected both ways. The request tables
// hold TableFill other requests, so lookups and updates meet a populated
// hash table.
package solicit

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/xdpguard/xdpguard/internal/bench/frames"
	"github.com/xdpguard/xdpguard/internal/bench/perpacket"
	"github.com/xdpguard/xdpguard/internal/bench/progs"
	"github.com/xdpguard/xdpguard/internal/testpkt"
	"github.com/xdpguard/xdpguard/loader"
)

// Names of the subjects (setups) and inputs, in the tables.
const (
	Both       = "both"                  // 11211 protected both ways: today's drop
	Solicited  = "response, solicited"   // 11211 a response port, its request in the table
	Unsolicit  = "response, unsolicited" // 11211 a response port, no request for this reply
	Record     = "response, recorded"    // egress: the request recorded
	Reply      = "reply"                 // input: the answer from :11211
	Request    = "request"               // input: the get to :11211, leaving
	TableFill  = 10_000                  // other requests in each table
	clientPort = 40000
)

// The TC program's return codes.
const (
	tcShot   = 2
	tcUnspec = 0xffffffff
)

// Result is one run: ingress (XDP) and egress (TC) cells.
type Result struct {
	Ingress, Egress *perpacket.Result
}

// Cost is a setup's median per-frame time on its path.
func (r *Result) Cost(setup string) float64 {
	if setup == Record || setup == Both+" egress" {
		return r.Egress.Cells[setup][Request].MedianNs
	}
	return r.Ingress.Cells[setup][Reply].MedianNs
}

type instance struct {
	m  *loader.Maps
	dp *loader.Dataplane
}

func (i instance) Close() error { return errors.Join(i.dp.Close(), i.m.Close()) }

// load makes an instance with 11211 of direction dir, its request tables
// holding TableFill other requests and, with solicited, the reply's.
func load(dir loader.Direction, solicited bool) (instance, error) {
	m, err := loader.NewMaps(loader.MapSizes{})
	if err != nil {
		return instance{}, err
	}
	cfg := loader.DefaultConfig()
	cfg.Ports = []loader.Port{{Number: loader.DefaultPort, Direction: dir}}
	if err := m.WriteConfig(cfg); err != nil {
		m.Close()
		return instance{}, err
	}
	now, err := loader.MonotonicNow()
	if err != nil {
		m.Close()
		return instance{}, err
	}
	server := netip.AddrPortFrom(frames.Server4, loader.DefaultPort)
	for i := range TableFill {
		remote := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), loader.DefaultPort)
		if err := m.PutRequest(loader.Request{Local: netip.AddrPortFrom(frames.Attacker4, clientPort), Remote: remote, Expires: now + time.Hour}); err != nil {
			m.Close()
			return instance{}, err
		}
	}
	if solicited {
		if err := m.PutRequest(loader.Request{Local: netip.AddrPortFrom(frames.Attacker4, clientPort), Remote: server, Expires: now + time.Hour}); err != nil {
			m.Close()
			return instance{}, err
		}
	}
	dp, err := loader.LoadDataplane(m, loader.Counters{})
	if err != nil {
		m.Close()
		return instance{}, err
	}
	return instance{m, dp}, nil
}

// Run measures, in rounds interleaved as perpacket.Run does, the floor and
// three instances on the reply (ingress), and two on the request (egress).
func Run(rounds, repeat int) (res *Result, err error) {
	// This host (frames.Attacker4 here, the client) asked frames.Server4.
	reply, err := testpkt.UDP(frames.Server4, frames.Attacker4, loader.DefaultPort, clientPort, make([]byte, 1400-42)).Frame()
	if err != nil {
		return nil, err
	}
	request, err := testpkt.MemcachedRequest(frames.Attacker4, frames.Server4, clientPort, testpkt.GetK).Frame()
	if err != nil {
		return nil, err
	}
	floor, err := progs.LoadFloor()
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, floor.Close()) }()
	setups := []struct {
		name      string
		dir       loader.Direction
		solicited bool
	}{{Both, loader.DirBoth, false}, {Solicited, loader.DirResponse, true}, {Unsolicit, loader.DirResponse, false}}
	ingress := []perpacket.Subject{{Name: progs.Floor, Prog: floor.Prog}}
	var egress []perpacket.Subject
	for _, s := range setups {
		in, err := load(s.dir, s.solicited)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		defer func() { err = errors.Join(err, in.Close()) }()
		ingress = append(ingress, perpacket.Subject{Name: s.name, Prog: in.dp.XDP})
		switch s.name {
		case Both:
			egress = append(egress, perpacket.Subject{Name: Both + " egress", Prog: in.dp.TC})
		case Unsolicit:
			egress = append(egress, perpacket.Subject{Name: Record, Prog: in.dp.TC})
		}
	}
	res = &Result{}
	if res.Ingress, err = perpacket.Run(ingress, []perpacket.Input{{Name: Reply, Data: reply}}, rounds, repeat); err != nil {
		return nil, err
	}
	if res.Egress, err = perpacket.Run(egress, []perpacket.Input{{Name: Request, Data: request}}, rounds, repeat); err != nil {
		return nil, err
	}
	// Each must have taken the path it is named for.
	for name, want := range map[string]uint32{Both: frames.Drop, Solicited: frames.Pass, Unsolicit: frames.Drop} {
		if v := res.Ingress.Cells[name][Reply].Verdict; v != want {
			return nil, fmt.Errorf("%s returned %s on the reply, want %s", name, frames.VerdictName(v), frames.VerdictName(want))
		}
	}
	for name, want := range map[string]uint32{Both + " egress": tcShot, Record: tcUnspec} {
		if v := res.Egress.Cells[name][Request].Verdict; v != want {
			return nil, fmt.Errorf("%s returned %#x on the request, want %#x", name, v, want)
		}
	}
	return res, nil
}
