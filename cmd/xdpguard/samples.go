package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/xdpguard/xdpguard/loader"
)

func init() {
	commands = append(commands, samplingCmd, captureCmd, topCmd)
	commandOrder = append(commandOrder, "sampling", "capture", "top")
}

const oneReaderNote = `The samples come from one ring buffer, which has one consumer: run one top
or capture at a time (a second one is refused: "another reader").`

var samplingCmd = &command{
	name:    "sampling",
	args:    "[RATE]",
	summary: "print or set the drop-sampling budget, samples per second per CPU",
	help: `Every dropped packet (in monitor mode, every would-drop) is either sampled
(put on a ring buffer that top and capture read) or counted as suppressed:
sampled + suppressed == drops, exactly (stats --json, metrics). A token
bucket per CPU bounds the samples to RATE per second per CPU (default ` + strconv.Itoa(loader.DefaultSampleRate) + `),
so sampling costs a bounded amount under any flood; 0 turns it off. The
rate is host-wide and takes effect at once. With no argument, prints it.`,
	example: `  sudo xdpguard sampling 100
  sudo xdpguard sampling 0      # off: every drop is counted as suppressed
  sudo xdpguard sampling`,
	run: func(c *cli, _ *pflag.FlagSet, args []string) error {
		if len(args) > 1 {
			return usagef("give at most one rate")
		}
		if len(args) == 0 {
			g, err := c.read()
			if err != nil {
				return err
			}
			defer g.Close()
			rate, err := g.Maps.SampleRate()
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "%d samples per second per CPU\n", rate)
			return nil
		}
		rate, err := strconv.ParseUint(args[0], 10, 32)
		if err != nil || rate > loader.MaxSampleRate {
			return usagef("invalid rate %q: give 0 (off) to %d samples per second per CPU", args[0], loader.MaxSampleRate)
		}
		g, err := c.open(false)
		if err != nil {
			return err
		}
		defer g.Close()
		changes, err := g.Apply(loader.DesiredState{SampleRate: uint32(rate)},
			loader.ApplyOptions{Scope: loader.ApplyScope{SampleRate: true}, Warn: c.warn})
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			fmt.Fprintf(c.stdout, "sampling: %d samples per second per CPU (unchanged)\n", rate)
		}
		printChanges(c, changes)
		return nil
	},
}

// sampleFilter picks the samples of some interfaces (of this namespace) and
// reasons.
type sampleFilter struct {
	netns   uint64
	ifindex map[int]string // empty: every interface
	reasons map[loader.Reason]bool
	ifByIdx map[int]string
}

func newSampleFilter(ifaces, reasons []string) (*sampleFilter, error) {
	ns, err := loader.CurrentNetns()
	if err != nil {
		return nil, err
	}
	f := &sampleFilter{netns: ns, ifindex: map[int]string{}, reasons: map[loader.Reason]bool{}, ifByIdx: map[int]string{}}
	for _, n := range ifaces {
		idx, err := ifIndex(n)
		if err != nil {
			return nil, err
		}
		f.ifindex[idx] = n
	}
	for _, r := range reasons {
		rr, ok := parseDropReason(r)
		if !ok {
			return nil, usagef("invalid reason %q: one of %s", r, strings.Join(dropReasonNames(), ", "))
		}
		f.reasons[rr] = true
	}
	return f, nil
}

func ifIndex(name string) (int, error) {
	ifc, err := netInterfaceByName(name)
	if err != nil {
		return 0, fmt.Errorf("interface %s: %w: give an interface of this network namespace", name, err)
	}
	return ifc, nil
}

func dropReasonNames() []string {
	var out []string
	for _, r := range loader.Reasons() {
		if r.Dropped() || r == loader.ReasonWouldDrop {
			out = append(out, r.String())
		}
	}
	return out
}

func parseDropReason(s string) (loader.Reason, bool) {
	for _, r := range loader.Reasons() {
		if (r.Dropped() || r == loader.ReasonWouldDrop) && r.String() == s {
			return r, true
		}
	}
	return 0, false
}

func (f *sampleFilter) match(s loader.Sample) bool {
	if s.Netns != f.netns {
		return false
	}
	if len(f.ifindex) > 0 {
		if _, ok := f.ifindex[s.Ifindex]; !ok {
			return false
		}
	}
	return len(f.reasons) == 0 || f.reasons[s.Reason]
}

// ifName names a sample's interface.
func (f *sampleFilter) ifName(idx int) string {
	if n, ok := f.ifByIdx[idx]; ok {
		return n
	}
	n := fmt.Sprintf("ifindex%d", idx)
	if name, err := netInterfaceName(idx); err == nil {
		n = name
	}
	f.ifByIdx[idx] = n
	return n
}

// openSamples opens the state read-only and its samples; close both.
func openSamples(c *cli) (*loader.Guard, *loader.SampleReader, error) {
	g, err := c.read()
	if err != nil {
		return nil, nil, err
	}
	rd, err := g.OpenSamples()
	if err != nil {
		g.Close()
		return nil, nil, err
	}
	return g, rd, nil
}

// readSamples delivers samples to fn until ctx ends, the deadline passes
// (zero: none) or fn returns false.
func readSamples(c *cli, rd *loader.SampleReader, until time.Time, fn func(loader.Sample) bool) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-c.ctx.Done():
			rd.Close()
		case <-done:
		}
	}()
	rd.SetDeadline(until)
	for {
		s, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) || (err != nil && c.ctx.Err() != nil) {
			return nil
		}
		if err != nil {
			return err
		}
		if !fn(s) {
			return nil
		}
	}
}

var captureCmd = &command{
	name:    "capture",
	args:    "-w FILE [--pcapng] [--interface IFACE]... [--reason REASON]... [--count N] [--duration D]",
	summary: "write sampled dropped packets to a pcap or pcapng file",
	help: `Writes the drop samples (see sampling) of this network namespace's interfaces
as pcap (or pcapng with --pcapng) for tcpdump or Wireshark: the first ` + strconv.Itoa(loader.SnapLen) + ` bytes
of each frame (the snap length) with its original wire length. Frames of
links without an Ethernet header get a blank one (zero addresses), so one
file holds both. With --pcapng each packet's comment names its interface,
hook and reason. Stops after --count packets, after --duration, or on
Ctrl-C. It writes samples, not every drop: how many were not sampled is in
stats --json ("suppressed").

` + oneReaderNote,
	example: `  sudo xdpguard capture -w drops.pcap --count 100
  sudo xdpguard capture -w drops.pcapng --pcapng --interface eth0 --reason drop_response --duration 30s
  tcpdump -nr drops.pcap`,
	flags: func(fs *pflag.FlagSet) {
		fs.StringP("write", "w", "", "the file to write (- for stdout)")
		fs.Bool("pcapng", false, "write pcapng, with the reason in each packet's comment")
		fs.StringSlice("interface", nil, "only this interface's samples (repeatable)")
		fs.StringSlice("reason", nil, "only this reason's samples (repeatable): "+strings.Join(dropReasonNames(), ", "))
		fs.Int("count", 0, "stop after this many packets (0: no limit)")
		fs.Duration("duration", 0, "stop after this long (0: no limit)")
	},
	run: runCapture,
}

func runCapture(c *cli, fs *pflag.FlagSet, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	path, _ := fs.GetString("write")
	ng, _ := fs.GetBool("pcapng")
	ifaces, _ := fs.GetStringSlice("interface")
	reasons, _ := fs.GetStringSlice("reason")
	count, _ := fs.GetInt("count")
	dur, _ := fs.GetDuration("duration")
	if path == "" {
		return usagef("give the file to write: -w FILE")
	}
	if count < 0 || dur < 0 {
		return usagef("--count and --duration must not be negative")
	}
	filter, err := newSampleFilter(ifaces, reasons)
	if err != nil {
		return err
	}
	g, rd, err := openSamples(c)
	if err != nil {
		return err
	}
	defer g.Close()
	defer rd.Close()

	var out io.Writer = c.stdout
	var file *os.File
	if path != "-" {
		if file, err = os.Create(path); err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
		defer file.Close()
		out = file
	}
	bw := bufio.NewWriter(out)
	w, err := newPcapWriter(bw, ng)
	if err != nil {
		return err
	}
	var until time.Time
	if dur > 0 {
		until = time.Now().Add(dur)
	}
	n := 0
	var werr error
	err = readSamples(c, rd, until, func(s loader.Sample) bool {
		if !filter.match(s) {
			return true
		}
		if werr = w.write(s, filter.ifName(s.Ifindex)); werr != nil {
			return false
		}
		n++
		return count == 0 || n < count
	})
	if err == nil {
		err = werr
	}
	if ferr := w.flush(); err == nil {
		err = ferr
	}
	if ferr := bw.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write %s: %w", path, ferr)
	}
	if err != nil {
		return err
	}
	if file != nil {
		if err := file.Close(); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		fmt.Fprintf(c.stderr, "%d packets written to %s\n", n, path)
	}
	return nil
}

// pcapWriter writes samples as Ethernet frames to pcap or pcapng.
type pcapWriter struct {
	pcap *pcapgo.Writer
	ng   *pcapgo.NgWriter
}

// blankEthLen is the Ethernet header given to frames of L3 links.
const blankEthLen = 14

func newPcapWriter(w io.Writer, ng bool) (*pcapWriter, error) {
	if ng {
		nw, err := pcapgo.NewNgWriterInterface(w, pcapgo.NgInterface{
			Name:        "xdpguard",
			Description: "xdpguard drop samples",
			LinkType:    layers.LinkTypeEthernet,
			SnapLength:  loader.SnapLen + blankEthLen,
		}, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: "xdpguard capture"}})
		if err != nil {
			return nil, fmt.Errorf("write pcapng header: %w", err)
		}
		return &pcapWriter{ng: nw}, nil
	}
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(loader.SnapLen+blankEthLen, layers.LinkTypeEthernet); err != nil {
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	return &pcapWriter{pcap: pw}, nil
}

func (w *pcapWriter) write(s loader.Sample, ifname string) error {
	data, wire := s.Data, s.WireLen
	if s.L3 {
		eth := make([]byte, blankEthLen, blankEthLen+len(data))
		eth[12], eth[13] = 0x08, 0x00
		if s.Family == 6 {
			eth[12], eth[13] = 0x86, 0xdd
		}
		data, wire = append(eth, data...), wire+blankEthLen
	}
	ci := gopacket.CaptureInfo{Timestamp: s.Time, CaptureLength: len(data), Length: wire}
	if w.ng != nil {
		comment := fmt.Sprintf("xdpguard %s on %s (%s)", s.Reason, ifname, s.Hook)
		if err := w.ng.WritePacketWithOptions(ci, data, pcapgo.NgPacketOptions{Comments: []string{comment}}); err != nil {
			return fmt.Errorf("write packet: %w", err)
		}
		return nil
	}
	if err := w.pcap.WritePacket(ci, data); err != nil {
		return fmt.Errorf("write packet: %w", err)
	}
	return nil
}

func (w *pcapWriter) flush() error {
	if w.ng != nil {
		return w.ng.Flush()
	}
	return nil
}

var topCmd = &command{
	name:    "top",
	args:    "[--json] [--interval D] [--count N]",
	summary: "live view of the current attack: drop rates, top sources, destinations, ports",
	help: `Every interval: the drop rates per reason of this network namespace's
interfaces (exact, from the counters), and the top sources, destinations and
destination ports of the dropped packets (from the samples). Each sample
stands for the drops of its interface, hook and reason that were not
sampled, so a source's share is its estimated part of all counted drops,
and its rate that share of the drop rate. On a terminal the screen is
redrawn; otherwise (a pipe, a file) each interval is printed as plain lines;
--json prints one object per interval.

` + oneReaderNote,
	example: `  sudo xdpguard top
  sudo xdpguard top --json --count 5 | jq .top_sources`,
	flags: func(fs *pflag.FlagSet) {
		fs.Bool("json", false, "one JSON object per interval")
		fs.Duration("interval", time.Second, "how often to refresh")
		fs.Int("count", 0, "stop after this many intervals (0: until Ctrl-C)")
		fs.Int("top", 10, "how many sources, destinations and ports to show")
	},
	run: runTop,
}

// TopEntry is one source, destination or port with its estimated part of
// the interval's drops.
type TopEntry struct {
	Key     string  `json:"key"`
	Share   float64 `json:"share"` // of the interval's counted drops, 0..1
	Rate    float64 `json:"pps"`   // estimated packets per second
	Samples int     `json:"samples"`
}

// TopReport is one interval of top.
type TopReport struct {
	Time       time.Time          `json:"time"`
	Interval   float64            `json:"interval_seconds"`
	DropRate   float64            `json:"drops_per_second"`
	Reasons    map[string]float64 `json:"reasons"` // packets per second
	Drops      uint64             `json:"drops"`
	Samples    int                `json:"samples"`
	Suppressed uint64             `json:"suppressed"`
	Sources    []TopEntry         `json:"top_sources"`
	Dests      []TopEntry         `json:"top_destinations"`
	Ports      []TopEntry         `json:"top_ports"`
}

// groupKey is what the counters count per: an interface, a hook, a reason.
type groupKey struct {
	ifindex int
	hook    string
	reason  string
}

func dropCounts(st []loader.InterfaceStats) (drops, sampled, suppressed map[groupKey]uint64) {
	drops, sampled, suppressed = map[groupKey]uint64{}, map[groupKey]uint64{}, map[groupKey]uint64{}
	for _, is := range st {
		for _, r := range dropReasonNames() {
			k := groupKey{is.Ifindex, is.Hook, r}
			drops[k] = is.Counters[r].Packets
			sampled[k] = is.Samples[r].Sampled
			suppressed[k] = is.Samples[r].Suppressed
		}
	}
	return drops, sampled, suppressed
}

// buildTopReport scales each sample to the drops of its group in the
// interval: weight = drops / samples read of that group.
func buildTopReport(samples []loader.Sample, prev, cur []loader.InterfaceStats, elapsed time.Duration, n int) TopReport {
	d0, _, sup0 := dropCounts(prev)
	d1, _, sup1 := dropCounts(cur)
	secs := elapsed.Seconds()
	rep := TopReport{Time: time.Now().UTC().Truncate(time.Millisecond), Interval: secs, Reasons: map[string]float64{}, Samples: len(samples)}
	drops := map[groupKey]uint64{}
	for k, v := range d1 {
		d := v - d0[k]
		drops[k] = d
		rep.Drops += d
		rep.Reasons[k.reason] += float64(d) / secs
		rep.Suppressed += sup1[k] - sup0[k]
	}
	rep.DropRate = float64(rep.Drops) / secs
	read := map[groupKey]int{}
	for _, s := range samples {
		read[groupKey{s.Ifindex, s.Hook.String(), s.Reason.String()}]++
	}
	src, dst, port := map[string]*TopEntry{}, map[string]*TopEntry{}, map[string]*TopEntry{}
	add := func(m map[string]*TopEntry, key string, w float64) {
		e := m[key]
		if e == nil {
			e = &TopEntry{Key: key}
			m[key] = e
		}
		e.Share += w
		e.Samples++
	}
	for _, s := range samples {
		k := groupKey{s.Ifindex, s.Hook.String(), s.Reason.String()}
		w := float64(drops[k]) / float64(read[k])
		add(src, addrKey(s.Src), w)
		add(dst, addrKey(s.Dst), w)
		p := "-"
		if s.HasPorts {
			p = strconv.Itoa(int(s.DstPort))
		}
		add(port, p, w)
	}
	rank := func(m map[string]*TopEntry) []TopEntry {
		out := make([]TopEntry, 0, len(m))
		for _, e := range m {
			est := e.Share
			if rep.Drops > 0 {
				e.Share = est / float64(rep.Drops)
			}
			e.Rate = est / secs
			out = append(out, *e)
		}
		slices.SortFunc(out, func(a, b TopEntry) int {
			return cmp.Or(cmp.Compare(b.Share, a.Share), cmp.Compare(b.Samples, a.Samples), strings.Compare(a.Key, b.Key))
		})
		return out[:min(n, len(out))]
	}
	rep.Sources, rep.Dests, rep.Ports = rank(src), rank(dst), rank(port)
	return rep
}

func addrKey(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func runTop(c *cli, fs *pflag.FlagSet, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	asJSON, _ := fs.GetBool("json")
	every, _ := fs.GetDuration("interval")
	count, _ := fs.GetInt("count")
	n, _ := fs.GetInt("top")
	if every <= 0 || count < 0 || n <= 0 {
		return usagef("--interval and --top must be positive, --count not negative")
	}
	filter, err := newSampleFilter(nil, nil)
	if err != nil {
		return err
	}
	g, rd, err := openSamples(c)
	if err != nil {
		return err
	}
	defer g.Close()
	defer rd.Close()
	tty := isTerminal(c.stdout)
	prev, err := g.Stats()
	if err != nil {
		return err
	}
	last := time.Now()
	for i := 0; count == 0 || i < count; i++ {
		var samples []loader.Sample
		if err := readSamples(c, rd, last.Add(every), func(s loader.Sample) bool {
			if filter.match(s) {
				samples = append(samples, s)
			}
			return true
		}); err != nil {
			return err
		}
		if c.ctx.Err() != nil {
			return nil
		}
		cur, err := g.Stats()
		if err != nil {
			return err
		}
		now := time.Now()
		rep := buildTopReport(samples, prev, cur, now.Sub(last), n)
		prev, last = cur, now
		switch {
		case asJSON:
			b, err := json.Marshal(rep)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "%s\n", b)
		case tty:
			fmt.Fprint(c.stdout, "\x1b[H\x1b[2J")
			printTop(c.stdout, rep)
		default:
			printTop(c.stdout, rep)
			fmt.Fprintln(c.stdout)
		}
	}
	return nil
}

func printTop(w io.Writer, rep TopReport) {
	fmt.Fprintf(w, "xdpguard top  %s  drops %.0f/s  samples %d  suppressed %d\n",
		rep.Time.Format(time.TimeOnly), rep.DropRate, rep.Samples, rep.Suppressed)
	reasons := make([]string, 0, len(rep.Reasons))
	for r, v := range rep.Reasons {
		if v > 0 {
			reasons = append(reasons, r)
		}
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		fmt.Fprintf(w, "  %-22s %12.0f/s\n", r, rep.Reasons[r])
	}
	for _, sec := range []struct {
		title string
		list  []TopEntry
	}{{"SOURCE", rep.Sources}, {"DESTINATION", rep.Dests}, {"DPORT", rep.Ports}} {
		if len(sec.list) == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-40s %7s %12s %8s\n", sec.title, "SHARE", "EST PPS", "SAMPLES")
		for _, e := range sec.list {
			fmt.Fprintf(w, "  %-40s %6.1f%% %12.0f %8d\n", e.Key, 100*e.Share, e.Rate, e.Samples)
		}
	}
}

// isTerminal reports whether w is a terminal: top redraws only there.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func netInterfaceByName(name string) (int, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return ifc.Index, nil
}

func netInterfaceName(idx int) (string, error) {
	ifc, err := net.InterfaceByIndex(idx)
	if err != nil {
		return "", err
	}
	return ifc.Name, nil
}
