package socketio

import "encoding/json"

// Open is the Engine.IO handshake: the data of the open packet that the
// server sends first, such as
//
//	{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}
type Open struct {
	SID          string   // session id
	Upgrades     []string // transports the client may upgrade to
	PingInterval int64    // milliseconds between the server's pings
	PingTimeout  int64    // milliseconds the server waits for a pong
	MaxPayload   int64    // bytes in one polling payload; 0 = not sent (Engine.IO v3)
}

// ParseOpen reads the data of an open packet. sid, pingInterval and
// pingTimeout are required; numbers must be non-negative integers. Keys are
// matched exactly and the last of a duplicate key counts, as JSON.parse does
// (encoding/json alone would match "SID" too). Errors wrap ErrMalformed.
func ParseOpen(data []byte) (Open, error) {
	var o Open
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return o, malformed("open packet: %v", err)
	}
	for _, f := range []struct {
		key      string
		dst      any
		required bool
	}{
		{"sid", &o.SID, true},
		{"upgrades", &o.Upgrades, false},
		{"pingInterval", &o.PingInterval, true},
		{"pingTimeout", &o.PingTimeout, true},
		{"maxPayload", &o.MaxPayload, false},
	} {
		raw, ok := fields[f.key]
		if !ok || string(raw) == "null" {
			if f.required {
				return Open{}, malformed("open packet: no %s", f.key)
			}
			continue
		}
		if err := json.Unmarshal(raw, f.dst); err != nil {
			return Open{}, malformed("open packet: %s: %v", f.key, err)
		}
	}
	switch {
	case o.SID == "":
		return Open{}, malformed("open packet: empty sid")
	case o.PingInterval < 0 || o.PingTimeout < 0 || o.MaxPayload < 0:
		return Open{}, malformed("open packet: negative interval or size")
	}
	return o, nil
}
