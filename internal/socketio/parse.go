package socketio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Parse decodes a Socket.IO packet: the data of an Engine.IO message packet,
// without its leading '4'. The returned Data aliases b.
//
// The layout is
//
//	<type digit>[<attachments>-][<namespace>,][<ack id>][<JSON>]
//
// and the payload must be what socket.io-parser's decoder accepts for the
// type: CONNECT an object or nothing, DISCONNECT nothing, CONNECT_ERROR an
// object or a string, EVENT and BINARY_EVENT a non-empty array whose first
// element is a number or a string that is not reserved (see
// IsReservedEvent), ACK and BINARY_ACK an array.
//
// Parse is stricter than the JavaScript decoder where that decoder accepts
// what no Socket.IO encoder writes and what would let the proxy and the
// backend read one frame two ways: the frame must be valid UTF-8; numbers are
// ASCII digits only (JavaScript reads a space or "1e1" as a number); a
// namespace must end in a comma; binary packets announce 1 to MaxAttachments
// attachments; the ack id is at most MaxAckID; the namespace at most
// MaxNamespaceLen bytes; an EVENT, ACK or CONNECT_ERROR must carry its
// payload. Every error wraps ErrMalformed.
func Parse(b []byte) (Packet, error) {
	p := Packet{Namespace: "/", ID: -1}
	if len(b) == 0 {
		return p, malformed("empty packet")
	}
	if b[0] < '0' || b[0] > '6' {
		return p, malformed("unknown packet type %q", b[0])
	}
	if !utf8.Valid(b) {
		return p, malformed("not UTF-8")
	}
	p.Type = PacketType(b[0] - '0')
	i := 1
	if p.Type.binary() {
		n, j := digits(b, i, MaxAttachments)
		switch {
		case j == i:
			return p, malformed("no attachment count")
		case n < 0:
			return p, malformed("more than %d attachments", MaxAttachments)
		case j == len(b) || b[j] != '-':
			return p, malformed("attachment count not followed by '-'")
		case n == 0:
			return p, malformed("zero attachments")
		}
		p.Attachments = int(n)
		i = j + 1
	}
	if i < len(b) && b[i] == '/' {
		end := bytes.IndexByte(b[i:], ',')
		if end < 0 {
			return p, malformed("namespace not followed by ','")
		}
		if end > MaxNamespaceLen {
			return p, malformed("namespace longer than %d bytes", MaxNamespaceLen)
		}
		if end > 1 {
			p.Namespace = string(b[i : i+end])
		}
		i += end + 1
	}
	if i < len(b) && isDigit(b[i]) {
		n, j := digits(b, i, MaxAckID)
		if n < 0 {
			return p, malformed("ack id above %d", int64(MaxAckID))
		}
		p.ID = n
		i = j
	}
	if i < len(b) {
		p.Data = b[i:]
	}
	if err := checkPayload(p.Type, p.Data); err != nil {
		return p, err
	}
	return p, nil
}

// checkPayload applies socket.io-parser's isPayloadValid to data.
//
// The first byte alone tells the JSON type, because json.Valid then
// guarantees one value (with optional trailing space). Leading space is
// refused: the JavaScript decoder would have read it as an ack id.
func checkPayload(t PacketType, data []byte) error {
	if data == nil {
		switch t {
		case PacketConnect, PacketDisconnect:
			return nil
		}
		return malformed("%v without payload", t)
	}
	var ok bool
	switch t {
	case PacketConnect:
		ok = data[0] == '{'
	case PacketDisconnect:
		ok = false
	case PacketConnectError:
		ok = data[0] == '{' || data[0] == '"'
	case PacketEvent, PacketBinaryEvent, PacketAck, PacketBinaryAck:
		ok = data[0] == '['
	}
	if !ok {
		return malformed("invalid %v payload", t)
	}
	if !json.Valid(data) {
		return malformed("invalid JSON")
	}
	if t == PacketEvent || t == PacketBinaryEvent {
		return checkEventName(data)
	}
	return nil
}

// checkEventName checks the first element of a valid JSON array: a number,
// or a string that is not a reserved event name.
func checkEventName(data []byte) error {
	i := skipSpace(data, 1)
	if i == len(data) || data[i] == ']' {
		return malformed("EVENT without a name")
	}
	switch c := data[i]; {
	case c == '-' || isDigit(c):
		return nil
	case c == '"':
		end, esc := stringEnd(data, i)
		if end < 0 {
			return malformed("invalid JSON")
		}
		if reservedEvent(data[i+1:end-1]) || esc && IsReservedEvent(unquote(data[i:end])) {
			return malformed("reserved event name")
		}
		return nil
	}
	return malformed("EVENT name is not a string or a number")
}

// digits reads the decimal number at b[i:] and returns it with the index
// after its last digit. Leading zeros are allowed, as in JavaScript's
// Number("007"). A value above limit gives n = -1; the digits are still
// consumed, so no input makes this loop do more than one pass.
func digits(b []byte, i int, limit int64) (n int64, end int) {
	for end = i; end < len(b) && isDigit(b[end]); end++ {
		if n >= 0 {
			n = n*10 + int64(b[end]-'0')
			if n > limit {
				n = -1
			}
		}
	}
	return n, end
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// BinaryAttachments is how many binary WebSocket messages follow msg, an
// Engine.IO message carrying a BINARY_EVENT or BINARY_ACK ("451-[…]"): the
// count its header announces, read without parsing the rest (up to
// 65,536), else 0. It looks at the first bytes only, so that it can run on
// every message a relay passes on, and on the head of a streamed one.
func BinaryAttachments(msg []byte) int {
	if len(msg) < 4 || msg[0] != byte(EIOMessage) || (msg[1] != '5' && msg[1] != '6') {
		return 0
	}
	n, end := digits(msg, 2, 1<<16)
	if n <= 0 || end == len(msg) || msg[end] != '-' {
		return 0
	}
	return int(n)
}

// ForeignText reports whether b, the data of an Engine.IO message, is a
// packet Socket.IO's default decoder refuses outright, by its type: a text
// parser of the app's own wrote it (socket.io-json-parser's
// `{"type":0,"nsp":"/"}`). The default decoder reads the type as
// JavaScript's Number(first character) and throws on anything but 0 to 6;
// an empty packet or one that starts with white space reads as 0 (CONNECT)
// there, so it is not foreign: only a first byte that is printable ASCII,
// neither a digit 0 to 6 nor a space, is.
func ForeignText(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	c := b[0]
	return c > ' ' && c < 0x7f && (c < '0' || c > '6')
}
