package nstest

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// TimeScaleEnv names the variable that stretches every deadline the kit
// waits with, and every real-time bound a test asserts through Scaled: a
// positive number, 1 when unset. `make vmtest` sets it for guests emulated
// by qemu's TCG, where code runs 13-30 times slower than on the host, so the
// same tests (the agent's "protected within 1 s of link up" among them) hold
// a guest to the same bounds in its own time. On a real host it is unset and
// the bounds are the real ones.
const TimeScaleEnv = "XDPGUARD_TEST_TIME_SCALE"

var timeScale = sync.OnceValues(func() (float64, error) {
	return parseTimeScale(os.Getenv(TimeScaleEnv))
})

// parseTimeScale reads TimeScaleEnv's value: empty is 1.
func parseTimeScale(v string) (float64, error) {
	if v == "" {
		return 1, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 1 || f > 1000 {
		return 1, fmt.Errorf("%s=%q: want a number from 1 to 1000 (how many times slower than real time this machine runs), or leave it unset", TimeScaleEnv, v)
	}
	return f, nil
}

// Scaled returns d stretched by the time scale (TimeScaleEnv). A malformed
// scale panics with a message naming the variable: a test run must not
// silently use bounds it was not asked for.
func Scaled(d time.Duration) time.Duration {
	f, err := timeScale()
	if err != nil {
		panic(err)
	}
	return time.Duration(float64(d) * f)
}

// Emulated reports whether the tests run stretched (TimeScaleEnv above 1):
// in a guest emulated by qemu's TCG, where a test may choose a smaller
// instance of the same case (fewer interfaces in a burst) to fit its run
// time, never a weaker assertion.
func Emulated() bool {
	return Scaled(time.Second) > time.Second
}
