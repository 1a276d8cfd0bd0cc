package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

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

func joinPorts(ports []uint16) string {
	if len(ports) == 0 {
		return "none"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}

func printStatus(w io.Writer, pinPath string, rep statusReport) {
	tw := table(w)
	fmt.Fprintf(tw, "pin path\t%s\n", pinPath)
	fmt.Fprintf(tw, "mode\t%s\n", rep.Config.Mode)
	fmt.Fprintf(tw, "ports\t%s\n", joinPorts(rep.Config.Ports))
	fmt.Fprintf(tw, "allow\t%d IPv4, %d IPv6 prefixes\n", rep.Config.Allow.IPv4, rep.Config.Allow.IPv6)
	fmt.Fprintf(tw, "fragments\t%s\n", rep.Config.Fragments)
	tw.Flush()
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

// printPrometheus writes counters in Prometheus' text exposition format.
func printPrometheus(w io.Writer, st []loader.InterfaceStats) {
	for _, m := range []struct {
		name, help string
		value      func(loader.Counter) uint64
	}{
		{"xdpguard_packets_total", "Packets seen by xdpguard, by interface, hook and reason.", func(c loader.Counter) uint64 { return c.Packets }},
		{"xdpguard_bytes_total", "Bytes seen by xdpguard, by interface, hook and reason.", func(c loader.Counter) uint64 { return c.Bytes }},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", m.name, m.help, m.name)
		for _, s := range st {
			for _, r := range loader.Reasons() {
				fmt.Fprintf(w, "%s{interface=\"%s\",hook=\"%s\",reason=\"%s\"} %d\n",
					m.name, promEscape(s.Interface), s.Hook, r, m.value(s.Counters[r.String()]))
			}
		}
	}
}

// promEscape escapes a label value: interface names may hold a quote.
func promEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
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
