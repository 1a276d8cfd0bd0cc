// Package config reads and validates the xdpguard agent's configuration
// file (/etc/xdpguard/xdpguard.yaml): which interfaces to protect, how, and
// the host-wide policy the loader applies to them.
//
// The file is YAML. Unknown keys are errors, and so is every value the
// loader's own parsers refuse: a typo must never silently leave a host
// unprotected. Every error names the file, the line and the field
// (FILE:LINE: FIELD: what is wrong and what to write instead). Loading reads
// the allow-list files the config names too, so a config that loads is one
// the agent can apply; nothing here touches the kernel.
package config

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/xdpguard/xdpguard/loader"
)

// DefaultPath is where the agent reads its config unless told otherwise.
const DefaultPath = "/etc/xdpguard/xdpguard.yaml"

// DefaultMetricsListen serves metrics on loopback only: counters say what an
// attack looks like and are nobody else's business unless the operator says.
const DefaultMetricsListen = "127.0.0.1:9477"

// DefaultResyncInterval is how often the agent checks the kernel still
// matches the config when nothing told it otherwise (someone detaching a
// program by hand raises no event the agent could hear).
const DefaultResyncInterval = time.Minute

// Loopback is never matched by a glob, only when include names it.
const Loopback = "lo"

// maxIfname is the longest interface name Linux accepts (IFNAMSIZ - 1).
const maxIfname = 15

// OnStop says what becomes of protection when the agent stops (SIGTERM).
type OnStop string

const (
	// OnStopKeep leaves everything attached and pinned: protection does
	// not depend on the agent running, and a restart adopts it.
	OnStopKeep OnStop = "keep"
	// OnStopDetach detaches every interface under the pin path and
	// removes the pinned state, as `xdpguard detach --all` does.
	OnStopDetach OnStop = "detach"
)

// Config is one validated config file.
type Config struct {
	// Path is the file it was read from.
	Path string
	// PinPath is the loader's pin path; the agent owns what is under it.
	PinPath    string
	Interfaces Interfaces
	// Ports are the protected UDP ports, ascending by number and unique,
	// each with its direction (and a response port's expiry).
	Ports     []loader.Port
	Mode      loader.Mode
	Fragments loader.FragPolicy
	Allow     Allow
	// MetricsListen is the HTTP address for /metrics, /healthz and
	// /readyz; "" turns the endpoint off.
	MetricsListen  string
	OnStop         OnStop
	ResyncInterval time.Duration // 0: no periodic resync
	// Attacks are the thresholds of the agent's attack events.
	Attacks Attacks
	// Digest is a SHA-256 over the config file's and every allow-list
	// file's contents: equal digests, nothing to reload.
	Digest [sha256.Size]byte
}

// Interfaces says which interfaces to protect, and how.
type Interfaces struct {
	// Include and Exclude are globs (path.Match) on interface names.
	Include, Exclude []string
	XDPMode          loader.XDPMode
	Egress           bool
	TCBackend        loader.TCBackend
	// Force replaces an XDP program that is not xdpguard's.
	Force bool
}

// Attacks configures attack events: the agent logs "attack started" when an
// interface's drop rate stays at or above ThresholdPPS for MinDuration,
// "attack ongoing" at most every UpdateEvery, and "attack ended" once the
// rate has stayed below the threshold for QuietPeriod.
type Attacks struct {
	// ThresholdPPS is the drop rate, in packets per second summed over
	// the drop reasons (and would_drop in monitor mode) and both hooks,
	// at which an attack starts; 0 turns attack events off.
	ThresholdPPS uint64
	// MinDuration is how long the rate must stay at or above the
	// threshold before the attack is announced (0: at the first second).
	MinDuration time.Duration
	// QuietPeriod is how long the rate must stay below the threshold
	// before the attack is declared over.
	QuietPeriod time.Duration
	// UpdateEvery is the least time between two "attack ongoing" lines
	// (0: none).
	UpdateEvery time.Duration
}

// Defaults of the attacks keys.
const (
	DefaultAttackThresholdPPS = 1000
	DefaultAttackMinDuration  = 2 * time.Second
	DefaultAttackQuietPeriod  = 10 * time.Second
	DefaultAttackUpdateEvery  = 10 * time.Second
)

// Allow is the allow list: trusted peers that use a protected port.
type Allow struct {
	// Prefixes are the ones written inline in the config.
	Prefixes []netip.Prefix
	// Files are the allow-list files, absolute (relative ones are taken
	// from the config file's directory).
	Files []string
	// All is Prefixes and every file's prefixes, sorted and unique: the
	// allow list the loader is given.
	All []netip.Prefix
}

// LoaderConfig is the host-wide policy the loader writes to the config map.
func (c *Config) LoaderConfig() loader.Config {
	return loader.Config{Mode: c.Mode, FragPolicy: c.Fragments, Ports: slices.Clone(c.Ports)}
}

// WatchedFiles are the files whose change means the config must be read
// again: the config file and every allow-list file it names.
func (c *Config) WatchedFiles() []string {
	return append([]string{c.Path}, c.Allow.Files...)
}

// Error is one thing wrong with a config file, where it is.
type Error struct {
	File  string
	Line  int    // 1-based; 0 when the error is about the file as a whole
	Field string // dotted path, e.g. interfaces.xdp_mode or ports[2]
	Msg   string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Field == "" {
		return loc + ": " + e.Msg
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Msg)
}

// Load reads, parses and validates the config file at path and the
// allow-list files it names. The error, if any, joins every *Error found.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(abs, data)
}

// Parse is Load for a file already read; file names it in errors and
// anchors relative allow-list paths.
func Parse(file string, data []byte) (*Config, error) {
	p := &parser{file: file}
	root, err := p.document(data)
	if err != nil {
		return nil, err
	}
	c := &Config{
		Path:    file,
		PinPath: loader.DefaultPinPath,
		Interfaces: Interfaces{
			XDPMode:   loader.XDPAuto,
			TCBackend: loader.TCAuto,
		},
		Ports:          loader.BothPorts(loader.DefaultPort),
		Mode:           loader.ModeEnforce,
		Fragments:      loader.FragTrack,
		MetricsListen:  DefaultMetricsListen,
		OnStop:         OnStopKeep,
		ResyncInterval: DefaultResyncInterval,
		Attacks: Attacks{
			ThresholdPPS: DefaultAttackThresholdPPS,
			MinDuration:  DefaultAttackMinDuration,
			QuietPeriod:  DefaultAttackQuietPeriod,
			UpdateEvery:  DefaultAttackUpdateEvery,
		},
	}
	sawInclude := false
	p.mapping(root, "", map[string]func(*yaml.Node, string){
		"pin_path": func(n *yaml.Node, f string) { c.PinPath = p.pinPath(n, f) },
		"interfaces": func(n *yaml.Node, f string) {
			p.mapping(n, f, map[string]func(*yaml.Node, string){
				"include": func(n *yaml.Node, f string) {
					sawInclude = true
					c.Interfaces.Include = p.globs(n, f)
				},
				"exclude":  func(n *yaml.Node, f string) { c.Interfaces.Exclude = p.globs(n, f) },
				"xdp_mode": func(n *yaml.Node, f string) { c.Interfaces.XDPMode = parseWith(p, n, f, loader.ParseXDPMode) },
				"egress":   func(n *yaml.Node, f string) { c.Interfaces.Egress = p.boolean(n, f) },
				"tc_backend": func(n *yaml.Node, f string) {
					c.Interfaces.TCBackend = parseWith(p, n, f, loader.ParseTCBackend)
				},
				"force": func(n *yaml.Node, f string) { c.Interfaces.Force = p.boolean(n, f) },
			})
		},
		"ports":     func(n *yaml.Node, f string) { c.Ports = p.ports(n, f) },
		"mode":      func(n *yaml.Node, f string) { c.Mode = parseWith(p, n, f, loader.ParseMode) },
		"fragments": func(n *yaml.Node, f string) { c.Fragments = parseWith(p, n, f, loader.ParseFragPolicy) },
		"allow": func(n *yaml.Node, f string) {
			p.mapping(n, f, map[string]func(*yaml.Node, string){
				"prefixes": func(n *yaml.Node, f string) { c.Allow.Prefixes = p.prefixes(n, f) },
				"files":    func(n *yaml.Node, f string) { c.Allow.Files = p.allowFiles(n, f) },
			})
		},
		"metrics": func(n *yaml.Node, f string) {
			p.mapping(n, f, map[string]func(*yaml.Node, string){
				"listen": func(n *yaml.Node, f string) { c.MetricsListen = p.listen(n, f) },
			})
		},
		"on_stop":         func(n *yaml.Node, f string) { c.OnStop = parseWith(p, n, f, parseOnStop) },
		"resync_interval": func(n *yaml.Node, f string) { c.ResyncInterval = p.duration(n, f) },
		"attacks": func(n *yaml.Node, f string) {
			p.mapping(n, f, map[string]func(*yaml.Node, string){
				"threshold_pps": func(n *yaml.Node, f string) { c.Attacks.ThresholdPPS = p.rate(n, f) },
				"min_duration":  func(n *yaml.Node, f string) { c.Attacks.MinDuration = p.duration(n, f) },
				"quiet_period": func(n *yaml.Node, f string) {
					before := len(p.errs)
					c.Attacks.QuietPeriod = p.duration(n, f)
					if c.Attacks.QuietPeriod == 0 && len(p.errs) == before {
						p.add(n, f, `0 would end an attack at its first quiet second and start it again at the next burst: give at least "1s", e.g. "10s"`)
					}
				},
				"update_every": func(n *yaml.Node, f string) { c.Attacks.UpdateEvery = p.duration(n, f) },
			})
		},
	})
	if !sawInclude && root.Kind == yaml.MappingNode {
		p.add(root, "interfaces.include", `missing: name the interfaces to protect, e.g. include: ["eth*"], or ["*"] for every interface`)
	}
	if len(p.errs) == 0 {
		c.Allow.All, c.Digest = p.loadAllow(data, c.Allow)
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return c, nil
}

func parseOnStop(s string) (OnStop, error) {
	switch o := OnStop(strings.ToLower(s)); o {
	case OnStopKeep, OnStopDetach:
		return o, nil
	}
	return "", fmt.Errorf("invalid on_stop %q: use keep (protection stays when the agent stops) or detach", s)
}

// parser walks the YAML tree, collecting every error with its place.
type parser struct {
	file string
	errs []error
	// allowLines remembers where each allow-list file was named, for
	// errors found when it is read.
	allowLines map[string]allowRef
}

type allowRef struct {
	line  int
	field string
}

func (p *parser) add(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// yamlLine finds the line number in the YAML library's error messages.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// document parses data into its one YAML document's root node.
func (p *parser) document(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: p.file, Msg: `empty: it needs at least interfaces.include, e.g. include: ["eth*"]`}
		}
		msg := err.Error()
		line := 0
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = msg[len(m[0]):]
		}
		msg = strings.TrimPrefix(msg, "yaml: ")
		if strings.Contains(msg, "alphabetic or numeric character") {
			// An unquoted * starts a YAML alias.
			msg += `: quote globs that start with '*', e.g. include: ["*"]`
		}
		return nil, &Error{File: p.file, Line: line, Msg: "invalid YAML: " + msg}
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, &Error{File: p.file, Line: next.Line, Msg: "a second YAML document: the config is one document; remove the '---' and what follows"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Error{File: p.file, Line: root.Line, Msg: "the config must be a mapping of keys (pin_path, interfaces, ports, ...)"}
	}
	return root, nil
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// mapping checks n is a mapping whose keys are all known, each once, and
// hands each value to its key's handler.
func (p *parser) mapping(n *yaml.Node, field string, keys map[string]func(*yaml.Node, string)) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.add(n, field, "must be a mapping (keys: %s)", strings.Join(sortedKeys(keys), ", "))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := k.Value
		f := join(field, name)
		if k.Kind != yaml.ScalarNode {
			p.add(k, field, "keys must be plain names")
			continue
		}
		if line, dup := seen[name]; dup {
			p.add(k, f, "given twice (first on line %d): keep one", line)
			continue
		}
		seen[name] = k.Line
		h, ok := keys[name]
		if !ok {
			p.add(k, f, "unknown key: %s", knownHint(name, field, keys))
			continue
		}
		h(resolve(v), f)
	}
}

func sortedKeys(keys map[string]func(*yaml.Node, string)) []string {
	out := make([]string, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// knownHint lists the keys allowed where an unknown one was found, and
// suggests the closest when it differs by case, '-' for '_', or a letter.
func knownHint(name, field string, keys map[string]func(*yaml.Node, string)) string {
	known := sortedKeys(keys)
	norm := strings.ReplaceAll(strings.ToLower(name), "-", "_")
	for _, k := range known {
		if k == norm || editDistance1(k, norm) {
			return fmt.Sprintf("did you mean %s? (known here: %s)", join(field, k), strings.Join(known, ", "))
		}
	}
	return "known here: " + strings.Join(known, ", ")
}

// editDistance1 reports whether a and b differ by one insertion, deletion
// or substitution.
func editDistance1(a, b string) bool {
	if len(a) < len(b) {
		a, b = b, a
	}
	if len(a)-len(b) > 1 {
		return false
	}
	i := 0
	for i < len(b) && a[i] == b[i] {
		i++
	}
	if len(a) == len(b) {
		return a[i+1:] == b[i+1:] && i < len(a)
	}
	return a[i+1:] == b[i:]
}

// scalar returns n's text if n is a non-null scalar.
func (p *parser) scalar(n *yaml.Node, field, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.add(n, field, "needs %s", want)
		return "", false
	}
	return n.Value, true
}

// parseWith parses a scalar with one of the loader's parsers, so the agent
// accepts exactly what the command line does.
func parseWith[T any](p *parser, n *yaml.Node, field string, parse func(string) (T, error)) T {
	var zero T
	s, ok := p.scalar(n, field, "a value")
	if !ok {
		return zero
	}
	v, err := parse(s)
	if err != nil {
		p.add(n, field, "%v", err)
		return zero
	}
	return v
}

func (p *parser) boolean(n *yaml.Node, field string) bool {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		p.add(n, field, "needs true or false, not %q", n.Value)
		return false
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		p.add(n, field, "needs true or false: %v", err)
	}
	return b
}

// list returns a sequence's items; null (a key with no value) is empty.
func (p *parser) list(n *yaml.Node, field, what string) []*yaml.Node {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.add(n, field, "needs a list of %s, e.g. [a, b]", what)
		return nil
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = resolve(c)
	}
	return out
}

func item(field string, i int) string { return fmt.Sprintf("%s[%d]", field, i) }

func (p *parser) pinPath(n *yaml.Node, field string) string {
	s, ok := p.scalar(n, field, "a directory")
	if !ok {
		return ""
	}
	if !filepath.IsAbs(s) {
		p.add(n, field, "%q is not absolute: give a directory under /sys/fs/bpf, e.g. %s", s, loader.DefaultPinPath)
		return ""
	}
	return filepath.Clean(s)
}

// globs parses interface name patterns: path.Match globs on names Linux
// accepts.
func (p *parser) globs(n *yaml.Node, field string) []string {
	var out []string
	for i, c := range p.list(n, field, "interface names or globs") {
		f := item(field, i)
		s, ok := p.scalar(c, f, "an interface name or glob")
		if !ok {
			continue
		}
		if err := checkGlob(s); err != nil {
			p.add(c, f, "%v", err)
			continue
		}
		out = append(out, s)
	}
	return out
}

// checkGlob accepts what could match a Linux interface name: no '/', ':'
// or white space (dev_valid_name), a valid path.Match pattern, and a
// literal no longer than a name can be.
func checkGlob(s string) error {
	if s == "" {
		return fmt.Errorf(`empty pattern: give a name ("eth0") or a glob ("eth*", "*")`)
	}
	if strings.ContainsAny(s, "/: \t\n") {
		return fmt.Errorf("%q cannot match an interface name: names have no '/', ':' or spaces", s)
	}
	if _, err := path.Match(s, ""); err != nil {
		return fmt.Errorf("%q is not a valid glob (%v): use *, ? and [a-z] as in shell patterns", s, err)
	}
	if !strings.ContainsAny(s, `*?[\`) && len(s) > maxIfname {
		return fmt.Errorf("%q is longer than an interface name can be (%d characters)", s, maxIfname)
	}
	return nil
}

// ports reads the protected ports: each item a port number (protected in
// both directions) or a mapping {port: 53, direction: response, expiry: 30s}.
// A number given twice with different settings is an error at its second
// place.
func (p *parser) ports(n *yaml.Node, field string) []loader.Port {
	if isNull(n) || n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		p.add(n, field, "empty: name at least one UDP port to protect (memcached's is %d)", loader.DefaultPort)
		return nil
	}
	var out []loader.Port
	where := map[uint16]int{} // index in out
	for i, c := range p.list(n, field, "UDP ports") {
		f := item(field, i)
		var ports []loader.Port // what the item names: one port, or a profile's
		switch {
		case isProfileItem(c):
			if ports = p.profilePorts(c, f); ports == nil {
				continue
			}
		case c.Kind == yaml.MappingNode:
			port, ok := p.portMapping(c, f)
			if !ok {
				continue
			}
			ports = []loader.Port{port}
		default:
			s, ok := p.scalar(c, f, "a port number or a mapping {port: 53, direction: response} or {profile: dns}")
			if !ok {
				continue
			}
			num, err := loader.ParsePort(s)
			if err != nil {
				p.add(c, f, "%v", err)
				continue
			}
			ports = []loader.Port{{Number: num, Direction: loader.DirBoth}}
		}
		for _, port := range ports {
			if j, dup := where[port.Number]; dup {
				if out[j] != port {
					p.add(c, f, "port %d is given twice with different settings (%s and %s): keep one", port.Number, out[j], port)
				}
				continue
			}
			where[port.Number] = len(out)
			out = append(out, port)
		}
	}
	slices.SortFunc(out, func(a, b loader.Port) int { return int(a.Number) - int(b.Number) })
	return out
}

// portMapping reads {port: 53, direction: response, expiry: 30s}: port is
// required, direction defaults to both, expiry (response ports only) to
// loader.DefaultSolicitExpiry. A mapping with a profile key is a reflection
// profile instead: profilePorts.
func (p *parser) portMapping(n *yaml.Node, field string) (loader.Port, bool) {
	port := loader.Port{Direction: loader.DirBoth}
	var sawPort, sawExpiry bool
	errs := len(p.errs)
	p.mapping(n, field, map[string]func(*yaml.Node, string){
		"port": func(n *yaml.Node, f string) {
			sawPort = true
			port.Number = parseWith(p, n, f, loader.ParsePort)
		},
		"direction": func(n *yaml.Node, f string) {
			if d := parseWith(p, n, f, loader.ParseDirection); d != "" {
				port.Direction = d
			}
		},
		"expiry": func(n *yaml.Node, f string) {
			sawExpiry = true
			port.Expiry = parseWith(p, n, f, loader.ParseExpiry)
		},
	})
	if !sawPort {
		p.add(n, field, "no port: give its number, as in {port: 53, direction: response}")
	}
	if sawExpiry && port.Direction != loader.DirResponse && len(p.errs) == errs {
		p.add(n, field, "expiry is for response ports only (this one is %s): remove it or add direction: response", port.Direction)
	}
	if port.Direction == loader.DirResponse && port.Expiry == 0 {
		port.Expiry = loader.DefaultSolicitExpiry
	}
	return port, len(p.errs) == errs
}

func (p *parser) prefixes(n *yaml.Node, field string) []netip.Prefix {
	var out []netip.Prefix
	for i, c := range p.list(n, field, "CIDR prefixes") {
		f := item(field, i)
		s, ok := p.scalar(c, f, "a CIDR prefix or address")
		if !ok {
			continue
		}
		pfx, err := loader.ParsePrefix(s)
		if err != nil {
			p.add(c, f, "%v", err)
			continue
		}
		out = append(out, pfx)
	}
	return out
}

func (p *parser) allowFiles(n *yaml.Node, field string) []string {
	var out []string
	if p.allowLines == nil {
		p.allowLines = map[string]allowRef{}
	}
	for i, c := range p.list(n, field, "allow-list files") {
		f := item(field, i)
		s, ok := p.scalar(c, f, "a file name")
		if !ok {
			continue
		}
		if s == "" {
			p.add(c, f, "empty file name")
			continue
		}
		if !filepath.IsAbs(s) {
			s = filepath.Join(filepath.Dir(p.file), s)
		}
		s = filepath.Clean(s)
		if _, dup := p.allowLines[s]; dup {
			p.add(c, f, "%s is listed twice: keep one", s)
			continue
		}
		p.allowLines[s] = allowRef{line: c.Line, field: f}
		out = append(out, s)
	}
	return out
}

// loadAllow reads every allow-list file and returns the whole allow list,
// and the digest of the config (data) and those files.
func (p *parser) loadAllow(data []byte, a Allow) ([]netip.Prefix, [sha256.Size]byte) {
	h := sha256.New()
	writeDigest(h, p.file, data)
	all := slices.Clone(a.Prefixes)
	for _, file := range a.Files {
		ref := p.allowLines[file]
		content, err := os.ReadFile(file)
		if err != nil {
			p.errs = append(p.errs, &Error{File: p.file, Line: ref.line, Field: ref.field, Msg: fmt.Sprintf("allow-list file: %v", err)})
			continue
		}
		writeDigest(h, file, content)
		ps, err := loader.ParsePrefixes(bytes.NewReader(content), file)
		if err != nil {
			p.errs = append(p.errs, &Error{File: p.file, Line: ref.line, Field: ref.field, Msg: err.Error()})
			continue
		}
		all = append(all, ps...)
	}
	slices.SortFunc(all, comparePrefix)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return slices.Compact(all), sum
}

// writeDigest adds one named file to h, length-prefixed so that no two
// sets of files hash alike.
func writeDigest(h hash.Hash, name string, content []byte) {
	fmt.Fprintf(h, "%d:%s:%d:", len(name), name, len(content))
	h.Write(content)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func (p *parser) listen(n *yaml.Node, field string) string {
	if isNull(n) {
		p.add(n, field, `needs an address such as "%s", or "" to turn the HTTP endpoint off`, DefaultMetricsListen)
		return ""
	}
	s, ok := p.scalar(n, field, "an address")
	if !ok || s == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		p.add(n, field, `%q is not HOST:PORT (%v): e.g. "%s", "[::1]:9477", or "" for off`, s, err, DefaultMetricsListen)
		return ""
	}
	if num, err := strconv.ParseUint(port, 10, 16); err != nil || num == 0 {
		p.add(n, field, "port %q: give a number from 1 to 65535", port)
		return ""
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			p.add(n, field, "host %q: give an IP address (or none for every address)", host)
			return ""
		}
	}
	return s
}

// rate parses a rate in packets per second: a whole number, 0 for off.
func (p *parser) rate(n *yaml.Node, field string) uint64 {
	s, ok := p.scalar(n, field, "packets per second, e.g. 1000 (0 turns attack events off)")
	if !ok {
		return 0
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		p.add(n, field, "%q is not a whole number of packets per second: write e.g. 1000, or 0 to turn attack events off", s)
		return 0
	}
	return v
}

func (p *parser) duration(n *yaml.Node, field string) time.Duration {
	s, ok := p.scalar(n, field, `a duration such as "1m"`)
	if !ok {
		return 0
	}
	if s == "0" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		p.add(n, field, `%q is not a duration: write e.g. "30s", "5m", or 0 for never`, s)
		return 0
	}
	if d > 0 && d < time.Second {
		p.add(n, field, "%s is too often: at least 1s (or 0 for never)", d)
		return 0
	}
	return d
}
