// Package redact removes secrets from anything chatguard might log or echo:
// structured values, query strings, headers and free text.
package redact

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Filtered replaces every secret value.
const Filtered = "[FILTERED]"

// substrings that mark a key as sensitive wherever they appear in it
// (normalised: lower case, without separators).
var sensitiveParts = []string{
	"password", "passwd", "secret", "token", "authorization", "credential",
	"apikey", "jwt", "cookie", "bearer", "pwd", "session", "privatekey",
	// Beyond the seed's list: what a card or an account is unlocked with
	// (QA: a yup error echoed passphrase, cvv and cardNumber in clear).
	"passphrase", "cardnumber", "creditcard", "cvv", "cvc",
}

// words that are sensitive only as a whole word of the key (split at
// separators and camelCase humps): as substrings they would hit "monkey",
// "author" or "passenger", but "db_pass", "accessKey" and "basic-auth" count.
var sensitiveWords = []string{"key", "auth", "pass", "pw", "ssn"}

// IsSensitiveKey reports whether a field, header or parameter named k holds a secret.
// The list is the seed's: password, token, authorization, secret, key, auth,
// credential, pass, pwd, jwt, session, cookie, x-api-key, api-key, bearer;
// and pw, as a word (QA: ?pw= was logged in clear).
// It does not allocate for keys up to 64 bytes.
func IsSensitiveKey(k string) bool {
	var buf [64]byte
	n := buf[:0]
	if len(k) > len(buf) {
		n = make([]byte, 0, len(k))
	}
	// One pass: the normalised key, and each word checked as it ends.
	wordStart := 0
	for i := 0; i < len(k); i++ {
		c := k[i]
		upper := c >= 'A' && c <= 'Z'
		alnum := upper || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		boundary := !alnum || upper && i > 0 && k[i-1] >= 'a' && k[i-1] <= 'z'
		if boundary && isSensitiveWord(n[wordStart:]) {
			return true
		}
		if boundary {
			wordStart = len(n)
		}
		if !alnum {
			continue
		}
		if upper {
			c += 'a' - 'A'
		}
		n = append(n, c)
	}
	if isSensitiveWord(n[wordStart:]) || isSensitiveWord(n) {
		return true
	}
	for _, p := range sensitiveParts {
		if bytesContains(n, p) {
			return true
		}
	}
	return false
}

func isSensitiveWord(w []byte) bool {
	for _, s := range sensitiveWords {
		if string(w) == s {
			return true
		}
	}
	return false
}

func bytesContains(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return true
		}
	}
	return false
}

// IsSensitivePath reports whether a field path names a secret in any of its
// segments: "settings.key", "refreshTokens[0]", "db.pass".
func IsSensitivePath(p string) bool {
	for _, seg := range strings.FieldsFunc(p, func(r rune) bool { return r == '.' || r == '[' || r == ']' || r == '/' }) {
		if IsSensitiveKey(seg) {
			return true
		}
	}
	return false
}

// Value returns v with the values of sensitive keys replaced, recursing into
// maps and slices as produced by encoding/json. Strings are passed through
// String. Any other map, slice, array or struct (logrus.Fields,
// map[string]string, []string, a struct with a Password field) is redacted
// by way of its JSON form. Scalars come back as they are; v itself is not
// modified.
func Value(v any) any { return value(v, false) }

// value is Value; context tells that v is the "context" member of a field
// descriptor (Joi's {"key": "email"}), itself a descriptor.
func value(v any, context bool) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		secret := sensitiveFieldValue(t)
		descriptor := context || isFieldDescriptor(t)
		for k, val := range t {
			if descriptor && fieldNameKeys[k] {
				out[k] = value(val, false) // {"key": "email"} names a field; it is no API key
				continue
			}
			if IsSensitiveKey(k) || secret != nil && (k == "value" || k == "val") {
				out[k] = Filtered
				continue
			}
			if s, ok := val.(string); ok && secret != nil && *secret != "" {
				// Messages quote the value: "Path `password` (`hunter2`) is shorter…".
				val = strings.ReplaceAll(s, *secret, Filtered)
			}
			out[k] = value(val, descriptor && k == "context")
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, val := range t {
			out[i] = value(val, false)
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
		if composite(v) {
			return Value(jsonForm(v))
		}
		return v
	}
}

// composite reports whether v may hold keyed or nested data.
func composite(v any) bool {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Interface {
		if rv.IsNil() {
			return false
		}
		rv = rv.Elem()
	}
	switch rv.Kind() {
	case reflect.Map, reflect.Slice, reflect.Array, reflect.Struct:
		return true
	}
	return false
}

// jsonForm is v as encoding/json sees it: maps, slices and scalars, or a
// string when v cannot be encoded.
func jsonForm(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		return string(b)
	}
	return doc
}

// fieldNameKeys hold the name of a field in a validation error's descriptor.
var fieldNameKeys = map[string]bool{"key": true, "label": true, "path": true, "param": true, "field": true, "name": true}

// isFieldDescriptor recognises the objects validation libraries use to
// describe a field (Joi's details and context, express-validator's errors):
// in them "key" and "label" are field names, not secrets.
func isFieldDescriptor(m map[string]any) bool {
	for _, k := range []string{"label", "path", "param", "location"} {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

// sensitiveFieldValue recognises an object that describes a sensitive field,
// as validation errors do ({"path": "password", "value": "…"}), and returns
// a pointer to its value as text ("" when it is not a string), or nil.
func sensitiveFieldValue(m map[string]any) *string {
	named := false
	for _, k := range []string{"path", "param", "field", "key", "name", "label"} {
		switch v := m[k].(type) {
		case string:
			named = named || IsSensitivePath(v)
		case []any:
			for _, seg := range v {
				if s, ok := seg.(string); ok && IsSensitiveKey(s) {
					named = true
				}
			}
		}
	}
	if !named {
		return nil
	}
	s := ""
	for _, k := range []string{"value", "val"} {
		if v, ok := scalarText(m[k]); ok {
			s = v
		}
	}
	return &s
}

// SecretValues collects the string values that v holds under sensitive keys
// or as the value of a sensitive field, so that text elsewhere that quotes
// them (a summary message) can be cleaned with ReplaceAll. Values shorter
// than 4 bytes are left out: replacing them would mangle ordinary text.
func SecretValues(v any) []string {
	var out []string
	keys := map[string]bool{} // the body's own names, lower case
	var walk func(v any, context bool)
	walk = func(v any, context bool) {
		switch t := v.(type) {
		case map[string]any:
			for k := range t {
				keys[strings.ToLower(k)] = true
			}
			if p := sensitiveFieldValue(t); p != nil && len(*p) >= 4 {
				out = append(out, *p)
			}
			descriptor := context || isFieldDescriptor(t)
			for k, val := range t {
				if s, ok := scalarText(val); ok && len(s) >= 4 && IsSensitiveKey(k) && !(descriptor && fieldNameKeys[k]) {
					out = append(out, s) // a card number sent as a JSON number too (review)
				}
				walk(val, descriptor && k == "context")
			}
		case []any:
			for _, val := range t {
				walk(val, false)
			}
		}
	}
	walk(v, false)
	// A value that is also one of the body's names ({"authType": "email"}
	// beside an "email" field) is no secret, and replacing it would garble
	// every message that names the field (review: "[FILTERED] must be a
	// valid [FILTERED]").
	return slices.DeleteFunc(out, func(s string) bool { return keys[strings.ToLower(s)] })
}

// scalarText is a string or a JSON number as text.
func scalarText(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case json.Number:
		return string(t), true
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), true
	}
	return "", false
}

// ScalarText is scalarText for the errors package: a string or a JSON
// number as text, or "".
func ScalarText(v any) string { s, _ := scalarText(v); return s }

// ReplaceAll replaces every occurrence of each secret in s, the longest
// first: a shorter secret inside a longer one would otherwise leave part
// of the longer in clear, depending on their order (review: a 4-digit
// value inside a password left "hunter[FILTERED]").
func ReplaceAll(s string, secrets []string) string {
	if len(secrets) > 1 {
		secrets = slices.Clone(secrets)
		slices.SortStableFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	}
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, Filtered)
		}
	}
	return s
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
// queryCredentials are query parameters that carry a credential in a URL
// though their names say nothing of it: an OAuth authorization code, a
// one-time password, a signed URL's signature, a CAS ticket, Engine.IO's
// session id (whoever has it reads and writes that polling session). Only
// in a query: "code" elsewhere is an error code.
var queryCredentials = map[string]bool{
	"code": true, "otp": true, "sig": true, "signature": true, "x-amz-signature": true,
	"x-goog-signature": true, "ticket": true,
}

var (
	fingerprintOnce sync.Once
	fingerprintKey  [32]byte
)

// Fingerprint stands for a secret in a log line: "[FILTERED:1a2b3c4d]",
// the same for the same secret within this process, under a random key
// drawn at first use, so that it cannot be reversed or matched across
// processes.
func Fingerprint(secret string) string {
	fingerprintOnce.Do(func() { _, _ = rand.Read(fingerprintKey[:]) })
	m := hmac.New(sha256.New, fingerprintKey[:])
	m.Write([]byte(secret))
	return "[FILTERED:" + hex.EncodeToString(m.Sum(nil)[:4]) + "]"
}

func Query(rawQuery string) string {
	if rawQuery == "" {
		return ""
	}
	parts := strings.Split(rawQuery, "&")
	changed := false
	for i, p := range parts {
		name, value, hasValue := strings.Cut(p, "=")
		if !hasValue {
			continue
		}
		if un, err := url.QueryUnescape(name); err == nil {
			name = un
		}
		if strings.EqualFold(name, "sid") && value != "" && !strings.HasPrefix(value, "[FILTERED") { // a digest already (a line redacted twice)
			// Engine.IO's session id: a credential, but the only way to
			// tell one polling session's lines from another's behind a
			// NAT. A keyed digest tells them apart and gives nothing away.
			parts[i] = p[:strings.IndexByte(p, '=')+1] + Fingerprint(value)
			changed = true
			continue
		}
		if IsSensitiveKey(name) || queryCredentials[strings.ToLower(name)] || encodedSecret(value) {
			parts[i] = p[:strings.IndexByte(p, '=')+1] + Filtered
			changed = true
		}
	}
	if !changed {
		return rawQuery
	}
	return strings.Join(parts, "&")
}

// encodedSecret reports a percent-encoded query value that holds, once
// decoded, what String would filter (?next=https%3A%2F%2Fbob%3Apw%40host):
// the encoded form hides it from String's patterns.
func encodedSecret(value string) bool {
	if strings.IndexByte(value, '%') < 0 {
		return false
	}
	dec, err := url.QueryUnescape(value)
	return err == nil && dec != value && String(dec) != dec
}

// URI redacts the query part of a request URI.
func URI(uri string) string {
	path, q, ok := strings.Cut(uri, "?")
	if !ok {
		return uri
	}
	return path + "?" + Query(q)
}

// errorClassKey is a key that is an error class followed by its message
// ("JsonWebTokenError: "), not a field ("tokenError=", "passwordError: ").
var errorClassKey = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*(?:Error|Exception):\s*$`)

// sessionsErrorWords are the first words of the sessions package's errors
// ("sessions: table …"), which are not a session=value pair.
var sessionsErrorWords = map[string]bool{
	"alert": true, "closed": true, "MaxEntries": true, "register": true, "table": true,
	"the": true, "too": true, "TTL": true, "watchdog": true,
	// a Go error it wraps ("sessions: dial tcp …: i/o timeout", review)
	"dial": true, "read": true, "write": true, "open": true, "mkdir": true, "rename": true,
	"context": true, "EOF": true, "redis": true, "limiter": true,
}

var textPatterns = []*regexp.Regexp{
	// Authorization schemes (possibly several words: "token Bearer") followed by a credential,
	// the space percent-encoded too, as in a path (QA: /api/x/Bearer%20<token> was logged).
	// An escape in the credential, but %20: that is the next word (review).
	// After a word boundary or an escape ("foo%20Bearer%20…", review).
	regexp.MustCompile(`(?i)(?:\b|%[0-9A-Fa-f]{2})((?:bearer|basic|token)(?:\s+|%20|\+))+((?:[A-Za-z0-9\-._~+/]|%(?:[013-9A-Fa-f][0-9A-Fa-f]|2[1-9A-Fa-f]))+=*)`),
	// Anything that looks like a JWT.
	regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}(?:\.|%2[Ee])[A-Za-z0-9_-]{4,}(?:\.|%2[Ee])[A-Za-z0-9_-]*`),
	// key=value and "key": "value" pairs whose key is sensitive.
	regexp.MustCompile(`(?i)("?[A-Za-z_\-]*(?:password|passwd|pwd|secret|token|api[_-]?key|jwt|cookie|session|credential|authorization)[A-Za-z_\-]*"?\s*[:=]\s*)("[^"]*"|[^\s&,;"}]+)`),
	// user:password@ in URLs (redis://user:pass@host).
	regexp.MustCompile(`(://[^/\s:@]*:)[^@\s/]+@`),
	// Well-known API key shapes, wherever they stand ("invalid api key
	// sk_live_…"): Stripe secret and restricted keys, AWS access key ids,
	// Slack tokens, GitHub tokens, Google API keys.
	regexp.MustCompile(`\b(?:[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|sk-(?:proj-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9-]{10,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|AIza[0-9A-Za-z_-]{35})`),
	// A secret's word, then its value in prose, as an app's error message
	// quotes it ("Invalid password \"hunter2\"", "password hunter2x is
	// wrong", "api key 'abc123' invalid"; QA): a quoted value always, a
	// bare one of 4 or more characters with a digit in it, so that
	// "password is too short" and "session expired" stay readable.
	// After a colon too, and "API key" / "session ID" in two words
	// ("Invalid API key: 3f9a…", "Session ID: 7f3a…", QA).
	regexp.MustCompile(`(?i)(\b(?:password|passwd|passphrase|pwd|secret|api[ _-]?key|session(?:[ _-]?id)?|credential)s?(?:\s*:\s*|\s+))('[^'\n]{1,256}'|"[^"\n]{1,256}"|` + "`[^`\\n]{1,256}`" + `|[^\s,;'"]*[0-9][^\s,;'"]*|[^\s,;'"]{16,})`),
	// Mongoose's text quotes a field's value: Path `password` (`hunter2`)
	// is shorter than… (QA: kept when the app sent the text alone).
	// Its value ends at "`) is" (Mongoose's every such message goes on
	// "is shorter…", "is longer…", "is not a valid enum value…"): a
	// backtick inside the value does not end it (review).
	regexp.MustCompile("(?s)Path `([^`\\n]{1,64})` \\(`(.*?)`\\) is\\b"),
}

// quotedHeaderLine is a header line Go's textproto quotes whole in its
// errors ("malformed MIME header line: \"X-Card: 4111…\x00\""): the value
// can be anything, whatever the name (QA), so only the name stays.
var quotedHeaderLine = regexp.MustCompile(`(MIME header(?: initial)?(?: line)?:(?: missing colon:)? )"((?:[^"\\]|\\.)*)"`)

// quotedStatusLine is the first line of an answer net/http could not read
// ("malformed HTTP response \"{\\\"token\\\":…\""): whatever an upstream
// sent. Its leading word stays (bannerPrefix: "SSH-2.0-OpenSSH_9.6" says
// which server answered), the rest is filtered.
var quotedStatusLine = regexp.MustCompile(`(malformed HTTP (?:response|status code|version) )"((?:[^"\\]|\\.)*)"`)

// bannerPrefix is what of such a line is kept: a known protocol's banner
// ("SSH-2.0-OpenSSH_9.6", "HTTP/2", "+OK", "-ERR", "AMQP", "RFB 003.008")
// or a bare number (a status code); anything else could be a secret
// (review: "hunter2secret" fit a looser pattern).
var bannerPrefix = regexp.MustCompile(`^(?:SSH-[0-9.]{1,5}-[A-Za-z0-9._-]{1,40}|HTTP/[0-9.]{1,3}|AMQP|\+OK|-ERR|RFB [0-9.]{3,7}|[0-9]{1,6}$)`)

// tlsRecord is a TLS record's header as %q writes it: an alert (\x15) or a
// handshake (\x16), version 3.x.
var tlsRecord = regexp.MustCompile(`^\\x1[56]\\x03`)

// String redacts secrets embedded in free text: authorization credentials,
// JWTs, key=value pairs with a sensitive key and passwords in URLs.
func String(s string) string {
	if !mayHoldSecret(s) {
		return s
	}
	// Go's quoted lines first: the rules below read an escaped quote in
	// them as the end of a value, and left the rest (review).
	s = quotedHeaderLine.ReplaceAllStringFunc(s, func(m string) string {
		sub := quotedHeaderLine.FindStringSubmatch(m)
		name, _, found := strings.Cut(sub[2], ":")
		if !found || name == "" || strings.ContainsAny(name, " \t\\\"") {
			return sub[1] + `"` + Filtered + `"`
		}
		return sub[1] + `"` + name + ": " + Filtered + `"`
	})
	s = quotedStatusLine.ReplaceAllStringFunc(s, func(m string) string {
		sub := quotedStatusLine.FindStringSubmatch(m)
		if tlsRecord.MatchString(sub[2]) {
			return m // binary: an https upstream configured as http://, the clearest hint there is
		}
		keep := bannerPrefix.FindString(sub[2])
		if keep == sub[2] {
			return m
		}
		return sub[1] + `"` + keep + Filtered + `"`
	})
	// A URL Go quotes in an error (url.Error: Get "http://…?code=…&sid=…":
	// refused) has its query redacted as an access line's is: the rules
	// below know sensitive names, not code or sid (QA).
	s = quotedURLQuery.ReplaceAllStringFunc(s, func(m string) string {
		i := strings.IndexByte(m, '?')
		return m[:i+1] + Query(m[i+1:len(m)-1]) + `"`
	})
	s = textPatterns[0].ReplaceAllStringFunc(s, func(m string) string {
		sub := textPatterns[0].FindStringSubmatch(m)
		if !looksLikeCredential(sub[1], sub[2]) {
			return m // "token expired"
		}
		return m[:len(m)-len(sub[2])] + Filtered
	})
	s = textPatterns[1].ReplaceAllString(s, Filtered)
	s = textPatterns[2].ReplaceAllStringFunc(s, func(m string) string {
		sub := textPatterns[2].FindStringSubmatch(m)
		if strings.HasSuffix(sub[1], Filtered) || sub[2] == Filtered || sub[2] == `"`+Filtered+`"` {
			return m
		}
		if errorClassKey.MatchString(sub[1]) {
			return m // "JsonWebTokenError: jwt malformed" is a class and its message
		}
		if sub[1] == "sessions: " && sessionsErrorWords[sub[2]] {
			return m // chatguard's own sessions package naming itself in an error ("sessions: alert file …")
		}
		if v := strings.TrimSuffix(sub[2], ")"); strings.EqualFold(v, "yes") || strings.EqualFold(v, "no") {
			return m // MySQL's "(using password: YES)" says whether one was sent, not which
		}
		if proseWords[strings.ToLower(sub[2])] {
			return m // a message about the key ("stats_token: is shorter than 16…"), no value
		}
		if key := strings.ToLower(strings.TrimRight(sub[1], "\" \t:=")); keyFileSuffix.MatchString(key) {
			return m // where a secret is kept (auth.jwt_public_key_file: /etc/…), not the secret
		}
		return sub[1] + Filtered
	})
	s = textPatterns[3].ReplaceAllString(s, "${1}"+Filtered+"@")
	s = textPatterns[4].ReplaceAllString(s, Filtered)
	if !hasProseSecretWord(s) {
		return mongooseUnended(textPatterns[6].ReplaceAllStringFunc(s, mongoosePath))
	}
	s = textPatterns[5].ReplaceAllStringFunc(s, func(m string) string {
		sub := textPatterns[5].FindStringSubmatch(m)
		v := sub[2]
		switch {
		case strings.Contains(v, "[FILTERED"): // [FILTERED], or a sid's digest an SRE follows (review)
			return m
		case v[0] == '\'' || v[0] == '"' || v[0] == '`':
			return sub[1] + v[:1] + Filtered + v[:1]
		case len(v) < 4:
			return m // "session 5 of 9"
		case !strings.ContainsAny(v, "0123456789") && !strings.Contains(sub[1], ":"):
			return m // a long word in a sentence; after a colon it is the value ("API key: abcdefghijklmnop", review)
		}
		return sub[1] + Filtered
	})
	return mongooseUnended(textPatterns[6].ReplaceAllStringFunc(s, mongoosePath))
}

// mongoosePath filters the value Mongoose's text quotes for a sensitive
// field: Path `password` (`hunter2`) is shorter than…
func mongoosePath(m string) string {
	sub := textPatterns[6].FindStringSubmatch(m)
	if !IsSensitiveKey(sub[1]) || sub[2] == Filtered {
		return m
	}
	return "Path `" + sub[1] + "` (`" + Filtered + "`) is"
}

// mongooseUnended filters what follows "Path `password` (`" when no "`) is"
// ends the value (a value cut off, or longer than the message: Mongoose's
// maxlength message quotes it whole): everything after it.
func mongooseUnended(s string) string {
	for from := 0; ; {
		i := strings.Index(s[from:], "Path `")
		if i < 0 {
			return s
		}
		i += from
		rest := s[i+len("Path `"):]
		name, after, ok := strings.Cut(rest, "` (`")
		if !ok || len(name) > 64 || strings.ContainsAny(name, "`\n") {
			from = i + 1
			continue
		}
		if IsSensitiveKey(name) && !strings.HasPrefix(after, Filtered+"`) is") {
			return s[:len(s)-len(after)] + Filtered + "`)"
		}
		from = i + 1
	}
}

// hasProseSecretWord is a cheap pre-check for textPatterns[5], whose
// case-insensitive alternation has no literal prefix to scan for (review:
// it cost 9–18 µs on a log string): true when s holds one of its words.
func hasProseSecretWord(s string) bool {
	for i := 0; i < len(s); i++ {
		if proseWordAt(s[i:]) {
			return true
		}
	}
	return false
}

// proseWordAt reports whether rest starts with a word of textPatterns[5]
// (in any ASCII case): pass, pwd, secret, session, key, credential.
func proseWordAt(rest string) bool {
	switch rest[0] | 0x20 {
	case 'p':
		return hasPrefixFold(rest, "pass") || hasPrefixFold(rest, "pwd")
	case 's':
		return hasPrefixFold(rest, "secret") || hasPrefixFold(rest, "session")
	case 'k':
		return hasPrefixFold(rest, "key")
	case 'c':
		return hasPrefixFold(rest, "credential")
	}
	return false
}

// keyFileSuffix ends a key that names where a secret is kept (a file, a
// path, a directory), as a word of its own: not password_profile (review).
var keyFileSuffix = regexp.MustCompile(`[_.-](?:file|path|dir)$`)

// proseWords follow a sensitive key's name in a sentence about it, never as
// its value: chatguard's configuration problems read "stats_token: is
// shorter than 16 characters", which the logs showed as "[FILTERED]
// shorter" (QA).
var proseWords = map[string]bool{"is": true, "are": true, "must": true, "has": true, "have": true,
	"holds": true, "the": true, "not": true, "cannot": true, "should": true, "was": true,
	// What an app's validation says of the field (QA: "password:
	// required" read "password: [FILTERED]"; Mongoose's "password: Path
	// `password` is required.").
	"required": true, "missing": true, "expired": true, "invalid": true, "incorrect": true,
	"wrong": true, "too": true, "empty": true, "path": true, "undefined": true, "null": true, "none": true}

// quotedURLQuery is a quoted URL with a query, as Go's url.Error writes it.
var quotedURLQuery = regexp.MustCompile(`"(?:https?|wss?)://[^"\s?]*\?[^"\s]*"`)

// looksLikeCredential tells what follows an authorization scheme word: after
// Bearer always a credential; after Basic one that decodes to user:password;
// after "token" one with a digit or token punctuation, so that "token
// expired" and "basic authentication" stay readable.
func looksLikeCredential(scheme, s string) bool {
	scheme = strings.TrimRight(strings.TrimSpace(scheme), "%20+")
	escaped := strings.IndexByte(s, '%') >= 0 // an escape other than %20, which ends the match
	if dec, err := url.PathUnescape(s); err == nil {
		s = dec // judged as sent: "%3D%3D" is base64's padding (review)
	}
	switch strings.ToLower(scheme) {
	case "token":
		return escaped || strings.ContainsAny(s, "0123456789._-~+/=")
	case "basic": // base64 of user:password, not "basic authentication"
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			b, err = base64.RawStdEncoding.DecodeString(s)
		}
		return err == nil && bytes.IndexByte(b, ':') >= 0
	}
	return true
}

// mayHoldSecret is a cheap pre-check so that the common case (no secret)
// costs no regular-expression work: true when s holds "eyJ", "://", one of
// keyPrefixes (as written) or one of hintWords (in any ASCII case). It runs
// on every string of every log line, so it reads s once, looking further
// only at the bytes that can start one of them.
func mayHoldSecret(s string) bool {
	for i := 0; i < len(s); i++ {
		rest := s[i:]
		switch c := s[i]; c {
		case 'e':
			if strings.HasPrefix(rest, "eyJ") {
				return true
			}
		case ':':
			if strings.HasPrefix(rest, "://") {
				return true
			}
		case 'M':
			if strings.HasPrefix(rest, "MIME header") {
				return true
			}
		case 'm':
			if strings.HasPrefix(rest, "malformed HTTP ") {
				return true
			}
		case 'A':
			if strings.HasPrefix(rest, "AKIA") || strings.HasPrefix(rest, "AIza") {
				return true
			}
		case 'x':
			if strings.HasPrefix(rest, "xox") {
				return true
			}
		case 'g':
			if strings.HasPrefix(rest, "gh") && len(rest) >= 4 && rest[3] == '_' && strings.IndexByte("pousr", rest[2]) >= 0 ||
				strings.HasPrefix(rest, "github_pat_") {
				return true
			}
		}
		switch s[i] | 0x20 { // ASCII lower case; other bytes match no case below
		case 'k':
			if strings.HasPrefix(rest, "k_live_") || strings.HasPrefix(rest, "k_test_") || proseWordAt(rest) ||
				i > 0 && s[i-1] == 's' && strings.HasPrefix(rest, "k-") { // sk-proj-…, sk-… (review: never reached)
				return true
			}
		case 'b':
			if hasPrefixFold(rest, "bearer") || hasPrefixFold(rest, "basic") {
				return true
			}
		case 't':
			if hasPrefixFold(rest, "token") {
				return true
			}
		case 'p', 's':
			if proseWordAt(rest) {
				return true
			}
		case 'j':
			if hasPrefixFold(rest, "jwt") {
				return true
			}
		case 'c':
			if hasPrefixFold(rest, "cookie") || proseWordAt(rest) {
				return true
			}
		case 'a':
			if hasPrefixFold(rest, "authorization") {
				return true
			}
		}
	}
	return false
}

// hasPrefixFold is strings.HasPrefix ignoring ASCII case, for a lower-case word.
func hasPrefixFold(s, word string) bool {
	if len(s) < len(word) {
		return false
	}
	for j := 0; j < len(word); j++ {
		c := s[j]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != word[j] {
			return false
		}
	}
	return true
}
