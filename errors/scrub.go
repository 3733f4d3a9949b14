package errors

// The client's view of a wrapped reply: its own message when safe, and
// details without stacks or secrets.

import (
	"bytes"
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/chatguard/chatguard/internal/redact"
)

// clientMessage extracts a 4xx reply's own message when it is short, single
// line and free of stack traces, paths, error class names, a database's own
// error text (leaksInternalText, the rule envelopes follow) and secrets.
func clientMessage(doc any, rep Reply) string {
	var msg string
	switch {
	case doc != nil:
		for _, c := range candidates(doc) {
			for _, k := range []string{"message", "msg", "error", "detail", "title"} {
				if s, ok := c[k].(string); ok && s != "" {
					msg = s
					break
				}
			}
			if msg != "" {
				break
			}
		}
	case strings.HasPrefix(strings.ToLower(rep.ContentType), "text/plain"):
		msg = string(bytes.TrimSpace(rep.Body))
	case strings.HasPrefix(strings.ToLower(rep.ContentType), "text/html") && !bytes.ContainsAny(rep.Body, "<>&"):
		// Express's res.status(404).send('Conversation not found') is
		// text/html: a line of text with no markup (nor entities) is
		// the same message.
		msg = string(bytes.TrimSpace(rep.Body))
	}
	if !safeMessage(msg) {
		return ""
	}
	return truncate(redact.String(msg), maxMessageRunes)
}

func safeMessage(s string) bool {
	if s == "" || utf8.RuneCountInString(s) > maxMessageRunes || !utf8.ValidString(s) {
		return false
	}
	// Markup, not a comparison: "must be >= 18" (ajv) is a message,
	// "<b>boom</b>" or "&lt;" a page. File paths are leaksInternalText's,
	// by the rule envelopes follow: "Cannot GET /api/home/feed" is a route.
	// A control character (a line break, a NUL, an ANSI escape that
	// recolours a terminal, a bell) is no message's (QA: "bad\u0000value
	// \u001b[31m" reached clients as it was).
	return !hasControl(s) && !markup.MatchString(s) && !leaksMessage(s)
}

// leaksMessage reports whether an app's message shows its internals: what
// leaksInternalText finds, a runtime's own words ("Cannot read properties
// of undefined", ECONNREFUSED) or a connection string with its user
// (mongodb+srv://admin:…@cluster0…).
func leaksMessage(s string) bool {
	if leaksInternalText(s) || connectionString.MatchString(s) {
		return true
	}
	lower := strings.ToLower(s)
	for _, bad := range []string{
		"node_modules", ".js:", ".ts:", `c:\`,
		"typeerror", "referenceerror", "syntaxerror", "rangeerror", "econnrefused", "econnreset",
		"etimedout", "enotfound", "null pointer", "cannot read prop", "cannot find module", "of undefined", "undefined is not", "is undefined",
	} {
		if strings.Contains(lower, bad) {
			return true
		}
	}
	return internalWords.MatchString(s)
}

// connectionString is a URL with a user in it: a database's or a broker's
// address with its credentials (filtered or not), never a page's link.
var connectionString = regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://[^\s/@:]+(?::[^\s/@]*)?@[^\s/@]`)

// markup is an HTML tag, comment or entity.
var markup = regexp.MustCompile(`<[A-Za-z/!?]|&(?:[A-Za-z]+|#[0-9]+|#x[0-9A-Fa-f]+);`)

// internalWords are words of a runtime's or a driver's text that an app's
// own message does not use, as whole words: "NullPointerException" but not
// "Exceptional characters", "SQL" but not "PostgreSQL or MySQL", a stack
// frame's "at fn (" but not "at least 8 characters" (Joi's own text).
// A query in lower case, with a star, a count or a list of columns.
var internalWords = regexp.MustCompile(`(?i)exception\b|\bsql\b|\bcall stack\b|\bstack ?trace\b|\bstack overflow\b|` +
	`\bat (?:async )?(?:new )?[\w$.\[\]]+ \(|\bat \S+:\d+:\d+|` +
	`\bCast to \w+ failed\b|\bat path "|` + // Mongoose's CastError: "Cast to ObjectId failed for value … at path "_id" for model "User""
	"\\bselect\\s+(?:\\*|distinct\\b|count\\s*\\(|[\\w.\"`]+\\s*,).{0,200}?\\bfrom\\b") // "select * from users", not "select a file from disk"

// scrubFields replaces secret values in validation messages, and in the
// values of other fields: a card number echoed as "card" is no less the
// creditCardNumber's secret (QA).
func scrubFields(details map[string]any, secrets []string) {
	fields, _ := details["fields"].([]any)
	for _, f := range fields {
		if fm, ok := f.(map[string]any); ok {
			if msg, ok := fm["message"].(string); ok {
				fm["message"] = redact.ReplaceAll(msg, secrets)
			}
			switch v := fm["value"].(type) {
			case string:
				fm["value"] = redact.ReplaceAll(v, secrets)
			case json.Number: // echoed as a number (review)
				if redact.ReplaceAll(string(v), secrets) != string(v) {
					fm["value"] = redact.Filtered
				}
			}
		}
	}
}

// snippet is the development-mode view of an upstream body: redacted, without
// stack frames, short.
func snippet(doc any, body []byte, secrets []string) string {
	var s string
	if doc != nil {
		b, err := json.Marshal(redact.Value(withoutStacks(doc)))
		if err == nil {
			s = string(b)
		}
	} else {
		s = cutStack(redact.String(string(body)))
	}
	return truncate(redact.ReplaceAll(s, secrets), snippetBytes)
}

// withoutStacks drops "stack" members and cuts stack frames from strings.
func withoutStacks(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, val := range t {
			if strings.EqualFold(k, "stack") || strings.EqualFold(k, "stackTrace") {
				continue
			}
			out[k] = withoutStacks(val)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, val := range t {
			out[i] = withoutStacks(val)
		}
		return out
	case string:
		return cutStack(t)
	}
	return v
}

// cutStack keeps the text before the first stack frame: "\n    at …" in
// text and JSON, "<br> &nbsp; &nbsp;at …" in the HTML page of Express's
// default error handler.
func cutStack(s string) string {
	if loc := stackFrame.FindStringIndex(s); loc != nil {
		return s[:loc[0]]
	}
	return s
}

var stackFrame = regexp.MustCompile(`(?:\n|<br\s*/?>)(?:[ \t]|&nbsp;)+at `)

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func truncate(s string, maxRunes int) string {
	if utf8.RuneCountInString(s) <= maxRunes {
		return s
	}
	r := []rune(s)
	return string(r[:maxRunes]) + "…"
}
