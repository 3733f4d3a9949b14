// Package requestid picks the id that follows a request through chatguard,
// the upstream, every envelope and every log line.
package requestid

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/chatguard/chatguard/internal/redact"
)

// Header is the request and response header that carries the id.
const Header = "X-Request-Id" // canonical form of X-Request-ID: Get and Set need not allocate

// MaxLen is the longest incoming id that is kept.
const MaxLen = 128

// FromRequest returns the id for a request: a valid incoming X-Request-ID
// (1–128 of A-Za-z0-9._-, and nothing the logs would filter as a secret)
// is kept; else the trace id of a valid W3C
// traceparent; else a new req_<unix-ms>_<random>.
func FromRequest(h http.Header, now time.Time) string {
	if id := h.Get(Header); Valid(id) {
		return id
	}
	if tid, ok := TraceID(h.Get("Traceparent")); ok {
		return tid
	}
	return New(now)
}

// Valid reports whether id may be kept as a request id.
func Valid(id string) bool {
	if len(id) == 0 || len(id) > MaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	// One the logs would filter (AKIAIOSFODNN7EXAMPLE, sk_live_…, a JWT)
	// became [FILTERED] on every line of its request, so that no grep
	// found them; a client could hide its own lines that way (QA).
	return redact.String(id) == id
}

// TraceID returns the trace id of a W3C traceparent header
// (version-traceid-parentid-flags), rejecting the invalid forms the
// specification names: version ff, all-zero ids, upper-case hex, wrong lengths.
func TraceID(tp string) (string, bool) {
	// 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55; future versions may append "-…".
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return "", false
	}
	version, trace, parent, flags := tp[0:2], tp[3:35], tp[36:52], tp[53:55]
	if !lowerHex(version) || version == "ff" || !lowerHex(trace) || !lowerHex(parent) || !lowerHex(flags) {
		return "", false
	}
	if version == "00" && len(tp) != 55 {
		return "", false
	}
	if len(tp) > 55 && tp[55] != '-' {
		return "", false
	}
	if allZero(trace) || allZero(parent) {
		return "", false
	}
	return trace, true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"

// New returns a fresh id, req_<unix-ms>_<9 random base-36 characters>, the
// seed's format. The random part comes from a per-goroutine ChaCha8 stream
// seeded by the runtime: unpredictable enough for correlation, cheap enough
// for every request.
func New(now time.Time) string {
	var b [4 + 20 + 1 + 9]byte
	out := append(b[:0], "req_"...)
	out = strconv.AppendInt(out, now.UnixMilli(), 10)
	out = append(out, '_')
	r := rand.Uint64()
	for i := 0; i < 9; i++ {
		out = append(out, alphabet[r%36])
		r /= 36
	}
	return string(out)
}
