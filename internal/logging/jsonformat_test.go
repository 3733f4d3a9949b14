package logging

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
)

func TestJSONLinesFormat(t *testing.T) {
	t.Parallel()
	e := &logrus.Entry{
		Time:    time.Date(2026, 11, 27, 10, 29, 25, 40e6, time.FixedZone("CET", 3600)),
		Level:   logrus.WarnLevel,
		Message: "a \"quoted\"\nline",
		Data: logrus.Fields{
			"z": 1, "a": "x&y<z>", "i64": int64(-5), "u": uint64(7), "f": 1.5, "nan": math.NaN(), "b": true,
			"nil": nil, "err": errors.New("boom"), "d": 1500 * time.Millisecond, "m": map[string]int{"k": 1},
			"msg": "shadowed", "bad": "\xff\u2028",
		},
	}
	out, err := jsonLines{}.Format(e)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(out), "}\n") || strings.Count(string(out), "\n") != 1 {
		t.Fatalf("not one line: %q", out)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("not JSON: %s: %v", out, err)
	}
	// A whole float stays a float, an int an int: a log index maps a field
	// by the first value it sees (log QA: duration 3 ms was written 3).
	whole, err := jsonLines{}.Format(&logrus.Entry{Time: e.Time, Data: logrus.Fields{"duration": 3.0, "n": 3, "neg": -2.0}})
	if err != nil || !strings.Contains(string(whole), `"duration":3.0,`) || !strings.Contains(string(whole), `"n":3,`) || !strings.Contains(string(whole), `"neg":-2.0,`) {
		t.Errorf("whole numbers: %s %v", whole, err)
	}
	want := map[string]any{
		"z": 1.0, "a": "x&y<z>", "i64": -5.0, "u": 7.0, "f": 1.5, "nan": "NaN", "b": true, "nil": nil,
		"err": "boom", "d": "1.5s", "m": map[string]any{"k": 1.0}, "bad": "\ufffd\u2028",
		"level": "warning", "msg": "a \"quoted\"\nline", "time": "2026-11-27T09:29:25.040Z",
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || !equalJSON(g, v) {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	// keys in alphabetical order, like logrus.JSONFormatter
	if i, j := strings.Index(string(out), `"a":`), strings.Index(string(out), `"z":`); i > j {
		t.Errorf("keys not sorted: %s", out)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// FuzzAppendString: any string comes back from encoding/json as itself
// (invalid UTF-8 as U+FFFD, as encoding/json does).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "\x00\x1f\n\t", "é ✓ \u2028\u2029", "\xff\xfe", "a&b<c>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendString(nil, s)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%q encoded as %q: %v", s, out, err)
		}
		if want := decodeLikeJSON(s); got != want {
			t.Fatalf("%q came back as %q, want %q", s, got, want)
		}
	})
}

// decodeLikeJSON is s with each invalid byte replaced by U+FFFD, as
// encoding/json decodes it; a valid s is itself.
func decodeLikeJSON(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		i += size
	}
	return b.String()
}
