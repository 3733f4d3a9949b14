// Package redact removes secrets from anything chatguard might log or echo:
// structured values, query strings, headers and free text.
package redact

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// Filtered replaces every secret value.
const Filtered = "[FILTERED]"

// substrings that mark a key as sensitive wherever they appear in it
// (normalised: lower case, without '-', '_' and '.').
var sensitiveParts = []string{
	"password", "passwd", "secret", "token", "authorization", "credential",
	"apikey", "jwt", "cookie", "bearer", "pwd", "session", "privatekey",
}

// keys that are sensitive only when they are the whole (normalised) key:
// as substrings they would hit "monkey", "author" or "passenger".
var sensitiveWhole = map[string]bool{"key": true, "auth": true, "pass": true, "xapikey": true}

// IsSensitiveKey reports whether a field, header or parameter named k holds a secret.
// The list is the seed's: password, token, authorization, secret, key, auth,
// credential, pass, pwd, jwt, session, cookie, x-api-key, api-key, bearer.
func IsSensitiveKey(k string) bool {
	n := normalise(k)
	if sensitiveWhole[n] {
		return true
	}
	for _, p := range sensitiveParts {
		if strings.Contains(n, p) {
			return true
		}
	}
	return false
}

func normalise(k string) string {
	var b strings.Builder
	b.Grow(len(k))
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '-' || c == '_' || c == '.' || c == ' ':
			continue
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Value returns v with the values of sensitive keys replaced, recursing into
// maps and slices as produced by encoding/json. Strings are passed through String.
// v itself is not modified.
func Value(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		namesSecret := namesSensitiveField(t)
		for k, val := range t {
			if IsSensitiveKey(k) || namesSecret && (k == "value" || k == "val") {
				out[k] = Filtered
				continue
			}
			out[k] = Value(val)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, val := range t {
			out[i] = Value(val)
		}
		return out
	case string:
		return String(t)
	case http.Header:
		return Header(t)
	case url.Values:
		out := make(map[string]any, len(t))
		for k, vals := range t {
			if IsSensitiveKey(k) {
				out[k] = Filtered
				continue
			}
			out[k] = strings.Join(vals, ",")
		}
		return out
	default:
		return v
	}
}

// namesSensitiveField reports whether an object describes a sensitive field,
// as validation errors do: {"path": "password", "value": "…"}.
func namesSensitiveField(m map[string]any) bool {
	for _, k := range []string{"path", "param", "field", "key", "name", "label"} {
		switch v := m[k].(type) {
		case string:
			if IsSensitiveKey(v) {
				return true
			}
		case []any:
			if len(v) > 0 {
				if last, ok := v[len(v)-1].(string); ok && IsSensitiveKey(last) {
					return true
				}
			}
		}
	}
	return false
}

// Header flattens h with sensitive headers' values replaced.
func Header(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vals := range h {
		if IsSensitiveKey(k) {
			out[k] = Filtered
			continue
		}
		out[k] = String(strings.Join(vals, ", "))
	}
	return out
}

// Query returns rawQuery with the values of sensitive parameters replaced,
// keeping the order and encoding of everything else.
func Query(rawQuery string) string {
	if rawQuery == "" {
		return ""
	}
	parts := strings.Split(rawQuery, "&")
	changed := false
	for i, p := range parts {
		name, _, hasValue := strings.Cut(p, "=")
		if !hasValue {
			continue
		}
		if un, err := url.QueryUnescape(name); err == nil {
			name = un
		}
		if IsSensitiveKey(name) {
			parts[i] = p[:strings.IndexByte(p, '=')+1] + Filtered
			changed = true
		}
	}
	if !changed {
		return rawQuery
	}
	return strings.Join(parts, "&")
}

// URI redacts the query part of a request URI.
func URI(uri string) string {
	path, q, ok := strings.Cut(uri, "?")
	if !ok {
		return uri
	}
	return path + "?" + Query(q)
}

var textPatterns = []*regexp.Regexp{
	// Authorization schemes followed by a credential.
	regexp.MustCompile(`(?i)\b(bearer|basic|token)\s+[A-Za-z0-9\-._~+/]+=*`),
	// Anything that looks like a JWT.
	regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`),
	// key=value and "key": "value" pairs whose key is sensitive.
	regexp.MustCompile(`(?i)("?[A-Za-z_\-]*(?:password|passwd|pwd|secret|token|api[_-]?key|jwt|cookie|session|credential|authorization)[A-Za-z_\-]*"?\s*[:=]\s*)("[^"]*"|[^\s&,;"}]+)`),
	// user:password@ in URLs (redis://user:pass@host).
	regexp.MustCompile(`(://[^/\s:@]*:)[^@\s/]+@`),
}

// String redacts secrets embedded in free text: authorization credentials,
// JWTs, key=value pairs with a sensitive key and passwords in URLs.
func String(s string) string {
	if !mayHoldSecret(s) {
		return s
	}
	s = textPatterns[0].ReplaceAllString(s, "$1 "+Filtered)
	s = textPatterns[1].ReplaceAllString(s, Filtered)
	s = textPatterns[2].ReplaceAllStringFunc(s, func(m string) string {
		sub := textPatterns[2].FindStringSubmatch(m)
		if strings.HasSuffix(sub[1], Filtered) || sub[2] == Filtered || sub[2] == `"`+Filtered+`"` {
			return m
		}
		return sub[1] + Filtered
	})
	s = textPatterns[3].ReplaceAllString(s, "${1}"+Filtered+"@")
	return s
}

// mayHoldSecret is a cheap pre-check so that the common case (no secret)
// costs no regular-expression work.
func mayHoldSecret(s string) bool {
	if strings.Contains(s, "eyJ") || strings.Contains(s, "://") {
		return true
	}
	l := strings.ToLower(s)
	for _, w := range []string{"bearer", "basic", "token", "pass", "pwd", "secret", "key", "jwt", "cookie", "session", "credential", "authorization"} {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}
