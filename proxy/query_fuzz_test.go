package proxy

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzSuspectQueryParam: whatever the query, a checked parameter that
// passes is read alike by Go (first value) and by an app that takes the
// last value of a name and reads pairs Go skips (engine.io, Express):
// each checked name appears at most once among all pairs.
func FuzzSuspectQueryParam(f *testing.F) {
	for _, s := range []string{"", "EIO=4&transport=polling&sid=a", "sid=a&sid=b", "token=a;&x=1", "%73id=a&sid=b", "token", "a=%zz&token=b&token"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, sio bool) {
		name, problem := suspectQueryParam(raw, func() bool { return sio })
		if problem != "" {
			if checkedQueryParam(name) == 0 {
				t.Fatalf("%q: refused for %q, not a checked name", raw, name)
			}
			return
		}
		counts := map[string]int{}
		for _, pair := range strings.Split(raw, "&") {
			n, _, _ := strings.Cut(pair, "=")
			if un, err := url.QueryUnescape(n); err == nil {
				n = un
			}
			if i := checkedQueryParam(n); i == 1 || i > 1 && sio {
				counts[n]++
				if _, err := url.ParseQuery(pair); err != nil {
					t.Fatalf("%q: %q does not parse, yet passed", raw, pair)
				}
			}
		}
		for n, c := range counts {
			if c > 1 {
				t.Fatalf("%q: %q %d times, yet passed", raw, n, c)
			}
		}
	})
}
