package proxy

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// frame encodes one WebSocket frame (RFC 6455 §5.2) with the shortest
// length encoding, masked (as a client sends it) or not.
func frame(fin bool, opcode byte, masked bool, payload []byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	var mask byte
	if masked {
		mask = 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, mask|byte(n))
	case n <= 0xffff:
		out = append(out, mask|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, mask|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	key := []byte{0x11, 0x22, 0x33, 0x44}
	out = append(out, key...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

// streamOf builds a stream of n data messages, some fragmented, with control
// frames between frames. It returns the bytes and, for the offset just past
// each frame, whether a data message is then between its fragments (false
// at every message's end).
func streamOf(r *rand.Rand, n int, masked bool) ([]byte, map[uint64]bool) {
	sizes := []int{0, 1, 125, 126, 127, 300, 0xffff, 0x10000, 70_000}
	var out []byte
	frameEnds := map[uint64]bool{}
	inMessage := false
	control := func() {
		if r.IntN(4) == 0 {
			op := []byte{0x9, 0xA}[r.IntN(2)] // ping, pong
			out = append(out, frame(true, op, masked, make([]byte, r.IntN(126)))...)
			frameEnds[uint64(len(out))] = inMessage
		}
	}
	for i := 0; i < n; i++ {
		parts := 1 + r.IntN(3)
		for j := 0; j < parts; j++ {
			op := byte(0x0) // continuation
			if j == 0 {
				op = []byte{0x1, 0x2}[r.IntN(2)]
			}
			last := j == parts-1
			out = append(out, frame(last, op, masked, make([]byte, sizes[r.IntN(len(sizes))]))...)
			inMessage = !last
			frameEnds[uint64(len(out))] = inMessage
			if !last {
				control() // control frames may come between the frames of a message
			}
		}
		control()
	}
	return out, frameEnds
}

func TestFrameTallyFollowsMessages(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	prefixes := []string{
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-Odd: a\rb\n\r\nc\r\n\r\n",
		// An interim response first (Go's client skips it), bare LFs.
		"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 101 OK\r\n\r\n",
	}
	for round := 0; round < 300; round++ {
		masked := round%2 == 0
		stream, frameEnds := streamOf(r, 1+r.IntN(8), masked)
		var prefix []byte
		if round%3 != 0 {
			prefix = []byte(prefixes[round%len(prefixes)])
			stream = append(prefix, stream...)
		}
		start := uint64(len(prefix))
		fc := &frameConn{}
		fc.t.inHTTP = len(prefix) > 0
		// Fed in random pieces, down to single bytes: headers split anywhere.
		for rest := stream; len(rest) > 0; {
			n := 1 + r.IntN(min(len(rest), []int{1, 7, 200, 1 << 17}[r.IntN(4)]))
			before := fc.t.offset
			fc.feed(rest[:n])
			rest = rest[n:]
			at := fc.t.offset
			if at != before+uint64(n) {
				t.Fatalf("round %d: offset %d after %d more bytes from %d", round, at, n, before)
			}
			// Idle exactly at a frame's end outside a fragmented message
			// (every message's end among them).
			inMessage, atFrameEnd := frameEnds[at-start]
			wantIdle := at == start || (at > start && atFrameEnd && !inMessage)
			if got := fc.idle(); got != wantIdle {
				t.Fatalf("round %d: idle() = %v at offset %d (frames from %d), want %v", round, got, at, start, wantIdle)
			}
			if got, want := fc.pending(), at > start; got != want {
				t.Fatalf("round %d: pending() = %v at offset %d (frames from %d), want %v", round, got, at, start, want)
			}
		}
	}
}

// FuzzFrameTally: any bytes, split anywhere, tally the same as in one
// piece, and never past what was fed.
func FuzzFrameTally(f *testing.F) {
	f.Add([]byte("HTTP/1.1 101 x\r\n\r\n\x81\x02hi\x89\x00"), true, uint8(3))
	f.Add(frame(true, 0x2, true, make([]byte, 200)), false, uint8(1))
	f.Add([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, false, uint8(5))
	f.Add([]byte{0x81, 0x7e, 0x00}, false, uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, httpFirst bool, step uint8) {
		var whole, pieces frameTally
		whole.inHTTP, pieces.inHTTP = httpFirst, httpFirst
		whole.feed(b)
		n := int(step%16) + 1
		for rest := b; len(rest) > 0; {
			k := min(n, len(rest))
			pieces.feed(rest[:k])
			rest = rest[k:]
		}
		if whole != pieces {
			t.Fatalf("in one piece %+v, in pieces of %d %+v", whole, n, pieces)
		}
		// A frame is at least 2 bytes.
		if whole.offset != uint64(len(b)) || whole.frameStart > whole.offset {
			t.Fatalf("tally %+v after %d bytes", whole, len(b))
		}
	})
}
