package loader

import (
	"fmt"
	"strings"
)

// Reason is the one reason a packet is counted under. The values and their
// order come from enum reason in bpf/xdpguard.c.
type Reason uint32

const (
	ReasonPass               = Reason(xdpguardReasonREASON_PASS)
	ReasonAllowlisted        = Reason(xdpguardReasonREASON_ALLOWLISTED)
	ReasonDropRequest        = Reason(xdpguardReasonREASON_DROP_REQUEST)
	ReasonDropResponse       = Reason(xdpguardReasonREASON_DROP_RESPONSE)
	ReasonDropFragment       = Reason(xdpguardReasonREASON_DROP_FRAGMENT)
	ReasonDropOrphanFragment = Reason(xdpguardReasonREASON_DROP_ORPHAN_FRAGMENT)
	ReasonDropMalformed      = Reason(xdpguardReasonREASON_DROP_MALFORMED)
	ReasonWouldDrop          = Reason(xdpguardReasonREASON_WOULD_DROP)
	ReasonPassOrphanFragment = Reason(xdpguardReasonREASON_PASS_ORPHAN_FRAGMENT)
	ReasonSolicited          = Reason(xdpguardReasonREASON_SOLICITED)
	ReasonDropUnsolicited    = Reason(xdpguardReasonREASON_DROP_UNSOLICITED)

	// ReasonCount is the number of reasons, and of counters per hook.
	ReasonCount = int(xdpguardReasonREASON_MAX)
)

// reasonNames are the names used in JSON and tables: a stable interface.
var reasonNames = [...]string{
	ReasonPass:               "pass",
	ReasonAllowlisted:        "allowlisted",
	ReasonDropRequest:        "drop_request",
	ReasonDropResponse:       "drop_response",
	ReasonDropFragment:       "drop_fragment",
	ReasonDropOrphanFragment: "drop_orphan_fragment",
	ReasonDropMalformed:      "drop_malformed",
	ReasonWouldDrop:          "would_drop",
	ReasonPassOrphanFragment: "pass_orphan_fragment",
	ReasonSolicited:          "solicited",
	ReasonDropUnsolicited:    "drop_unsolicited",
}

// Reasons lists every reason in counter order.
func Reasons() []Reason {
	rs := make([]Reason, ReasonCount)
	for i := range rs {
		rs[i] = Reason(i)
	}
	return rs
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint32(r))
}

// Dropped reports whether packets counted under r are dropped.
func (r Reason) Dropped() bool {
	switch r {
	case ReasonDropRequest, ReasonDropResponse, ReasonDropFragment,
		ReasonDropOrphanFragment, ReasonDropMalformed, ReasonDropUnsolicited:
		return true
	}
	return false
}

// Hook says where a program runs. It mirrors enum hook in bpf/xdpguard.c,
// which BTF cannot carry; TestHookLayout checks the two agree.
type Hook uint32

const (
	HookXDP Hook = iota // ingress, at the driver
	HookTC              // egress, tcx or cls_bpf
	hookCount
)

func (h Hook) String() string {
	switch h {
	case HookXDP:
		return "xdp"
	case HookTC:
		return "tc"
	}
	return fmt.Sprintf("hook(%d)", uint32(h))
}

// Mode is enforce (drop) or monitor (count would_drop, pass).
type Mode uint32

const (
	ModeEnforce = Mode(xdpguardModeMODE_ENFORCE)
	ModeMonitor = Mode(xdpguardModeMODE_MONITOR)
)

func (m Mode) String() string {
	if m == ModeMonitor {
		return "monitor"
	}
	return "enforce"
}

// ParseMode parses "enforce" or "monitor".
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "enforce":
		return ModeEnforce, nil
	case "monitor":
		return ModeMonitor, nil
	}
	return 0, fmt.Errorf("invalid mode %q: use enforce or monitor", s)
}

// FragPolicy says what happens to a later UDP fragment whose first fragment
// was never seen.
type FragPolicy uint32

const (
	// FragTrack passes it: first fragments can be reordered behind later
	// ones on real paths, and the stack still needs all of them.
	FragTrack = FragPolicy(xdpguardFragPolicyFRAG_TRACK)
	// FragStrict drops it.
	FragStrict = FragPolicy(xdpguardFragPolicyFRAG_STRICT)
)

func (f FragPolicy) String() string {
	if f == FragStrict {
		return "strict"
	}
	return "track"
}

// ParseFragPolicy parses "track" or "strict".
func ParseFragPolicy(s string) (FragPolicy, error) {
	switch strings.ToLower(s) {
	case "track":
		return FragTrack, nil
	case "strict":
		return FragStrict, nil
	}
	return 0, fmt.Errorf("invalid fragment policy %q: use track or strict", s)
}
