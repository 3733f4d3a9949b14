package socketio

import "encoding/json"

// A small JSON scanner: enough to find one element of an array or one field
// of an object without unmarshalling the rest. It trusts its input to be
// valid JSON (Parse checks that); on anything else it may answer nonsense
// but it never panics, never reads out of bounds and always advances, so it
// ends in one pass.

// skipSpace returns the index of the first non-space byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just after the string that starts with the
// quote at b[i], and whether it holds escapes. end is -1 when the string is
// not terminated.
func stringEnd(b []byte, i int) (end int, escaped bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '"':
			return j + 1, escaped
		case '\\':
			escaped = true
			j++
		}
	}
	return -1, escaped
}

// valueEnd returns the index just after the JSON value that starts at b[i],
// or -1 if there is none.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			case '"':
				end, _ := stringEnd(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			}
		}
		return -1
	}
	// A number or a literal: everything up to the next delimiter.
	j := i
	for j < len(b) && isScalarByte(b[j]) {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

func isScalarByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '+' || c == '.'
}

// unquote returns the value of the JSON string token s. Strings without
// escapes should not come here: string(s[1:len(s)-1]) is cheaper.
func unquote(s []byte) string {
	var v string
	if json.Unmarshal(s, &v) != nil {
		return ""
	}
	return v
}

// stringValue returns the value of the JSON string token s.
func stringValue(s []byte, escaped bool) string {
	if escaped {
		return unquote(s)
	}
	return string(s[1 : len(s)-1])
}

// arrayElem returns the raw JSON of element n of the array in data.
func arrayElem(data []byte, n int) ([]byte, bool) {
	i := skipSpace(data, 0)
	if n < 0 || i == len(data) || data[i] != '[' {
		return nil, false
	}
	for k := 0; ; k++ {
		i = skipSpace(data, i+1)
		end := valueEnd(data, i)
		if end < 0 {
			return nil, false
		}
		if k == n {
			return data[i:end], true
		}
		i = skipSpace(data, end)
		if i == len(data) || data[i] != ',' {
			return nil, false
		}
	}
}

// EventName returns the event name of an EVENT or BINARY_EVENT payload (a
// Packet's Data): the first element of the array, when it is a string. An
// event named by a number, which Socket.IO also allows, gives false.
// Escapes are decoded, so `["\u0073end"]` is named "send", as the backend
// would read it.
func EventName(data []byte) (string, bool) {
	raw, ok := arrayElem(data, 0)
	if !ok || raw[0] != '"' {
		return "", false
	}
	_, esc := stringEnd(raw, 0)
	return stringValue(raw, esc), true
}

// EventArg returns the raw JSON of argument i of an EVENT payload, where
// argument 0 is the first one after the event name.
func EventArg(data []byte, i int) ([]byte, bool) {
	if i < 0 {
		return nil, false
	}
	return arrayElem(data, i+1)
}

// StringField returns a top-level field of the JSON object obj as a string:
// a JSON string's value, or a number's literal text (`12` gives "12", `1.0`
// gives "1.0"). Other values, a missing field or obj not an object give
// false. Keys are compared after decoding their escapes, and when a key
// occurs twice the last one counts, as in JavaScript's JSON.parse: a client
// cannot show the proxy one conversationId and the backend another.
func StringField(obj []byte, field string) (string, bool) {
	i := skipSpace(obj, 0)
	if i == len(obj) || obj[i] != '{' {
		return "", false
	}
	var val []byte // the last value seen for field
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return "", false
	}
	for i < len(obj) && obj[i] == '"' {
		keyEnd, keyEsc := stringEnd(obj, i)
		if keyEnd < 0 {
			return "", false
		}
		key := obj[i:keyEnd]
		match := !keyEsc && string(key[1:len(key)-1]) == field || keyEsc && unquote(key) == field
		i = skipSpace(obj, keyEnd)
		if i == len(obj) || obj[i] != ':' {
			return "", false
		}
		i = skipSpace(obj, i+1)
		end := valueEnd(obj, i)
		if end < 0 {
			return "", false
		}
		if match {
			val = obj[i:end]
		}
		i = skipSpace(obj, end)
		if i == len(obj) || obj[i] != ',' {
			break
		}
		i = skipSpace(obj, i+1)
	}
	return scalar(val)
}

// Scalar returns the JSON value v (an event argument) as a string when it
// is a string (its value) or a number (its literal text); false for
// anything else. An app that emits join(roomId) sends its id that way.
func Scalar(v []byte) (string, bool) {
	i := skipSpace(v, 0)
	end := valueEnd(v, i)
	if end < 0 || skipSpace(v, end) != len(v) || !json.Valid(v[i:end]) {
		return "", false // strict: a join is rare, and `01` is no id JSON.parse reads
	}
	return scalar(v[i:end])
}

func scalar(val []byte) (string, bool) {
	switch {
	case len(val) == 0:
		return "", false
	case val[0] == '"':
		_, esc := stringEnd(val, 0)
		return stringValue(val, esc), true
	case val[0] == '-' || isDigit(val[0]):
		return string(val), true
	}
	return "", false
}
