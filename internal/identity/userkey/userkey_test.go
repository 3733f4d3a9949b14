package userkey

import "testing"

// The rule the limiter applies to user keys (limiter/policy.go KeyFor).
func TestNormalise(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                      "",
		"bob@example.com":       "bob@example.com",
		"Bob@Example.com":       "bob@example.com",
		" BOB@EXAMPLE.COM\t":    "bob@example.com",
		"Ünal@Example.com":      "Ünal@example.com",      // ASCII letters only
		"\u212Aate@example.com": "\u212Aate@example.com", // the Kelvin sign is not k: another account (review)
		"Carol":                 "Carol",                 // a sub: case-sensitive (RFC 7519)
		"carol":                 "carol",
		"auth0|AbC":             "auth0|AbC",
		" Spaced Sub ":          " Spaced Sub ", // no @: kept exactly
		"user@Tenant|Mixed@X":   "user@tenant|mixed@x",
	} {
		if got := Normalise(in); got != want {
			t.Errorf("Normalise(%q) = %q, want %q", in, got, want)
		}
		if got := Normalise(Normalise(in)); got != Normalise(in) {
			t.Errorf("Normalise is not idempotent on %q", in)
		}
	}
}
