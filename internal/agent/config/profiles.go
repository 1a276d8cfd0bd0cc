package config

import (
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/xdpguard/xdpguard/internal/profiles"
	"github.com/xdpguard/xdpguard/loader"
)

// isProfileItem reports whether a ports item names a reflection profile:
// {profile: dns}.
func isProfileItem(n *yaml.Node) bool {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "profile" {
			return true
		}
	}
	return false
}

// profilePorts reads {profile: dns, direction: D, expiry: E}: the ports of
// a built-in reflection profile (internal/profiles), each with the
// profile's direction unless direction overrides it; expiry applies to
// response ports. Nil, with the errors recorded, when anything is wrong.
func (p *parser) profilePorts(n *yaml.Node, field string) []loader.Port {
	var (
		prof      profiles.Profile
		override  loader.Direction
		expiry    time.Duration
		sawExpiry bool
	)
	errs := len(p.errs)
	p.mapping(n, field, map[string]func(*yaml.Node, string){
		"profile": func(n *yaml.Node, f string) { prof = parseWith(p, n, f, profiles.Lookup) },
		"direction": func(n *yaml.Node, f string) {
			override = parseWith(p, n, f, loader.ParseDirection)
		},
		"expiry": func(n *yaml.Node, f string) {
			sawExpiry = true
			expiry = parseWith(p, n, f, loader.ParseExpiry)
		},
	})
	if len(p.errs) != errs {
		return nil
	}
	dir := loader.Direction(prof.Direction)
	if override != "" {
		dir = override
	}
	if sawExpiry && dir != loader.DirResponse {
		p.add(n, field, "expiry is for response ports only (profile %s is %s): remove it or add direction: response", prof.Name, dir)
		return nil
	}
	out := make([]loader.Port, len(prof.Ports))
	for i, num := range prof.Ports {
		out[i] = loader.Port{Number: num, Direction: dir}
		if dir == loader.DirResponse {
			out[i].Expiry = expiry
			if expiry == 0 {
				out[i].Expiry = loader.DefaultSolicitExpiry
			}
		}
	}
	return out
}
