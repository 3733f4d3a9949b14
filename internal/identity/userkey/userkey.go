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
// are two. Normalise(Normalise(u)) == Normalise(u).
func Normalise(user string) string {
	if strings.Contains(user, "@") {
		return strings.ToLower(strings.TrimSpace(user))
	}
	return user
}
