package socketio

import (
	"bytes"
	"encoding/base64"
	"strconv"
)

// EIOType is the type of an Engine.IO packet: the ASCII digit that starts it.
type EIOType byte

// Engine.IO v4 packet types.
const (
	EIOOpen    EIOType = '0'
	EIOClose   EIOType = '1'
	EIOPing    EIOType = '2'
	EIOPong    EIOType = '3'
	EIOMessage EIOType = '4'
	EIOUpgrade EIOType = '5'
	EIONoop    EIOType = '6'
)

var eioTypeNames = [...]string{"open", "close", "ping", "pong", "message", "upgrade", "noop"}

// String returns the protocol's name for t, such as "ping".
func (t EIOType) String() string {
	if t >= EIOOpen && t <= EIONoop {
		return eioTypeNames[t-EIOOpen]
	}
	return "EIOType(" + strconv.Itoa(int(t)) + ")"
}

// recordSeparator separates the packets of an HTTP long-polling payload.
const recordSeparator = 0x1e

// ParseEIO splits a text Engine.IO packet (a WebSocket text frame or one
// packet of a polling payload) into its type and data. data aliases p,
// except for a binary packet: in a polling payload that is 'b' followed by
// standard base64, and ParseEIO returns EIOMessage, the decoded bytes and
// binary = true. An empty packet, an unknown type or bad base64 is an
// error wrapping ErrMalformed.
func ParseEIO(p []byte) (t EIOType, data []byte, binary bool, err error) {
	if len(p) == 0 {
		return 0, nil, false, malformed("empty Engine.IO packet")
	}
	switch t = EIOType(p[0]); {
	case t == 'b':
		data = make([]byte, base64.StdEncoding.DecodedLen(len(p)-1))
		n, err := base64.StdEncoding.Decode(data, p[1:])
		if err != nil {
			return 0, nil, false, malformed("binary Engine.IO packet: %v", err)
		}
		return EIOMessage, data[:n], true, nil
	case t < EIOOpen || t > EIONoop:
		return 0, nil, false, malformed("unknown Engine.IO packet type %q", p[0])
	}
	return t, p[1:], false, nil
}

// SplitPayload splits an HTTP long-polling payload into its packets. The
// packets are sub-slices of body (capacity-limited, so appending to one
// cannot overwrite the next). An empty body is one empty packet, which
// ParseEIO rejects, as engine.io-parser does. The caller bounds the size of
// body; SplitPayload allocates one slice header per separator.
func SplitPayload(body []byte) [][]byte {
	return bytes.Split(body, []byte{recordSeparator})
}

// JoinPayload joins packets into one HTTP long-polling payload.
func JoinPayload(packets [][]byte) []byte {
	return bytes.Join(packets, []byte{recordSeparator})
}
