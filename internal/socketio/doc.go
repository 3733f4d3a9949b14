// Package socketio reads and writes the two wire protocols under Socket.IO:
// Engine.IO v4 (the transport framing: one type byte, then data; several
// packets per HTTP long-polling body) and Socket.IO protocol 5 (events, acks
// and namespace connections inside Engine.IO message packets).
//
// chatguard uses it to look into the frames it relays (which event, which
// namespace, which conversation) and to answer a client itself, for example
// with an "error" event or an ack when it rejects a message. Two rules shape
// the code:
//
//   - Input is hostile. Nothing panics, nothing allocates or loops in
//     proportion to anything but the input's length, and whatever this
//     package accepts the official JavaScript parser (socket.io-parser 4.2.x,
//     engine.io-parser 5.x) accepts and reads the same way. Where the
//     JavaScript decoder is looser than any official encoder (a space read as
//     an ack id, a namespace with no terminating comma, "5-" meaning zero
//     attachments), Parse is stricter and reports [ErrMalformed].
//   - Output is what the official JavaScript encoder would send, byte for
//     byte: the same framing and the same JSON.stringify spelling of strings
//     and numbers, so a client cannot tell chatguard's packets from the
//     backend's.
//
// Parsing is cheap enough to run on every frame: [Parse] copies nothing but
// a non-root namespace, and [EventName], [EventArg] and [StringField] scan the
// JSON instead of unmarshalling it.
package socketio
