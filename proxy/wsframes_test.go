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
// frames between frames; it returns the bytes and the offset just past each
// message's last frame.
func streamOf(r *rand.Rand, n int, masked bool) ([]byte, []uint64) {
	sizes := []int{0, 1, 125, 126, 127, 300, 0xffff, 0x10000, 70_000}
	var out []byte
	var ends []uint64
	control := func() {
		if r.IntN(4) == 0 {
			op := []byte{0x9, 0xA}[r.IntN(2)] // ping, pong
			out = append(out, frame(true, op, masked, make([]byte, r.IntN(126)))...)
		}
	}
	for i := 0; i < n; i++ {
		parts := 1 + r.IntN(3)
		for j := 0; j < parts; j++ {
			op := byte(0x0) // continuation
			if j == 0 {
				op = []byte{0x1, 0x2}[r.IntN(2)]
			}
			out = append(out, frame(j == parts-1, op, masked, make([]byte, sizes[r.IntN(len(sizes))]))...)
			if j < parts-1 {
				control() // control frames may come between the frames of a message
			}
		}
		ends = append(ends, uint64(len(out)))
		control()
	}
	return out, ends
}

func TestFrameTallyFollowsMessages(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		masked, withHTTP := round%2 == 0, round%3 == 0
		stream, ends := streamOf(r, 1+r.IntN(8), masked)
		var prefix []byte
		if withHTTP {
			prefix = []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-Odd: a\rb\n\r\nc\r\n\r\n")
			stream = append(prefix, stream...)
			for i := range ends {
				ends[i] += uint64(len(prefix))
			}
		}
		var tl frameTally
		tl.inHTTP = withHTTP
		// Fed in random pieces, down to single bytes: headers split anywhere.
		for rest := stream; len(rest) > 0; {
			n := 1 + r.IntN(min(len(rest), []int{1, 7, 200, 1 << 17}[r.IntN(4)]))
			before := tl.offset
			tl.feed(rest[:n])
			rest = rest[n:]
			if tl.offset != before+uint64(n) {
				t.Fatalf("round %d: offset %d after %d more bytes from %d", round, tl.offset, n, before)
			}
			// Every message whose end was reached is counted, the last one's end remembered.
			want := 0
			for _, e := range ends {
				if e <= tl.offset {
					want++
				}
			}
			if tl.messages != uint64(want) {
				t.Fatalf("round %d: %d messages counted at offset %d, want %d (ends %v)", round, tl.messages, tl.offset, want, ends)
			}
			wantEnd := uint64(len(prefix)) // where the frames start
			if tl.offset < wantEnd {
				wantEnd = 0 // still in the HTTP response
			}
			if want > 0 {
				wantEnd = ends[want-1]
			}
			if tl.lastEnd != wantEnd {
				t.Fatalf("round %d: last end %d, want %d", round, tl.lastEnd, wantEnd)
			}
		}
	}
}

// The question the relay asks: after the library delivered k messages, is
// anything of src still above the socket?
func TestFrameConnBuffered(t *testing.T) {
	t.Parallel()
	two := append(frame(true, 0x1, true, []byte("one")), frame(true, 0x1, true, []byte("two"))...)
	ping := frame(true, 0x9, true, nil)
	half := frame(true, 0x2, true, make([]byte, 300))[:100]
	tests := []struct {
		name      string
		fed       []byte
		delivered uint64
		want      bool
	}{
		{"nothing read", nil, 0, false},
		{"one message read, none delivered", frame(true, 0x1, true, []byte("hi")), 0, true},
		{"one message read and delivered", frame(true, 0x1, true, []byte("hi")), 1, false},
		{"two read, one delivered", two, 1, true},
		{"two read, two delivered", two, 2, false},
		{"a ping after the last message", append(frame(true, 0x1, true, nil), ping...), 1, true},
		{"half a frame", half, 0, true},
		{"a first fragment", frame(false, 0x1, true, []byte("par")), 0, true},
	}
	for _, tt := range tests {
		fc := &frameConn{}
		fc.feed(tt.fed)
		if got := fc.buffered(tt.delivered); got != tt.want {
			t.Errorf("%s: buffered(%d) = %v, want %v", tt.name, tt.delivered, got, tt.want)
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
		if whole.offset != uint64(len(b)) || whole.lastEnd > whole.offset || 2*whole.messages > whole.offset {
			t.Fatalf("tally %+v after %d bytes", whole, len(b))
		}
	})
}
