package requestid_test

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/requestid"
)

var newIDPattern = regexp.MustCompile(`^req_\d{13}_[0-9a-z]{9}$`)

// now is 2026-01-30T19:45:30.123Z, whose Unix milliseconds are 1769802330123.
var now = time.Date(2026, 1, 30, 19, 45, 30, 123456789, time.UTC)

const (
	traceID  = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentID = "00f067aa0ba902b7"
	validTP  = "00-" + traceID + "-" + parentID + "-01"
)

func TestValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{"empty", "", false},
		{"one char", "a", true},
		{"128 chars", strings.Repeat("a", 128), true},
		{"129 chars", strings.Repeat("a", 129), false},
		{"seed format", "req_1706645130123_abc123", true},
		{"uuid", "f47ac10b-58cc-4372-a567-0e02b2c3d479", true},
		// An id the logs would filter hid its request's lines from grep (QA).
		{"AWS key id", "AKIAIOSFODNN7EXAMPLE", false},
		{"Stripe key", "sk_live_abcdefghijklmnop1234", false},
		{"JWT", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", false},
		{"words a secret's name", "session-token-key_42", true},
		{"trace id", traceID, true},
		{"lower", "abcdefghijklmnopqrstuvwxyz", true},
		{"upper", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", true},
		{"digits", "0123456789", true},
		{"dot", ".", true},
		{"underscore", "_", true},
		{"dash", "-", true},
		{"mixed allowed", "Az09._-", true},
		{"space", "a b", false},
		{"leading space", " abc", false},
		{"tab", "a\tb", false},
		{"newline (log injection)", "abc\nlevel=error msg=forged", false},
		{"CR", "abc\r", false},
		{"NUL", "a\x00b", false},
		{"DEL", "a\x7fb", false},
		{"slash", "a/b", false},
		{"backslash", `a\b`, false},
		{"colon", "a:b", false},
		{"plus", "a+b", false},
		{"equals", "a=b", false},
		{"quote", `a"b`, false},
		{"apostrophe", "a'b", false},
		{"angle", "<script>", false},
		{"at", "a@b", false},
		{"percent", "a%20b", false},
		{"comma", "a,b", false},
		{"semicolon", "a;b", false},
		{"braces", "{a}", false},
		{"tilde", "a~b", false},
		{"non-ASCII letter", "réq", false},
		{"emoji", "req_😀", false},
		{"invalid UTF-8", "a\xffb", false},
		{"128 allowed then one bad", strings.Repeat("a", 127) + "!", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := requestid.Valid(tt.id); got != tt.want {
				t.Errorf("Valid(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

// Every byte value: only A-Za-z0-9._- are allowed.
func TestValidEveryByte(t *testing.T) {
	t.Parallel()
	for c := 0; c < 256; c++ {
		want := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		id := "x" + string([]byte{byte(c)}) + "y"
		if got := requestid.Valid(id); got != want {
			t.Errorf("Valid(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestTraceID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		tp     string
		want   string
		wantOK bool
	}{
		{"valid, sampled", validTP, traceID, true},
		{"valid, not sampled", "00-" + traceID + "-" + parentID + "-00", traceID, true},
		{"valid, other flags", "00-" + traceID + "-" + parentID + "-ff", traceID, true},
		{"spec example", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "0af7651916cd43dd8448eb211c80319c", true},
		{"future version, same length", "01-" + traceID + "-" + parentID + "-01", traceID, true},
		{"future version with -suffix", "cc-" + traceID + "-" + parentID + "-01-what-the-future-will-be-like", traceID, true},
		{"future version with bare dash", "fe-" + traceID + "-" + parentID + "-01-", traceID, true},

		{"empty", "", "", false},
		{"version ff", "ff-" + traceID + "-" + parentID + "-01", "", false},
		{"version 00 with -suffix", validTP + "-suffix", "", false},
		{"version 00 with one extra char", validTP + "x", "", false},
		{"future version, extra char without dash", "01-" + traceID + "-" + parentID + "-01x", "", false},
		{"all-zero trace id", "00-" + strings.Repeat("0", 32) + "-" + parentID + "-01", "", false},
		{"all-zero parent id", "00-" + traceID + "-" + strings.Repeat("0", 16) + "-01", "", false},
		{"upper-case trace id", "00-" + strings.ToUpper(traceID) + "-" + parentID + "-01", "", false},
		{"upper-case parent id", "00-" + traceID + "-" + strings.ToUpper(parentID) + "-01", "", false},
		{"upper-case flags", "00-" + traceID + "-" + parentID + "-0A", "", false},
		{"upper-case version", "0A-" + traceID + "-" + parentID + "-01", "", false},
		{"non-hex version", "0g-" + traceID + "-" + parentID + "-01", "", false},
		{"non-hex trace id", "00-" + traceID[:31] + "g-" + parentID + "-01", "", false},
		{"non-hex flags", "00-" + traceID + "-" + parentID + "-0z", "", false},
		{"trace id 31 chars", "00-" + traceID[:31] + "-" + parentID + "-01", "", false},
		{"trace id 33 chars", "00-" + traceID + "a-" + parentID + "-01", "", false},
		{"parent id 15 chars", "00-" + traceID + "-" + parentID[:15] + "-01", "", false},
		{"parent id 17 chars", "00-" + traceID + "-" + parentID + "a-01", "", false},
		{"flags 1 char", "00-" + traceID + "-" + parentID + "-1", "", false},
		{"flags 3 chars", "00-" + traceID + "-" + parentID + "-011", "", false},
		{"version 1 char", "0-" + traceID + "-" + parentID + "-01", "", false},
		{"54 chars", validTP[:54], "", false},
		{"underscores", "00_" + traceID + "_" + parentID + "_01", "", false},
		{"leading space", " " + validTP, "", false},
		{"trailing space", validTP + " ", "", false},
		{"no separators", "00" + traceID + parentID + "01xxx", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := requestid.TraceID(tt.tp)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("TraceID(%q) = %q, %v; want %q, %v", tt.tp, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestFromRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header http.Header
		want   string // "" means a new id
	}{
		{"valid X-Request-ID", header("X-Request-ID", "abc-123"), "abc-123"},
		{"X-Request-ID beats traceparent", header("X-Request-ID", "abc-123", "traceparent", validTP), "abc-123"},
		{"128-char X-Request-ID kept", header("X-Request-ID", strings.Repeat("Z", 128)), strings.Repeat("Z", 128)},
		{"invalid X-Request-ID, traceparent used", header("X-Request-ID", "abc 123", "traceparent", validTP), traceID},
		{"129-char X-Request-ID, traceparent used", header("X-Request-ID", strings.Repeat("a", 129), "traceparent", validTP), traceID},
		{"empty X-Request-ID, traceparent used", header("X-Request-ID", "", "traceparent", validTP), traceID},
		{"only traceparent", header("traceparent", validTP), traceID},
		{"lower-case header names (canonicalised by Set)", header("x-request-id", "from-lower"), "from-lower"},
		{"first of several X-Request-ID values", http.Header{"X-Request-Id": {"first", "second"}}, "first"},
		{"injection attempt, no traceparent", header("X-Request-ID", "x\nlevel=error"), ""},
		{"invalid traceparent", header("traceparent", "ff-"+traceID+"-"+parentID+"-01"), ""},
		{"nothing", http.Header{}, ""},
		{"nil header", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := requestid.FromRequest(tt.header, now)
			if tt.want != "" {
				if got != tt.want {
					t.Errorf("FromRequest = %q, want %q", got, tt.want)
				}
				return
			}
			if !newIDPattern.MatchString(got) || !strings.HasPrefix(got, "req_1769802330123_") {
				t.Errorf("FromRequest = %q, want a new req_1769802330123_<9> id", got)
			}
		})
	}
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestNewFormat(t *testing.T) {
	t.Parallel()
	times := []time.Time{
		now,
		time.UnixMilli(1706645130123), // the seed's example
		time.Date(2286, 11, 20, 17, 46, 39, 999e6, time.UTC), // last 13-digit millisecond
	}
	for _, tm := range times {
		id := requestid.New(tm)
		if !newIDPattern.MatchString(id) {
			t.Errorf("New(%v) = %q, does not match %s", tm, id, newIDPattern)
		}
		if want := "req_" + strconv.FormatInt(tm.UnixMilli(), 10) + "_"; !strings.HasPrefix(id, want) {
			t.Errorf("New(%v) = %q, want prefix %q", tm, id, want)
		}
		if !requestid.Valid(id) {
			t.Errorf("New(%v) = %q is not Valid", tm, id)
		}
	}
	// Any time, even before 1970, gives an id that is kept when it comes back.
	for _, tm := range []time.Time{time.Unix(0, 0), time.UnixMilli(-1), {}, time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)} {
		if id := requestid.New(tm); !requestid.Valid(id) || !strings.HasPrefix(id, "req_") {
			t.Errorf("New(%v) = %q is not Valid", tm, id)
		}
	}
}

// 100k ids in the same millisecond are all different: uniqueness rests on the
// 9 random characters alone (36^9 ≈ 1e14 values).
func TestNewUnique(t *testing.T) {
	t.Parallel()
	const n = 100_000
	seen := make(map[string]struct{}, n)
	counts := [36]int{}
	for range n {
		id := requestid.New(now)
		if _, dup := seen[id]; dup {
			t.Fatalf("duplicate id %q after %d ids", id, len(seen))
		}
		seen[id] = struct{}{}
		for _, c := range id[len(id)-9:] {
			counts[strings.IndexRune("0123456789abcdefghijklmnopqrstuvwxyz", c)]++
		}
	}
	// Every base-36 digit shows up: the random part is not stuck on a subset.
	for i, c := range counts {
		if c == 0 {
			t.Errorf("digit %d never appears in %d ids", i, n)
		}
	}
}

// Ids made concurrently (one per request goroutine) do not collide either.
func TestNewConcurrent(t *testing.T) {
	t.Parallel()
	const workers, per = 8, 5000
	out := make(chan []string, workers)
	for range workers {
		go func() {
			ids := make([]string, per)
			for i := range ids {
				ids[i] = requestid.New(now)
			}
			out <- ids
		}()
	}
	seen := map[string]bool{}
	for range workers {
		for _, id := range <-out {
			if seen[id] {
				t.Fatalf("duplicate id %q", id)
			}
			seen[id] = true
		}
	}
}

func TestHeaderConstants(t *testing.T) {
	t.Parallel()
	// DESIGN.md's X-Request-ID, in Go's canonical spelling (header names are case-insensitive).
	if http.CanonicalHeaderKey("X-Request-ID") != requestid.Header || requestid.MaxLen != 128 {
		t.Errorf("Header = %q, MaxLen = %d", requestid.Header, requestid.MaxLen)
	}
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = requestid.New(now)
	}
}

func BenchmarkFromRequest(b *testing.B) {
	cases := map[string]http.Header{
		"x-request-id": header("X-Request-ID", "req_1706645130123_abc123"),
		"traceparent":  header("traceparent", validTP),
		"new":          {},
	}
	for name, h := range cases {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = requestid.FromRequest(h, now)
			}
		})
	}
}
