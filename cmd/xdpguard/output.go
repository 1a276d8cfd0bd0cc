package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/xdpguard/xdpguard/internal/metrics"
	"github.com/xdpguard/xdpguard/loader"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// joinPorts spells ports on one line: 53/response(30s),123/request,11211.
func joinPorts(ports []loader.Port) string {
	if len(ports) == 0 {
		return "none"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// joinPortSpecs is joinPorts for ports as output holds them.
func joinPortSpecs(ports []loader.PortSpec) string {
	out := make([]loader.Port, len(ports))
	for i, p := range ports {
		out[i] = loader.Port{Number: p.Port, Direction: loader.Direction(p.Direction)}
		if p.Expiry != "" {
			out[i].Expiry, _ = time.ParseDuration(p.Expiry)
		}
	}
	return joinPorts(out)
}

func printStatus(w io.Writer, pinPath string, rep statusReport) {
	tw := table(w)
	fmt.Fprintf(tw, "pin path\t%s\n", pinPath)
	fmt.Fprintf(tw, "mode\t%s\n", rep.Config.Mode)
	fmt.Fprintf(tw, "ports\t%s\n", joinPortSpecs(rep.Config.Ports))
	fmt.Fprintf(tw, "allow\t%d IPv4, %d IPv6 prefixes\n", rep.Config.Allow.IPv4, rep.Config.Allow.IPv6)
	fmt.Fprintf(tw, "fragments\t%s\n", rep.Config.Fragments)
	tw.Flush()
	if rep.EgressGap != nil {
		fmt.Fprintf(w, "\nWARNING: %s\n", rep.EgressGap)
	}
	fmt.Fprintln(w)
	if len(rep.Attachments) == 0 {
		fmt.Fprintln(w, "not attached to any interface")
		return
	}
	tw = table(w)
	fmt.Fprintln(tw, "INTERFACE\tIFINDEX\tNETNS\tHOOK\tMODE\tPROGRAM")
	for _, a := range rep.Attachments {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\n", a.Interface, a.Ifindex, netnsLabel(a), a.Hook, a.Mode, a.ProgramID)
	}
	tw.Flush()
}

func printStats(w io.Writer, st []loader.InterfaceStats) {
	if len(st) == 0 {
		fmt.Fprintln(w, "not attached to any interface")
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "INTERFACE\tHOOK\tREASON\tPACKETS\tBYTES\t")
	for _, s := range st {
		for _, r := range loader.Reasons() {
			c := s.Counters[r.String()]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t\n", s.Interface, s.Hook, r, c.Packets, c.Bytes)
		}
	}
	tw.Flush()
}

// printPrometheus writes the state in Prometheus' text exposition format
// through the collector the agent serves, so both say the same thing under
// the same names.
func printPrometheus(w io.Writer, src metrics.Source) error {
	return metrics.WriteText(w, metrics.NewTextfileRegistry(src, version))
}

// guardSource reads g; names, when given, restrict the per-interface series.
func guardSource(g *loader.Guard, names []string) metrics.Source {
	return metrics.SourceFunc(func() (*metrics.Snapshot, error) { return metrics.ReadGuard(g, names...) })
}

// netnsLabel names an attachment's network namespace by its inode, marking
// the one status runs in.
func netnsLabel(a loader.Attachment) string {
	switch {
	case a.Netns == 0:
		return "unknown (pinned by an older release: attach in its namespace upgrades it)"
	case a.Here:
		return fmt.Sprintf("%d (this one)", a.Netns)
	}
	return fmt.Sprint(a.Netns)
}
