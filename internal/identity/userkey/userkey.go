// Package userkey holds the one rule for the key chatguard counts a user
// under. It has no dependencies beyond the standard library, so that every
// package that keys by user (identity, sessions, the limiter) can share it.
package userkey

import "strings"

// Normalise is the key chatguard counts a user under, wherever it does:
// rate limits, the Socket.IO presence registry (connectedUsers), the
// per-user socket cap, per-user event limits and the admin sessions
// endpoint. An e-mail address (any key with an @) is trimmed and
// lower-cased, so that Ana@X.com and ana@x.com are one user; any other key
// (a sub claim) is kept exactly, case-sensitive (RFC 7519): Carol and carol
// are two. Only ASCII letters are lower-cased: Unicode case folding maps
// other letters onto them (the Kelvin sign K onto k), and would make one
// user of two accounts the app keeps apart (review).
// Normalise(Normalise(u)) == Normalise(u).
func Normalise(user string) string {
	if strings.Contains(user, "@") {
		return ASCIILower(strings.TrimSpace(user))
	}
	return user
}

// ASCIILower lower-cases the ASCII letters of s, and only those
// (strings.ToLower folds other letters onto them, and turns each invalid
// UTF-8 byte into a 3-byte replacement character).
func ASCIILower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
