package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
)

// jsonLines formats an entry as one JSON object with its keys in
// alphabetical order — what logrus.JSONFormatter writes — without going
// through reflection for the common field types, and in UTC.
type jsonLines struct{}

func (jsonLines) Format(e *logrus.Entry) ([]byte, error) {
	b := e.Buffer
	if b == nil {
		b = &bytes.Buffer{}
	}
	var keysArr [24]string
	keys := keysArr[:0]
	for k := range e.Data {
		switch k {
		case "time", "level", "msg":
			continue // the entry's own win, as in logrus
		}
		keys = append(keys, k)
	}
	keys = append(keys, "level", "msg", "time")
	slices.Sort(keys)

	buf := b.AvailableBuffer()
	buf = append(buf, '{')
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, k)
		buf = append(buf, ':')
		switch k {
		case "level":
			buf = appendString(buf, e.Level.String())
			continue
		case "msg":
			buf = appendString(buf, e.Message)
			continue
		case "time":
			buf = append(buf, '"')
			buf = e.Time.UTC().AppendFormat(buf, TimeFormat)
			buf = append(buf, '"')
			continue
		}
		buf = appendValue(buf, e.Data[k])
	}
	buf = append(buf, '}', '\n')
	b.Write(buf)
	return b.Bytes(), nil
}

func appendValue(buf []byte, v any) []byte {
	switch t := v.(type) {
	case string:
		return appendString(buf, t)
	case int:
		return strconv.AppendInt(buf, int64(t), 10)
	case int64:
		return strconv.AppendInt(buf, t, 10)
	case int32:
		return strconv.AppendInt(buf, int64(t), 10)
	case uint64:
		return strconv.AppendUint(buf, t, 10)
	case uint32:
		return strconv.AppendUint(buf, uint64(t), 10)
	case uint:
		return strconv.AppendUint(buf, uint64(t), 10)
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return appendString(buf, strconv.FormatFloat(t, 'g', -1, 64))
		}
		n := len(buf)
		buf = strconv.AppendFloat(buf, t, 'f', -1, 64)
		if !bytes.ContainsRune(buf[n:], '.') {
			// A float field stays a float in JSON when it is whole
			// (duration 3 ms: 3.0): read as an integer first, an
			// Elasticsearch index maps the field as a long, and truncates
			// every fractional value after it (log QA).
			buf = append(buf, ".0"...)
		}
		return buf
	case bool:
		return strconv.AppendBool(buf, t)
	case nil:
		return append(buf, "null"...)
	case error:
		return appendString(buf, t.Error())
	case time.Time:
		buf = append(buf, '"')
		buf = t.UTC().AppendFormat(buf, time.RFC3339Nano)
		return append(buf, '"')
	case time.Duration:
		return appendString(buf, t.String())
	}
	j, err := json.Marshal(v)
	if err != nil {
		return appendString(buf, fmt.Sprintf("%+v", v))
	}
	return append(buf, j...)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string, escaping as encoding/json does
// but leaving <, > and & alone (greppable paths and queries).
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			if r == utf8.RuneError {
				buf = append(buf, `\ufffd`...)
			} else {
				buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			}
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
