package socketio

import (
	"errors"
	"strconv"
)

// ErrMalformed is wrapped by every error that reports input this package
// refuses to read: a bad Engine.IO packet, a bad Socket.IO packet or a bad
// open handshake.
var ErrMalformed = errors.New("socketio: malformed packet")

// Bounds that Parse enforces.
const (
	// MaxAttachments is the most binary attachments one packet may announce.
	// It is socket.io-parser's default since 4.2.6 (CVE-2026-33151): a
	// backend on a current parser drops the connection on more, and one on an
	// older parser would buffer them without limit.
	MaxAttachments = 10

	// MaxNamespaceLen is the longest namespace, in bytes, leading slash
	// included. Socket.IO sets no bound, and dynamic namespaces
	// (/tenant-<id>/…) can be long; the bound only keeps a hostile client
	// from making the proxy copy and key tables by megabyte-long names.
	MaxNamespaceLen = 4096

	// MaxAckID is the largest ack id, JavaScript's Number.MAX_SAFE_INTEGER
	// (2^53-1). Above it a JavaScript peer cannot hold the id exactly and
	// would answer a different one.
	MaxAckID = 1<<53 - 1
)

// PacketType is the type of a Socket.IO packet.
type PacketType byte

// Socket.IO packet types (protocol 5).
const (
	PacketConnect      PacketType = 0
	PacketDisconnect   PacketType = 1
	PacketEvent        PacketType = 2
	PacketAck          PacketType = 3
	PacketConnectError PacketType = 4
	PacketBinaryEvent  PacketType = 5
	PacketBinaryAck    PacketType = 6
)

var packetTypeNames = [...]string{"CONNECT", "DISCONNECT", "EVENT", "ACK", "CONNECT_ERROR", "BINARY_EVENT", "BINARY_ACK"}

// String returns the protocol's name for t, such as "BINARY_EVENT".
func (t PacketType) String() string {
	if int(t) < len(packetTypeNames) {
		return packetTypeNames[t]
	}
	return "PacketType(" + strconv.Itoa(int(t)) + ")"
}

// binary reports whether packets of type t announce attachments.
func (t PacketType) binary() bool { return t == PacketBinaryEvent || t == PacketBinaryAck }

// Packet is one decoded Socket.IO packet.
//
// A Packet from Parse aliases the parsed buffer through Data; copy Data
// before reusing that buffer (a WebSocket reader's, say).
type Packet struct {
	Type        PacketType
	Attachments int    // announced binary attachments; BINARY_EVENT and BINARY_ACK only
	Namespace   string // "/" when the packet names none
	ID          int64  // ack id; -1 = none
	Data        []byte // raw JSON payload, nil when absent
}

// IsReservedEvent reports whether name is one of the event names that
// Socket.IO keeps for its own signals ("connect", "disconnect", ...). A
// peer's decoder rejects an EVENT with such a name and closes the
// connection, so never build one with EncodeEvent.
func IsReservedEvent(name string) bool { return reservedEvent([]byte(name)) }

// reservedEvent is IsReservedEvent on bytes; the switch on string(name)
// does not allocate.
func reservedEvent(name []byte) bool {
	switch string(name) {
	case "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener":
		return true
	}
	return false
}
