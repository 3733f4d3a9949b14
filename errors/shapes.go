package errors

// The error shapes a Node backend emits: Joi and express-validator,
// jsonwebtoken, Twilio, Firebase and gRPC statuses.

import (
	"encoding/json"
	"regexp"
	"strings"
	"unicode"

	"github.com/chatguard/chatguard/internal/redact"
)

func validation(fields []any, kind string) Result {
	return Result{Err: New(CodeValidation, "").WithDetails(map[string]any{"fields": fields}), Kind: kind}
}

// jwtCode recognises jsonwebtoken's errors and express-jwt's UnauthorizedError.
func jwtCode(c map[string]any) (Code, bool) {
	name, _ := c["name"].(string)
	switch name {
	case "TokenExpiredError":
		return CodeTokenExpired, true
	case "JsonWebTokenError", "NotBeforeError":
		return CodeTokenInvalid, true
	case "UnauthorizedError":
		if inner, ok := c["inner"].(map[string]any); ok {
			if code, ok := jwtCode(inner); ok {
				return code, true
			}
		}
		switch c["code"] {
		case "credentials_required":
			return CodeAuthRequired, true
		case "invalid_token", "revoked_token":
			if msg, _ := c["message"].(string); msg == "jwt expired" {
				return CodeTokenExpired, true
			}
			return CodeTokenInvalid, true
		}
	}
	return "", false
}

// joiDetails reports whether every item of details is a Joi error item
// ({message, path: [...], type}), as an app that sends
// {"error": "Bad Request", "details": err.details} passes them on.
func joiDetails(details []any) bool {
	for _, d := range details {
		dm, ok := d.(map[string]any)
		if !ok {
			return false
		}
		_, msg := dm["message"].(string)
		_, path := dm["path"].([]any)
		_, typ := dm["type"].(string)
		if !msg || !path || !typ {
			return false
		}
	}
	return len(details) > 0
}

// validationFields recognises Joi, celebrate, express-validator and Mongoose
// validation errors and lists their fields.
func validationFields(c map[string]any) ([]any, string) {
	name, _ := c["name"].(string)
	isJoi, _ := c["isJoi"].(bool)
	_, hasOriginal := c["_original"]
	if details, ok := c["details"].([]any); ok && (isJoi || name == "ValidationError" || hasOriginal ||
		c["error"] == "ValidationError" || joiDetails(details)) {
		var fields []any
		for _, d := range details {
			dm, ok := d.(map[string]any)
			if !ok {
				continue
			}
			field := joiPath(dm["path"])
			var value any
			if ctx, ok := dm["context"].(map[string]any); ok {
				value = ctx["value"]
				if field == "" {
					field, _ = ctx["key"].(string)
				}
			}
			fields = appendField(fields, field, dm["message"], value)
		}
		if fields != nil {
			return fields, "joi"
		}
	}
	if v, ok := c["validation"].(map[string]any); ok {
		// celebrate: {"validation": {"body": {"source","keys":[…],"message"}}}
		var fields []any
		for _, src := range []string{"params", "headers", "query", "cookies", "signedCookies", "body"} {
			sm, ok := v[src].(map[string]any)
			if !ok {
				continue
			}
			keys, _ := sm["keys"].([]any)
			for _, k := range keys {
				ks, _ := k.(string)
				fields = appendField(fields, ks, sm["message"], nil)
			}
		}
		if fields != nil {
			return fields, "celebrate"
		}
	}
	if arr, ok := c["errors"].([]any); ok {
		if fields := expressValidatorFields(arr); fields != nil {
			return fields, "express-validator"
		}
	}
	if errs, ok := c["errors"].(map[string]any); ok && name == "ValidationError" {
		var fields []any
		for _, path := range sortedKeys(errs) {
			em, ok := errs[path].(map[string]any)
			if !ok {
				continue
			}
			fields = appendField(fields, path, em["message"], em["value"])
		}
		if fields != nil {
			return fields, "mongoose"
		}
	}
	return nil, ""
}

func expressValidatorFields(arr []any) []any {
	return listFields(arr, func(em map[string]any) (string, any, any, bool) {
		msg, hasMsg := em["msg"]
		field, _ := em["path"].(string)
		if field == "" {
			field, _ = em["param"].(string)
		}
		return field, msg, em["value"], hasMsg && field != ""
	})
}

// listFields lists the fields of arr when every item is an object that
// item reads as a field (its name, message and value); nil otherwise, or
// for an empty arr.
func listFields(arr []any, item func(em map[string]any) (field string, msg, value any, ok bool)) []any {
	var fields []any
	for _, e := range arr {
		em, ok := e.(map[string]any)
		if !ok {
			return nil
		}
		field, msg, value, ok := item(em)
		if !ok {
			return nil
		}
		fields = appendField(fields, field, msg, value)
	}
	return fields
}

func joiPath(p any) string {
	switch t := p.(type) {
	case string:
		return t
	case []any:
		parts := make([]string, 0, len(t))
		for _, e := range t {
			switch s := e.(type) {
			case string:
				parts = append(parts, s)
			case json.Number:
				parts = append(parts, s.String())
			}
		}
		return strings.Join(parts, ".")
	}
	return ""
}

func appendField(fields []any, field string, message, value any) []any {
	if len(fields) >= maxFields {
		return fields
	}
	rawValue := value
	msg, _ := message.(string)
	if leaksInternalText(msg) || hasControl(msg) { // Joi quotes the value: ANSI escapes too (review)
		msg = fieldMessage
	}
	if redact.IsSensitivePath(field) && value != nil {
		value = redact.Filtered
	} else {
		value = safeValue(value)
	}
	if s, ok := value.(string); ok && s == redact.Filtered {
		if raw := redact.ScalarText(rawValue); raw != "" {
			// Messages quote the value: "\"password\" with value \"…\" fails to match";
			// a card number sent as a JSON number too (review).
			msg = strings.ReplaceAll(msg, raw, redact.Filtered)
		} else {
			msg = maskQuotedValues(field, msg) // an object or a list: what the message quotes
		}
	} else if rawValue == nil && redact.IsSensitivePath(field) {
		// The value is not given (Zod, an express-validator item without
		// it) but the message may quote it: "hunter2 is too common" (QA).
		msg = maskQuotedValues(field, msg)
	}
	return append(fields, map[string]any{
		"field":   truncate(field, maxValueRunes),
		"message": truncate(redact.String(msg), maxMessageRunes),
		"value":   value,
	})
}

// quotedText is a quoted string in a message.
var quotedText = regexp.MustCompile(`'[^'\n]{1,256}'|"[^"\n]{1,256}"|` + "`[^`\\n]{1,256}`")

// maskQuotedValues filters what a message about the secret field named
// field, whose value is unknown, may quote of it: a quoted string (not the
// field's own name or a secret's word: "must not contain the word
// 'password'"), and any word that looks like a value — 4 or more digits
// (a PIN; 3 for a cvv, cvc or pin field), 12 or more digits with dashes (a
// card number), letters and digits mixed ("h4ckme99 is too common", "too
// common: hunter-2024"). The rule a client broke stays readable: "must be
// 8-64 characters", "at most 1024 character(s)", "(UTF-8)", "on
// 2024-01-01", a pattern "[A-Za-z0-9]+" (reviews: a first version filtered
// them, later ones let card numbers and later words through).
func maskQuotedValues(field, msg string) string {
	name := field[strings.LastIndexAny(field, ".[")+1:]
	msg = quotedText.ReplaceAllStringFunc(msg, func(m string) string {
		inner := m[1 : len(m)-1]
		if strings.EqualFold(inner, name) || redact.IsSensitiveKey(inner) && !strings.ContainsAny(inner, "0123456789") {
			return m
		}
		return m[:1] + redact.Filtered + m[:1]
	})
	lname := strings.ToLower(name)
	shortCode := strings.Contains(lname, "cvv") || strings.Contains(lname, "cvc") || strings.Contains(lname, "pin")
	words := strings.Split(msg, " ")
	for i, w := range words {
		core := strings.Trim(w, ",.;:!?()")
		if core == "" || strings.EqualFold(core, name) || !looksLikeValue(core, shortCode) {
			continue
		}
		if isCount(core) && (i > 0 && limitWords[strings.ToLower(strings.Trim(words[i-1], ",.;:!?()"))] ||
			i+1 < len(words) && strings.HasPrefix(strings.ToLower(words[i+1]), "char") ||
			i+1 < len(words) && unitWords[strings.ToLower(strings.Trim(words[i+1], ",.;:!?()"))]) {
			continue // a rule's bound: "at most 1024 characters", "less than 9999"
		}
		words[i] = strings.Replace(w, core, redact.Filtered, 1)
	}
	return strings.Join(words, " ")
}

// limitWords come before a rule's bound; unitWords after one.
var (
	limitWords = map[string]bool{"than": true, "to": true, "most": true, "least": true, "between": true, "and": true,
		"after": true, "before": true, "max": true, "min": true, "maximum": true, "minimum": true, "of": true,
		"under": true, "over": true, "exceed": true, "exceeds": true, "from": true, "until": true, "since": true}
	unitWords = map[string]bool{"digits": true, "bytes": true, "letters": true, "words": true, "items": true, "years": true, "days": true}
)

// isCount reports a word of digits only.
func isCount(w string) bool { return strings.Trim(w, "0123456789") == "" }

// ruleWord is a word of a validation rule, not a value: an encoding, a
// standard or an algorithm (UTF-8, SHA-256, ISO-8601, base64url, x509,
// argon2id, E.164, v2), a count with its unit (8chars, 16kb, 2nd).
var ruleWord = regexp.MustCompile(`^(?i:utf-?(?:8|16|32)|sha-?\d+|iso-?\d+|base\d+(?:url)?|md5|x509|pbkdf2|argon2(?:id|i|d)?|e\.?164|v\d{1,2}(?:\.\d+)*|\d+(?:chars?|characters?|kb|mb|gb|st|nd|rd|th|px|ms|s|m|h|d))$`)

// looksLikeValue reports a word of a message that may be a secret's value;
// shortCode: the field holds a 3-digit code (cvv, cvc, pin).
func looksLikeValue(w string, shortCode bool) bool {
	if strings.ContainsAny(w, "[]{}\\^") || strings.HasPrefix(w, "/") || ruleWord.MatchString(w) {
		return false // a pattern, a rule's word
	}
	digits := 0
	for i := 0; i < len(w); i++ {
		if w[i] >= '0' && w[i] <= '9' {
			digits++
		}
	}
	switch {
	case digits == 0:
		return false
	case isCount(w):
		return len(w) >= 4 || shortCode && len(w) >= 3
	case strings.IndexFunc(w, unicode.IsLetter) >= 0:
		return len(w) >= 4 // letters and digits mixed
	}
	return digits >= 12 // 4111-1111-1111-1111; not 8-64 nor 2024-01-01
}

// safeValue keeps scalars (shortened, redacted) and drops structures, which
// could carry anything.
func safeValue(v any) any {
	switch t := v.(type) {
	case nil, bool, json.Number:
		return t
	case string:
		return truncate(redact.String(withoutControls(t)), maxValueRunes)
	}
	return nil
}

// hasControl reports a control character (a NUL, an ANSI escape, a bell, a
// line break): no message of an app's holds one for a client to see.
func hasControl(s string) bool { return strings.ContainsFunc(s, unicode.IsControl) }

// withoutControls is s without its control characters, which a submitted
// value echoed back to a client may hold.
func withoutControls(s string) string {
	if !hasControl(s) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}

// twilioCode recognises Twilio's REST errors: a numeric code in 20000–69999
// and a more_info (moreInfo in twilio-node) link.
func twilioCode(c map[string]any) (int64, bool) {
	_, hasMore := c["more_info"]
	if !hasMore {
		_, hasMore = c["moreInfo"]
	}
	if !hasMore {
		return 0, false
	}
	n, ok := c["code"].(json.Number)
	if !ok {
		return 0, false
	}
	code, err := n.Int64()
	if err != nil || code < 20000 || code > 69999 {
		return 0, false
	}
	return code, true
}

var grpcNames = map[int64]string{
	1: "cancelled", 2: "unknown", 3: "invalid-argument", 4: "deadline-exceeded", 5: "not-found",
	6: "already-exists", 7: "permission-denied", 8: "resource-exhausted", 9: "failed-precondition",
	10: "aborted", 11: "out-of-range", 12: "unimplemented", 13: "internal", 14: "unavailable",
	15: "data-loss", 16: "unauthenticated",
}

// firebaseCode recognises Firebase Admin / Firestore / gRPC errors: string codes
// ("not-found", "firestore/permission-denied", "auth/id-token-expired"),
// Google API statuses ("NOT_FOUND") and numeric gRPC codes with gRPC's
// details/metadata members.
func firebaseCode(c map[string]any) (Code, bool) {
	var name string
	switch t := c["code"].(type) {
	case string:
		name = t
	case json.Number:
		// gRPC errors carry details or metadata; Google API errors a status
		// string (below). A bare number is anybody's.
		_, hasDetails := c["details"]
		_, hasMeta := c["metadata"]
		if n, err := t.Int64(); err == nil && (hasDetails || hasMeta) {
			name = grpcNames[n]
		}
	}
	if name == "" {
		// Google API errors: {"code": 404, "message": …, "status": "NOT_FOUND"}.
		name, _ = c["status"].(string)
	}
	if name == "" {
		return "", false
	}
	name = strings.ReplaceAll(strings.ToLower(name), "_", "-")
	if svc, rest, ok := strings.Cut(name, "/"); ok {
		if svc == "auth" {
			return firebaseAuthCode(rest)
		}
		switch svc {
		case "storage":
			if rest == "unauthorized" || rest == "unauthenticated" {
				return map[string]Code{"unauthorized": CodeForbidden, "unauthenticated": CodeAuthRequired}[rest], true
			}
			name = rest
		case "firestore", "database", "functions", "app", "messaging":
			name = rest
		default:
			return "", false
		}
	}
	switch name {
	case "not-found", "object-not-found", "bucket-not-found", "project-not-found":
		return CodeNotFound, true
	case "permission-denied":
		return CodeForbidden, true
	case "unauthenticated":
		return CodeAuthRequired, true
	}
	for _, known := range grpcNames {
		if name == known {
			return CodeDatabase, true
		}
	}
	switch name {
	case "retry-limit-exceeded", "invalid-checksum", "quota-exceeded", "internal-error":
		return CodeDatabase, true
	}
	return "", false
}

func firebaseAuthCode(rest string) (Code, bool) {
	switch rest {
	case "id-token-expired", "session-cookie-expired", "user-token-expired":
		return CodeTokenExpired, true
	case "id-token-revoked", "session-cookie-revoked", "invalid-id-token", "invalid-session-cookie-duration",
		"argument-error", "invalid-custom-token", "custom-token-mismatch", "invalid-user-token", "user-disabled":
		return CodeTokenInvalid, true
	case "user-not-found":
		return CodeNotFound, true
	case "insufficient-permission", "unauthorized-domain", "operation-not-allowed":
		return CodeForbidden, true
	case "invalid-email", "invalid-password", "email-already-exists", "email-already-in-use",
		"weak-password", "invalid-phone-number", "phone-number-already-exists", "invalid-argument":
		return CodeValidation, true
	case "wrong-password", "invalid-credential", "invalid-login-credentials":
		return CodeAuthRequired, true
	}
	return CodeDatabase, true
}

// bearerError is RFC 6750's error attribute of a Bearer challenge, and its
// description.
var (
	bearerError       = regexp.MustCompile(`(?i)\berror\s*=\s*"?invalid_token"?`)
	bearerDescription = regexp.MustCompile(`(?i)\berror_description\s*=\s*"([^"]*)"`)
	expiredWord       = regexp.MustCompile(`(?i)\bexpired\b`)
	expiredToken      = regexp.MustCompile(`(?i)\b(?:jwt|token)\b.{0,40}\bexpired\b|\bexpired\b.{0,20}\b(?:jwt|token)\b`)
	invalidToken      = regexp.MustCompile(`(?i)\b(?:invalid|malformed|bad)\s+(?:jwt|token|signature)\b|\bjwt malformed\b|\b(?:jwt|token)\b.{0,20}\b(?:is )?(?:invalid|malformed|not valid)\b`)
)

// tokenCode tells an expired or invalid token on a 401 the app answered
// without a recognised error object: by the WWW-Authenticate challenge
// (Bearer error="invalid_token", an error_description that says expired),
// else by the app's message ("Token expired", "jwt malformed").
func tokenCode(challenge, message string) (Code, bool) {
	if bearerError.MatchString(challenge) {
		if m := bearerDescription.FindStringSubmatch(challenge); m != nil && expiredWord.MatchString(m[1]) {
			return CodeTokenExpired, true
		}
		return CodeTokenInvalid, true
	}
	switch {
	case expiredToken.MatchString(message):
		return CodeTokenExpired, true
	case invalidToken.MatchString(message):
		return CodeTokenInvalid, true
	}
	return "", false
}
