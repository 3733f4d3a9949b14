package socketio

import (
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
)

// JSON as JavaScript's JSON.stringify spells it, so that what chatguard
// builds is byte for byte what the backend would have sent. Go's
// encoding/json differs in small ways that a client could see: it escapes
// <, >, & and U+2028/U+2029, Go callers may hand in indented JSON, and raw
// JSON may spell a number or a string in a way JSON.stringify never does
// ("1.0", "\u0041", "\/").

const hexDigits = "0123456789abcdef"

// appendStringify appends raw, which must be valid JSON, as
// JSON.stringify(JSON.parse(raw)) would write it, except that object keys
// keep their order and duplicates (JavaScript would drop all but the last
// of a duplicate key and move integer-like keys first). It reports false,
// and appends nothing, when raw is not valid JSON.
func appendStringify(dst, raw []byte) ([]byte, bool) {
	if !json.Valid(raw) {
		return dst, false
	}
	for i := 0; i < len(raw); {
		switch c := raw[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"':
			end, _ := stringEnd(raw, i)
			dst = appendJSONStringJS(dst, raw[i+1:end-1])
			i = end
		case c == '-' || isDigit(c):
			end := valueEnd(raw, i)
			dst = appendNumberJS(dst, raw[i:end])
			i = end
		default: // punctuation and the letters of true, false and null
			dst = append(dst, c)
			i++
		}
	}
	return dst, true
}

// appendNumberJS appends the valid JSON number lit as JavaScript's
// Number-to-string conversion writes it.
func appendNumberJS(dst, lit []byte) []byte {
	if plainInt(lit) {
		return append(dst, lit...)
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	switch {
	case math.IsInf(f, 0) || err != nil:
		return append(dst, "null"...) // JSON.stringify(Infinity), as JSON.parse("1e999") gives
	case f == 0:
		return append(dst, '0') // also -0 and 1e-999
	}
	// What encoding/json does for float64, which follows ECMAScript's
	// Number::toString: exponent form below 1e-6 and from 1e21.
	format := byte('f')
	if abs := math.Abs(f); abs < 1e-6 || abs >= 1e21 {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// Go writes e-07 and e+07; JavaScript e-7 and e+7.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// plainInt reports whether lit is an integer that JavaScript prints back
// unchanged: no fraction or exponent, no leading zero, not -0, and at most
// 15 digits so that a float64 holds it exactly.
func plainInt(lit []byte) bool {
	d := lit
	if len(d) > 0 && d[0] == '-' {
		d = d[1:]
	}
	if len(d) == 0 || len(d) > 15 {
		return false
	}
	if d[0] == '0' {
		return len(lit) == 1 // "0"; "-0" is written "0"
	}
	for _, c := range d {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

// appendJSONStringJS appends, quoted as JSON.stringify quotes it, the string
// whose JSON-escaped contents (between the quotes) are s.
func appendJSONStringJS(dst, s []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			r, size := utf8.DecodeRune(s[i:])
			dst = appendRuneJS(dst, r)
			i += size
			continue
		}
		e := s[i+1]
		i += 2
		switch e {
		case 'b':
			dst = appendRuneJS(dst, '\b')
		case 'f':
			dst = appendRuneJS(dst, '\f')
		case 'n':
			dst = appendRuneJS(dst, '\n')
		case 'r':
			dst = appendRuneJS(dst, '\r')
		case 't':
			dst = appendRuneJS(dst, '\t')
		case 'u':
			u := hex4(s[i:])
			i += 4
			if 0xD800 <= u && u < 0xDC00 && i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
				if lo := hex4(s[i+2:]); 0xDC00 <= lo && lo < 0xE000 {
					dst = utf8.AppendRune(dst, 0x10000+(u-0xD800)<<10+(lo-0xDC00))
					i += 6
					continue
				}
			}
			if 0xD800 <= u && u < 0xE000 {
				// A lone surrogate: JavaScript strings can hold one and
				// JSON.stringify escapes it.
				dst = append(dst, '\\', 'u', hexDigits[u>>12], hexDigits[u>>8&0xF], hexDigits[u>>4&0xF], hexDigits[u&0xF])
				continue
			}
			dst = appendRuneJS(dst, u)
		default: // '"', '\\', '/'
			dst = appendRuneJS(dst, rune(e))
		}
	}
	return append(dst, '"')
}

// appendStringJS appends s quoted as JSON.stringify quotes it. Invalid UTF-8
// becomes U+FFFD, as it would in a JavaScript string decoded from it.
func appendStringJS(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for _, r := range s {
		dst = appendRuneJS(dst, r)
	}
	return append(dst, '"')
}

// appendRuneJS appends r as it stands inside a JSON.stringify string.
func appendRuneJS(dst []byte, r rune) []byte {
	switch r {
	case '"', '\\':
		return append(dst, '\\', byte(r))
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	if r < 0x20 {
		return append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xF])
	}
	if r < utf8.RuneSelf {
		return append(dst, byte(r))
	}
	return utf8.AppendRune(dst, r)
}

// hex4 reads four hex digits; json.Valid has checked they are there.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
