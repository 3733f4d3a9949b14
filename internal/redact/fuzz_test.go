package redact_test

import (
	"strings"
	"testing"

	"github.com/chatguard/chatguard/internal/redact"
)

func FuzzString(f *testing.F) {
	for _, s := range []string{
		"", "Conversation not found", "Authorization: Bearer ", "password=", `{"token": "`, "redis://user:",
		"eyJ", "eyJabcd.", "eyJabcd.efgh.", "token ", "Basic ", "api_key=abc&", "session=", "x" + jwt,
		"TypeError: Cannot read properties of undefined (reading 'x')\n    at /app/src/a.js:1:2",
	} {
		f.Add(s, uint(len(s)))
		f.Add(s, uint(0))
	}
	f.Fuzz(func(t *testing.T, s string, pos uint) {
		_ = redact.String(s) // never panics

		i := int(pos % uint(len(s)+1))
		in := s[:i] + jwt + s[i:]
		out := redact.String(in)
		if strings.Contains(out, jwt) {
			t.Fatalf("String(%q) = %q keeps the JWT", in, out)
		}
		if !strings.Contains(out, redact.Filtered) {
			t.Fatalf("String(%q) = %q filtered nothing", in, out)
		}
	})
}
