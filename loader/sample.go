package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Drop samples (bpf/sample.h): every drop, and every would-drop in monitor
// mode, is either put on one ring buffer shared by all interfaces or counted
// as suppressed, per interface, hook and reason. A per-CPU token bucket of
// SampleRate samples per second per CPU bounds them.
const (
	// SnapLen is how many bytes of a frame a sample carries at most.
	SnapLen = 128
	// DefaultSampleRate is the sampling budget new state starts with, in
	// samples per second per CPU.
	DefaultSampleRate = 256
	// MaxSampleRate is the largest budget the kernel applies.
	MaxSampleRate = 1000000
	// SampleRingBytes is the ring buffer's size (bpf/sample.h).
	SampleRingBytes = 4 << 20
)

// Pin names of the sampling maps: shared ones under the pin path, the
// counters next to each interface's stats. State attached by a release
// before sampling has none of them; Open and Apply create them.
const (
	pinSamples      = "samples"
	pinSampleRate   = "sample_rate"
	pinSampleBudget = "sample_budget"
	pinSampleStats  = "sample_stats"
	pinSampleStats2 = "sample_stats2" // those of the reasons in stats2
	// An empty directory a reader holds a flock on (bpffs has no regular
	// files): the one-reader rule, made visible.
	sampleReaderDir = "samples_reader"
)

// ErrSamplesBusy means another process is reading the samples: a ring buffer
// has one consumer, and two readers would split the samples between them.
var ErrSamplesBusy = errors.New("another reader is reading the drop samples")

// Sample is one sampled drop, decoded.
type Sample struct {
	Time    time.Time `json:"time"`    // wall clock, from the kernel's monotonic stamp
	Netns   uint64    `json:"netns"`   // inode of the interface's network namespace
	Ifindex int       `json:"ifindex"` // in that namespace
	Hook    Hook      `json:"-"`
	Reason  Reason    `json:"-"` // as counted: would_drop in monitor mode
	WireLen int       `json:"wire_len"`
	// L3 is set when Data starts at the IP header (tun, WireGuard, ...),
	// not at an Ethernet header.
	L3   bool   `json:"l3"`
	Data []byte `json:"-"` // the frame's first min(WireLen, SnapLen) bytes

	// Decoded from Data; zero where Data does not reach them.
	Family   int        `json:"family"` // 4, 6, or 0: not IP
	Src, Dst netip.Addr `json:"-"`
	Proto    uint8      `json:"proto"` // the transport protocol (IPv6: after extension headers)
	// HasPorts: SrcPort and DstPort were read (UDP, whole or first fragment).
	HasPorts bool   `json:"has_ports"`
	SrcPort  uint16 `json:"sport"`
	DstPort  uint16 `json:"dport"`
	// Fragment fields: Fragment is set for any fragment, first or later.
	Fragment   bool   `json:"fragment"`
	FragID     uint32 `json:"frag_id"`
	FragOffset int    `json:"frag_offset"` // in bytes
	MoreFrags  bool   `json:"more_fragments"`
}

// sampleRecord is struct sample of bpf/sample.h: bpf2go does not emit it, as
// no map has it as a value type (a ring buffer has none).
const (
	sampleHeaderLen = 32
	sampleRecordLen = sampleHeaderLen + SnapLen
)

// SampleCounter counts one interface's, hook's and reason's drops by what
// sampling did with them: Sampled + Suppressed equals the drop counter.
type SampleCounter struct {
	Sampled    uint64 `json:"sampled"`
	Suppressed uint64 `json:"suppressed"`
}

// HookSampleCounters are one hook's sample counters, indexed by Reason.
type HookSampleCounters [xdpguardReasonREASON_MAX]SampleCounter

// ReadSampleStats sums an interface's sample counters over CPUs, per hook,
// from the two maps as ReadStats reads the counters (m2 nil: 0).
func ReadSampleStats(m, m2 *ebpf.Map) (map[Hook]HookSampleCounters, error) {
	out := make(map[Hook]HookSampleCounters, hookCount)
	for h := range hookCount {
		var hc HookSampleCounters
		for r := range ReasonCount {
			var perCPU []xdpguardSampleCount
			second, slot := statsSlot(h, r)
			mp := m
			if second {
				mp = m2
			}
			if mp == nil {
				continue
			}
			if err := mp.Lookup(slot, &perCPU); err != nil {
				return nil, fmt.Errorf("read sample counters %s/%s: %w", h, Reason(r), err)
			}
			for _, c := range perCPU {
				hc[r].Sampled += c.Sampled
				hc[r].Suppressed += c.Suppressed
			}
		}
		out[h] = hc
	}
	return out, nil
}

// SampleRate returns the sampling budget, samples per second per CPU; 0 is off.
func (m *Maps) SampleRate() (uint32, error) {
	var rate uint32
	if err := m.SampleRateMap.Lookup(uint32(0), &rate); err != nil {
		return 0, fmt.Errorf("read sampling rate: %w", err)
	}
	return rate, nil
}

// SetSampleRate sets the sampling budget, samples per second per CPU, from
// 0 (off) to MaxSampleRate. It takes effect at once on every interface.
func (m *Maps) SetSampleRate(rate uint32) error {
	if rate > MaxSampleRate {
		return fmt.Errorf("sampling rate %d is too large: give 0 (off) to %d samples per second per CPU", rate, MaxSampleRate)
	}
	if err := m.SampleRateMap.Update(uint32(0), rate, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("write sampling rate: %w", err)
	}
	return nil
}

// SampleReader reads the drop samples of every interface.
type SampleReader struct {
	rd     *ringbuf.Reader
	lock   *os.File // nil for unpinned maps (tests)
	offset time.Duration
}

// OpenSamples opens the pinned state's sample ring buffer for reading. A
// ring buffer has one consumer: while one SampleReader is open, another
// process's OpenSamples fails with ErrSamplesBusy.
func (g *Guard) OpenSamples() (*SampleReader, error) {
	// A read-only open of state from a release before sampling made an
	// unpinned ring buffer no program writes to: say so, not wait for ever.
	if _, err := os.Stat(filepath.Join(g.pinPath, pinSamples)); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: no drop-sample ring buffer: the state was made by a release before sampling; attach the interfaces again (xdpguard attach IFACE) to upgrade it", g.pinPath)
	}
	path := filepath.Join(g.pinPath, sampleReaderDir)
	if err := os.Mkdir(path, sharedPinMode); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	lk, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := unix.Flock(int(lk.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lk.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (xdpguard top or capture): one reader at a time, or each sees only part of them", ErrSamplesBusy)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	r, err := g.Maps.OpenSamples()
	if err != nil {
		lk.Close()
		return nil, err
	}
	r.lock = lk
	return r, nil
}

// OpenSamples opens the maps' ring buffer for reading, with no lock.
func (m *Maps) OpenSamples() (*SampleReader, error) {
	rd, err := ringbuf.NewReader(m.Samples)
	if err != nil {
		return nil, fmt.Errorf("open sample ring buffer: %w", err)
	}
	off, err := monotonicOffset()
	if err != nil {
		rd.Close()
		return nil, err
	}
	return &SampleReader{rd: rd, offset: off}, nil
}

// monotonicOffset is wall time minus CLOCK_MONOTONIC, the clock of
// bpf_ktime_get_ns.
func monotonicOffset() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read CLOCK_MONOTONIC: %w", err)
	}
	return time.Duration(time.Now().UnixNano() - ts.Nano()), nil
}

// SetDeadline makes Read return os.ErrDeadlineExceeded once t has passed
// with no sample; the zero time waits for ever.
func (r *SampleReader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Read waits for the next sample. After Close it returns ringbuf.ErrClosed
// (errors.Is(err, os.ErrClosed) holds too).
func (r *SampleReader) Read() (Sample, error) {
	rec, err := r.rd.Read()
	if err != nil {
		return Sample{}, err
	}
	return decodeSample(rec.RawSample, r.offset)
}

// Close stops reading; a blocked Read returns.
func (r *SampleReader) Close() error {
	err := r.rd.Close()
	if r.lock != nil {
		err = errors.Join(err, r.lock.Close())
	}
	return err
}

func decodeSample(b []byte, offset time.Duration) (Sample, error) {
	if len(b) < sampleRecordLen {
		return Sample{}, fmt.Errorf("sample record of %d bytes, want %d: loader and programs disagree", len(b), sampleRecordLen)
	}
	le := binary.LittleEndian
	capLen := int(le.Uint16(b[24:]))
	if capLen > SnapLen {
		return Sample{}, fmt.Errorf("sample claims %d captured bytes, at most %d", capLen, SnapLen)
	}
	s := Sample{
		Time:    time.Unix(0, int64(le.Uint64(b[0:]))+int64(offset)),
		Netns:   le.Uint64(b[8:]),
		Ifindex: int(le.Uint32(b[16:])),
		WireLen: int(le.Uint32(b[20:])),
		Hook:    Hook(b[26]),
		Reason:  Reason(b[27]),
		L3:      b[28] == 1,
		Data:    append([]byte(nil), b[sampleHeaderLen:sampleHeaderLen+capLen]...),
	}
	s.decodeFrame()
	return s, nil
}

// Header constants of the decoder, as in bpf/parse.h.
const (
	ethHLen       = 14
	vlanHLen      = 4
	etherIPv4     = 0x0800
	etherIPv6     = 0x86DD
	ether8021Q    = 0x8100
	ether8021AD   = 0x88A8
	maxVLANDepth  = 2
	maxIPv6Ext    = 8
	protoUDP      = 17
	protoFragment = 44
	protoAH       = 51
)

// decodeFrame fills the decoded fields from Data, as far as it reaches.
func (s *Sample) decodeFrame() {
	d := s.Data
	off := 0
	if !s.L3 {
		if len(d) < ethHLen {
			return
		}
		etype := binary.BigEndian.Uint16(d[12:])
		off = ethHLen
		for i := 0; i < maxVLANDepth && (etype == ether8021Q || etype == ether8021AD); i++ {
			if len(d) < off+vlanHLen {
				return
			}
			etype = binary.BigEndian.Uint16(d[off+2:])
			off += vlanHLen
		}
		if etype != etherIPv4 && etype != etherIPv6 {
			return
		}
	}
	if len(d) <= off {
		return
	}
	switch d[off] >> 4 {
	case 4:
		s.decodeIPv4(d[off:])
	case 6:
		s.decodeIPv6(d[off:])
	}
}

func (s *Sample) decodeIPv4(ip []byte) {
	if len(ip) < 20 {
		return
	}
	s.Family = 4
	s.Src = netip.AddrFrom4([4]byte(ip[12:16]))
	s.Dst = netip.AddrFrom4([4]byte(ip[16:20]))
	s.Proto = ip[9]
	frag := binary.BigEndian.Uint16(ip[6:])
	s.FragOffset = int(frag&0x1FFF) * 8
	s.MoreFrags = frag&0x2000 != 0
	s.Fragment = s.FragOffset != 0 || s.MoreFrags
	s.FragID = uint32(binary.BigEndian.Uint16(ip[4:]))
	hl := int(ip[0]&0x0F) * 4
	if s.Proto == protoUDP && s.FragOffset == 0 && hl >= 20 {
		s.ports(ip[min(hl, len(ip)):])
	}
}

func (s *Sample) decodeIPv6(ip []byte) {
	if len(ip) < 40 {
		return
	}
	s.Family = 6
	s.Src = netip.AddrFrom16([16]byte(ip[8:24]))
	s.Dst = netip.AddrFrom16([16]byte(ip[24:40]))
	next := ip[6]
	rest := ip[40:]
	for i := 0; i < maxIPv6Ext; i++ {
		switch next {
		case 0, 43, 60, protoAH, protoFragment: // hop-by-hop, routing, destination, AH, fragment
		default:
			s.Proto = next
			if next == protoUDP && s.FragOffset == 0 {
				s.ports(rest)
			}
			return
		}
		if len(rest) < 8 {
			s.Proto = next
			return
		}
		var n int
		switch next {
		case protoFragment:
			n = 8
			fo := binary.BigEndian.Uint16(rest[2:])
			s.Fragment = true
			s.FragOffset = int(fo>>3) * 8
			s.MoreFrags = fo&1 != 0
			s.FragID = binary.BigEndian.Uint32(rest[4:])
		case protoAH:
			n = (int(rest[1]) + 2) * 4
		default:
			n = (int(rest[1]) + 1) * 8
		}
		next = rest[0]
		if s.FragOffset != 0 { // a later fragment: no headers follow
			s.Proto = next
			return
		}
		if len(rest) < n {
			s.Proto = next
			return
		}
		rest = rest[n:]
	}
}

func (s *Sample) ports(udp []byte) {
	if len(udp) < 4 {
		return
	}
	s.HasPorts = true
	s.SrcPort = binary.BigEndian.Uint16(udp[0:])
	s.DstPort = binary.BigEndian.Uint16(udp[2:])
}
