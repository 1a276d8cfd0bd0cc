// Package quantile summarises benchmark samples: every median, quartile
// and tail percentile the benchmarks report comes from Of.
package quantile

import "slices"

// Of returns the q-quantile of xs by linear interpolation between
// order statistics; xs is not modified.
func Of(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo := int(pos)
	if lo+1 >= len(s) {
		return s[len(s)-1]
	}
	frac := pos - float64(lo)
	return s[lo]*(1-frac) + s[lo+1]*frac
}
