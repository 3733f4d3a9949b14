package socketio

import (
	"encoding/json"
	"strconv"
	"strings"
)

// AppendEncode appends p as socket.io-parser's Encoder writes it: the type
// digit, "<attachments>-" for BINARY_EVENT and BINARY_ACK, the namespace and
// a comma unless it is "/" or empty, the ack id unless it is negative, then
// Data unchanged. A packet from Parse comes back as the bytes it was parsed
// from, except for an explicit root namespace ("/,") and leading zeros in
// numbers, which the official encoder never writes.
//
// Where the JavaScript encoder would throw or write a packet that reads back
// differently, AppendEncode keeps the frame unambiguous instead: a namespace
// is cut at its first comma (where a decoder would end it anyway) and gets
// a leading slash if it lacks one (as Server.of adds). Data is trusted to be
// the JSON that Parse accepts for the type.
func (p Packet) AppendEncode(dst []byte) []byte {
	dst = strconv.AppendUint(dst, uint64(p.Type), 10)
	if p.Type.binary() {
		dst = strconv.AppendInt(dst, int64(p.Attachments), 10)
		dst = append(dst, '-')
	}
	dst = appendNamespace(dst, p.Namespace)
	if p.ID >= 0 {
		dst = strconv.AppendInt(dst, p.ID, 10)
	}
	return append(dst, p.Data...)
}

// appendNamespace appends "<ns>," unless ns is the root namespace.
func appendNamespace(dst []byte, ns string) []byte {
	if i := strings.IndexByte(ns, ','); i >= 0 {
		ns = ns[:i]
	}
	if ns == "" || ns == "/" {
		return dst
	}
	if ns[0] != '/' {
		dst = append(dst, '/')
	}
	dst = append(dst, ns...)
	return append(dst, ',')
}

// The Encode functions build complete Engine.IO text frames (leading '4'
// included) for the proxy to send a client on its own. JSON arguments are
// rewritten as JSON.stringify would write them (see appendStringify); an
// argument that is nil or not valid JSON stands for JavaScript's undefined,
// which JSON.stringify writes as null in an array and leaves out of an
// object. A negative id means no ack id; ns "" or "/" is the root
// namespace.

// EncodeEvent returns the frame of an EVENT named name, such as
// `42["error",{...}]` or `42/chat,7["error",{...}]`. name must not be a
// reserved event name (see IsReservedEvent); the client would drop the
// connection.
func EncodeEvent(ns string, id int64, name string, args ...json.RawMessage) []byte {
	dst := make([]byte, 0, frameSize(ns, args)+len(name)+3)
	dst = append(dst, byte(EIOMessage), '0'+byte(PacketEvent))
	dst = appendNamespace(dst, ns)
	if id >= 0 {
		dst = strconv.AppendInt(dst, id, 10)
	}
	dst = append(dst, '[')
	dst = appendStringJS(dst, name)
	for _, a := range args {
		dst = append(dst, ',')
		dst = appendArg(dst, a)
	}
	return append(dst, ']')
}

// EncodeAck returns the frame of an ACK answering id, such as
// `43/chat,17[{...}]`.
func EncodeAck(ns string, id int64, args ...json.RawMessage) []byte {
	dst := make([]byte, 0, frameSize(ns, args)+2)
	dst = append(dst, byte(EIOMessage), '0'+byte(PacketAck))
	dst = appendNamespace(dst, ns)
	if id >= 0 {
		dst = strconv.AppendInt(dst, id, 10)
	}
	dst = append(dst, '[')
	for i, a := range args {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendArg(dst, a)
	}
	return append(dst, ']')
}

// EncodeConnectError returns the frame that refuses a connection to ns, as
// a Socket.IO server writes it for an error passed to next() in a
// middleware: `44{"message":"…"}`, or `44{"message":"…","data":{…}}` when
// data is valid JSON.
func EncodeConnectError(ns string, message string, data json.RawMessage) []byte {
	dst := make([]byte, 0, frameSize(ns, nil)+len(message)+len(data)+24)
	dst = append(dst, byte(EIOMessage), '0'+byte(PacketConnectError))
	dst = appendNamespace(dst, ns)
	dst = append(dst, `{"message":`...)
	dst = appendStringJS(dst, message)
	if len(data) > 0 {
		if out, ok := appendStringify(append(dst, `,"data":`...), data); ok {
			dst = out
		}
	}
	return append(dst, '}')
}

// EncodeDisconnect returns the frame that closes the client's connection to
// ns: `41` or `41/chat,`.
func EncodeDisconnect(ns string) []byte {
	dst := make([]byte, 0, frameSize(ns, nil))
	dst = append(dst, byte(EIOMessage), '0'+byte(PacketDisconnect))
	return appendNamespace(dst, ns)
}

// appendArg appends one argument of an array, or null in its place.
func appendArg(dst []byte, a json.RawMessage) []byte {
	if out, ok := appendStringify(dst, a); ok {
		return out
	}
	return append(dst, "null"...)
}

// frameSize is a guess at a frame's length, so that it is usually built in
// one allocation: type digits, namespace, id, brackets and the arguments.
func frameSize(ns string, args []json.RawMessage) int {
	n := 2 + len(ns) + 2 + 16 + 2
	for _, a := range args {
		n += len(a) + 1
	}
	return n
}
