package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/xdpguard/xdpguard/internal/bench/progs"
	"github.com/xdpguard/xdpguard/internal/bench/solicit"
)

// The solicited-replies step (issue 12) and its part of the report.

func solicitRun(_ context.Context, r *report) error {
	var err error
	r.solicit, err = solicit.Run(r.o.rounds, r.o.repeat)
	return err
}

func solicitSection(b *strings.Builder, r *report) {
	s := r.solicit
	if s == nil {
		return
	}
	fmt.Fprintf(b, "### Solicited replies\n\n")
	b.WriteString("Memcached's port as a response port (`ports add 11211 --direction response`) beside the same port\n")
	b.WriteString("protected both ways, each instance on maps of its own whose request table holds ")
	fmt.Fprintf(b, "%s other requests,\nin the same interleaved rounds as above (%d of %s). Ingress: a 1400-byte IPv4 answer from :11211\n",
		count(solicit.TableFill), s.Ingress.Rounds, count(s.Ingress.Repeat))
	b.WriteString("through the XDP program, passed when its request is in the table (one hash lookup and a clock\n")
	b.WriteString("read more than the drop), dropped when it is not. Egress: the get to :11211 through the TC\n")
	b.WriteString("program, recorded in the table (an array lookup, a clock read and a hash update) or dropped.\n\n")
	b.WriteString("| path | setup | verdict | ns per frame | beside both |\n|---|---|---|---:|---:|\n")
	fc := s.Ingress.Cells[progs.Floor][solicit.Reply]
	fmt.Fprintf(b, "| ingress reply | %s | drop | %.1f [%.1f–%.1f] | |\n", progs.Floor, fc.MedianNs, fc.P25, fc.P75)
	both := s.Cost(solicit.Both)
	for _, row := range []struct{ name, verdict string }{
		{solicit.Both, "drop_response"}, {solicit.Solicited, "solicited"}, {solicit.Unsolicit, "drop_unsolicited"},
	} {
		c := s.Ingress.Cells[row.name][solicit.Reply]
		fmt.Fprintf(b, "| ingress reply | %s | %s | %.1f [%.1f–%.1f] | %+.1f |\n", row.name, row.verdict, c.MedianNs, c.P25, c.P75, c.MedianNs-both)
	}
	bothOut := s.Cost(solicit.Both + " egress")
	for _, row := range []struct{ name, setup, verdict string }{
		{solicit.Both + " egress", solicit.Both, "drop_request"}, {solicit.Record, solicit.Record, "pass, recorded"},
	} {
		c := s.Egress.Cells[row.name][solicit.Request]
		fmt.Fprintf(b, "| egress request | %s | %s | %.1f [%.1f–%.1f] | %+.1f |\n", row.setup, row.verdict, c.MedianNs, c.P25, c.P75, c.MedianNs-bothOut)
	}
	b.WriteString("\n")
}
