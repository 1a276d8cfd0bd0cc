package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/xdpguard/xdpguard/internal/profiles"
	"github.com/xdpguard/xdpguard/loader"
)

// The reflection profiles hook into the ports command here, so that its own
// file keeps its shape: `ports profiles [--json]` lists them, and
// `ports add --profile NAME,...` adds their ports with their directions.
func init() {
	flags, runPorts := portsCmd.flags, portsCmd.run
	portsCmd.args += " | add --profile NAME,... [--direction D] | profiles [--json]"
	portsCmd.help += `

Reflection profiles name the port(s) of a known UDP reflection vector (dns,
ntp, memcached, ...) with the direction to protect: response where ordinary
hosts are clients of the protocol (only unsolicited answers are dropped),
both where no host needs to be. 'ports profiles' lists them with their
amplification factors and sources; 'ports add --profile' adds their ports,
--direction overriding every profile's own.`
	portsCmd.example += `
  sudo xdpguard ports add --profile dns,ntp
  xdpguard ports profiles`
	portsCmd.flags = func(fs *pflag.FlagSet) {
		flags(fs)
		fs.String("profile", "", "add: the ports of these reflection profiles, comma-separated (see ports profiles)")
	}
	portsCmd.run = func(c *cli, fs *pflag.FlagSet, args []string) error {
		if len(args) > 0 && args[0] == "profiles" {
			return listProfiles(c, fs, args[1:])
		}
		if fs.Changed("profile") {
			if len(args) == 0 || args[0] != "add" {
				return usagef("--profile goes with ports add, e.g. ports add --profile dns,ntp")
			}
			return addProfiles(c, fs, args[1:])
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

// selectedProfiles is the --profile list, resolved; a bad name is a usage
// error naming it and the valid ones.
func selectedProfiles(fs *pflag.FlagSet) ([]profiles.Profile, error) {
	list, _ := fs.GetString("profile")
	ps, err := profiles.LookupList(list)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return ps, nil
}

// profileSummary is what `ports add --profile` reports it added.
func profileSummary(ps []profiles.Profile) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprintf("%s (%s %s)", p.Name, joinNumbers(p.Ports), p.Direction)
	}
	return strings.Join(s, ", ")
}

// addProfiles is `ports add --profile NAME,... [--direction D] [--expiry E]`:
// every port of the named profiles, with the profile's direction unless
// --direction overrides it, added in one change (a port already protected
// takes the profile's setting). Nothing changes on any error.
func addProfiles(c *cli, fs *pflag.FlagSet, args []string) error {
	if len(args) > 0 {
		return usagef("ports add --profile takes no PORT arguments (%s): add those with their own ports add", strings.Join(args, " "))
	}
	ps, err := selectedProfiles(fs)
	if err != nil {
		return err
	}
	var override loader.Direction
	if f := fs.Lookup("direction"); f != nil && f.Changed {
		if override, err = loader.ParseDirection(f.Value.String()); err != nil {
			return usageError{err.Error()}
		}
	}
	var expiry time.Duration
	if f := fs.Lookup("expiry"); f != nil && f.Changed {
		if expiry, err = loader.ParseExpiry(f.Value.String()); err != nil {
			return usageError{err.Error()}
		}
	}
	var add []loader.Port
	for _, p := range ps {
		dir := loader.Direction(p.Direction)
		if override != "" {
			dir = override
		}
		if _, err := loader.ParseDirection(string(dir)); err != nil {
			return fmt.Errorf("profile %s: %w", p.Name, err) // the table's own test forbids this
		}
		for _, n := range p.Ports {
			port := loader.Port{Number: n, Direction: dir}
			if dir == loader.DirResponse {
				port.Expiry = expiry // 0: the default
			}
			if i := slices.IndexFunc(add, func(q loader.Port) bool { return q.Number == n }); i >= 0 {
				if add[i] != port {
					return usagef("profiles name port %d twice with different directions (%s, %s): add them separately", n, add[i], port)
				}
				continue
			}
			add = append(add, port)
		}
	}
	if expiry != 0 && !slices.ContainsFunc(add, func(p loader.Port) bool { return p.Direction == loader.DirResponse }) {
		return usagef("--expiry is for response ports only, and these profiles add none: drop it or use --direction response")
	}
	return withConfig(c, true, func(g *loader.Guard) error {
		var left int
		err := changeConfig(g, func(cfg *loader.Config) error {
			cfg.Ports = setPorts(cfg.Ports, add)
			left = len(cfg.Ports)
			return nil
		})
		if err != nil {
			return err
		}
		if override != "" {
			fmt.Fprintf(c.stdout, "profiles %s, all as %s\n", profileNames(ps), override)
		} else {
			fmt.Fprintf(c.stdout, "profiles %s\n", profileSummary(ps))
		}
		fmt.Fprintf(c.stdout, "%d port(s) protected\n", left)
		return warnEgressGap(c, g)
	})
}

func profileNames(ps []profiles.Profile) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Name
	}
	return strings.Join(s, ", ")
}

// joinNumbers is a profile's ports as the table shows them: 53 or 137,138.
func joinNumbers(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}
