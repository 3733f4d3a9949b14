package proxy

import (
	"net"
	"sync"
	"syscall"
)

// frameConn is one side of a relayed WebSocket as coder/websocket reads it:
// the TCP connection, with a tally of the WebSocket frames that went through
// its Read. The library reads through a buffer of its own, so after it hands
// over a message some of the next may already be out of the socket; the
// tally tells whether that is so (see buffered), which is what lets an idle
// connection wait for the socket to become readable without a goroutine
// blocked in the library's Reader.
//
// The tally follows the byte stream only; it never decides anything about a
// frame (the library does, and refuses bad ones).
type frameConn struct {
	net.Conn
	raw syscall.RawConn // the socket, for the readiness watch

	mu sync.Mutex // the tally is read by the relay and fed by the library's reads (Close reads too)
	t  frameTally
}

// newFrameConn wraps c when it is a socket (a *net.TCPConn or anything with
// a file descriptor); it returns nil otherwise. httpFirst: the stream starts
// with an HTTP response (the upstream's 101) before the frames.
func newFrameConn(c net.Conn, httpFirst bool) *frameConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	fc := &frameConn{Conn: c, raw: raw}
	fc.t.inHTTP = httpFirst
	return fc
}

func (c *frameConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.feed(p[:n])
	}
	return n, err
}

// feed tallies bytes that reached the library without passing through Read
// (what net/http had buffered when the connection was hijacked).
func (c *frameConn) feed(b []byte) {
	c.mu.Lock()
	c.t.feed(b)
	c.mu.Unlock()
}

// buffered reports whether bytes read from the socket are still in the
// library's buffer after it delivered `delivered` data messages: the rest
// of a message, a control frame, or whole messages.
func (c *frameConn) buffered(delivered uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t.messages > delivered || c.t.offset > c.t.lastEnd
}

// frameTally follows a stream of WebSocket frames (RFC 6455 §5.2): it counts
// the data messages that ended (a final data or continuation frame) and
// remembers where the last one ended. Headers may arrive split anywhere.
type frameTally struct {
	offset   uint64 // bytes seen
	messages uint64 // data messages whose last frame ended
	lastEnd  uint64 // offset just past the last of them

	inHTTP bool // still in the HTTP response that precedes the frames
	crlf   int  // bytes of "\r\n\r\n" matched so far

	hdr    [14]byte // the header being read
	hdrLen int      // bytes of it read
	left   uint64   // payload bytes of the current frame still to come
	inBody bool     // the header is complete, the payload is being read
}

func (t *frameTally) feed(b []byte) {
	for len(b) > 0 {
		switch {
		case t.inHTTP:
			n := t.skipHTTP(b)
			t.offset += uint64(n)
			b = b[n:]
			if !t.inHTTP {
				t.lastEnd = t.offset // the frames start here
			}
		case t.inBody:
			n := uint64(len(b))
			if n > t.left {
				n = t.left
			}
			t.left -= n
			t.offset += n
			b = b[n:]
			if t.left == 0 {
				t.endFrame()
			}
		default:
			t.hdr[t.hdrLen] = b[0]
			t.hdrLen++
			t.offset++
			b = b[1:]
			if need := t.headerLen(); need > 0 && t.hdrLen == need {
				t.left = t.payloadLen()
				t.inBody = true
				if t.left == 0 {
					t.endFrame()
				}
			}
		}
	}
}

// skipHTTP consumes b up to the blank line that ends the HTTP header; it
// returns how many bytes it took.
func (t *frameTally) skipHTTP(b []byte) int {
	const end = "\r\n\r\n"
	for i, c := range b {
		switch {
		case c == end[t.crlf]:
			t.crlf++
		case c == '\r':
			t.crlf = 1
		default:
			t.crlf = 0
		}
		if t.crlf == len(end) {
			t.inHTTP = false
			return i + 1
		}
	}
	return len(b)
}

// headerLen is the length of the header being read, once its first two
// bytes are in; 0 before.
func (t *frameTally) headerLen() int {
	if t.hdrLen < 2 {
		return 0
	}
	n := 2
	switch t.hdr[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if t.hdr[1]&0x80 != 0 { // masked (client to server)
		n += 4
	}
	return n
}

func (t *frameTally) payloadLen() uint64 {
	switch l := t.hdr[1] & 0x7f; l {
	case 126:
		return uint64(t.hdr[2])<<8 | uint64(t.hdr[3])
	case 127:
		var n uint64
		for _, c := range t.hdr[2:10] {
			n = n<<8 | uint64(c)
		}
		return n
	default:
		return uint64(l)
	}
}

func (t *frameTally) endFrame() {
	fin, opcode := t.hdr[0]&0x80 != 0, t.hdr[0]&0x0f
	if fin && opcode < 8 { // the last frame of a data message (control opcodes are 8 and up)
		t.messages++
		t.lastEnd = t.offset
	}
	t.hdrLen, t.inBody = 0, false
}
