package quantile

import (
	"slices"
	"testing"
)

func TestOf(t *testing.T) {
	xs := []float64{9, 1, 5, 3, 7}
	for _, c := range []struct{ q, want float64 }{{0, 1}, {0.25, 3}, {0.5, 5}, {0.75, 7}, {1, 9}, {0.125, 2}} {
		if got := Of(xs, c.q); got != c.want {
			t.Errorf("Of(%v, %v) = %v, want %v", xs, c.q, got, c.want)
		}
	}
	if !slices.Equal(xs, []float64{9, 1, 5, 3, 7}) {
		t.Errorf("Of reordered its input: %v", xs)
	}
	if got := Of(nil, 0.5); got != 0 {
		t.Errorf("Of(nil) = %v, want 0", got)
	}
}
