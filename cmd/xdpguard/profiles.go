package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/xdpguard/xdpguard/internal/profiles"
)

// The reflection profiles hook into the ports command here, so that its own
// file keeps its shape: `ports profiles [--json]` lists them.
func init() {
	flags, runPorts := portsCmd.flags, portsCmd.run
	portsCmd.args += " | profiles [--json]"
	portsCmd.help += `

Reflection profiles name the port(s) of a known UDP reflection vector (dns,
ntp, memcached, ...) with the direction to protect: response where ordinary
hosts are clients of the protocol (only unsolicited answers are dropped),
both where no host needs to be. 'ports profiles' lists them with their
amplification factors and sources.`
	portsCmd.example += `
  xdpguard ports profiles`
	portsCmd.flags = flags
	portsCmd.run = func(c *cli, fs *pflag.FlagSet, args []string) error {
		if len(args) > 0 && args[0] == "profiles" {
			return listProfiles(c, fs, args[1:])
		}
		return runPorts(c, fs, args)
	}
}

// profileJSON is one profile in `ports profiles --json`.
type profileJSON struct {
	Name        string   `json:"name"`
	Protocol    string   `json:"protocol"`
	Ports       []uint16 `json:"ports"`
	Direction   string   `json:"direction"`
	Factor      string   `json:"factor"`
	FactorMin   float64  `json:"factor_min"`
	FactorMax   float64  `json:"factor_max"`
	Source      string   `json:"source"`
	Why         string   `json:"why"`
	Limitations string   `json:"limitations,omitempty"`
}

func listProfiles(c *cli, fs *pflag.FlagSet, args []string) error {
	if len(args) > 0 {
		return usagef("ports profiles takes no arguments")
	}
	all := profiles.All()
	if asJSON, _ := fs.GetBool("json"); asJSON {
		out := make([]profileJSON, len(all))
		for i, p := range all {
			out[i] = profileJSON{Name: p.Name, Protocol: p.Protocol, Ports: p.Ports, Direction: string(p.Direction),
				Factor: p.Factor.Text, FactorMin: p.Factor.Min, FactorMax: p.Factor.Max, Source: p.Source,
				Why: p.Why, Limitations: p.Limitations}
		}
		return writeJSON(c.stdout, struct {
			Profiles []profileJSON `json:"profiles"`
		}{out})
	}
	tw := table(c.stdout)
	fmt.Fprintln(tw, "PROFILE\tPORTS\tDIRECTION\tFACTOR\tSOURCE")
	for _, p := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, joinNumbers(p.Ports), p.Direction, p.Factor, p.Source)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, "\nFACTOR: the bandwidth amplification factor the source measured (UDP payload bytes answered per request byte).")
	return nil
}

// joinNumbers is a profile's ports as the table shows them: 53 or 137,138.
func joinNumbers(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}
