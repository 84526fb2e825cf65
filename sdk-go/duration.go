package stackshift

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

var durationPart = regexp.MustCompile(`^(\d+)([a-zA-Z]+)`)

var unitMillis = map[string]int64{"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

// ParseDuration parses the durations every StackShift SDK accepts: "30d", "24h", "1h30m",
// "500ms" (one or more <integer><unit> parts without spaces; units ms, s, m, h, d = 24 h and
// w = 7 d). The error is an *Error with code InvalidArgument.
func ParseDuration(text string) (time.Duration, error) {
	fail := func(reason string) (time.Duration, error) {
		return 0, invalidArgument("invalid duration %q: %s (expected e.g. '30d', '24h', '1h30m', '500ms'; units ms, s, m, h, d, w)", text, reason)
	}
	s := strings.TrimSpace(text)
	if s == "" {
		return fail("it is empty")
	}
	var total int64
	for s != "" {
		m := durationPart.FindStringSubmatch(s)
		if m == nil {
			if _, err := strconv.Atoi(s); err == nil {
				return fail("a number is missing its unit")
			}
			return fail("expected a number")
		}
		per, ok := unitMillis[m[2]]
		if !ok {
			return fail("unknown unit")
		}
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > (1<<62)/per {
			return fail("duration is too large")
		}
		total += n * per
		if total > int64(time.Duration(1<<62)/time.Millisecond) {
			return fail("duration is too large")
		}
		s = s[len(m[0]):]
	}
	return time.Duration(total) * time.Millisecond, nil
}

// MustParseDuration is ParseDuration for constants; it panics on a malformed string.
func MustParseDuration(text string) time.Duration {
	d, err := ParseDuration(text)
	if err != nil {
		panic(err)
	}
	return d
}
