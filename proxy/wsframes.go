package proxy

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// frameConn is one side of a relayed WebSocket as coder/websocket reads it:
// the TCP connection, with a tally of the WebSocket frames that went through
// its Read. Two things follow from the tally:
//
//   - begin knows whether bytes came with the handshake (then a reader
//     starts at once);
//   - with nowait set, a Read at a frame boundary, outside a fragmented
//     message, waits wsLinger at most and then fails with errWouldBlock:
//     the library only reads the socket when its own buffer is empty, so
//     that error means "everything received has been handled" (messages
//     delivered, pings answered) and nothing of a frame was consumed. That
//     is how a relay goroutine leaves the library's Reader without a
//     timeout that could cut a frame in two.
//
// The tally follows the byte stream only; it never decides anything about a
// frame (the library does, and refuses bad ones).
type frameConn struct {
	net.Conn
	raw syscall.RawConn // the socket, for the readiness watch

	nowait   atomic.Bool  // see above; set by the relay around its own Reader calls
	lastData atomic.Int64 // unix ns of the last bytes of a data frame (pings between fragments are not progress)

	mu  sync.Mutex // the tally is fed by the library's reads (Close reads too)
	t   frameTally
	eof atomic.Bool // a read of the socket failed (EOF, a reset): the tally saw the whole stream
}

// errWouldBlock: nothing came for wsLinger, at a frame boundary.
var errWouldBlock = errors.New("proxy: nothing to read for a while")

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
	fc.lastData.Store(time.Now().UnixNano())
	return fc
}

func (c *frameConn) Read(p []byte) (int, error) {
	if c.nowait.Load() && c.idle() {
		// Wait wsLinger at most: a busy socket keeps its reader, an idle
		// one gives it back. A read that times out took nothing.
		_ = c.Conn.SetReadDeadline(time.Now().Add(wsLinger))
		n, err := c.Conn.Read(p)
		_ = c.Conn.SetReadDeadline(time.Time{})
		if n > 0 {
			c.feed(p[:n])
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, errWouldBlock
		}
		c.ended(err)
		return n, err
	}
	for {
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.feed(p[:n])
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			c.ended(err)
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			// Only the relay sets deadlines (the library never does): to
			// linger, or to cut a linger short (see wsDir.take). One that
			// reaches another read is not that read's: clear it, read on.
			_ = c.Conn.SetReadDeadline(time.Time{})
			continue
		}
		return n, err
	}
}

// feed tallies bytes that reached the library without passing through Read
// (what net/http had buffered when the connection was hijacked).
func (c *frameConn) feed(b []byte) {
	c.mu.Lock()
	before := c.t.dataBytes
	c.t.feed(b)
	progress := c.t.dataBytes != before
	c.mu.Unlock()
	if progress {
		c.lastData.Store(time.Now().UnixNano())
	}
}

// ended notes a read of the socket that failed.
func (c *frameConn) ended(err error) {
	if err != nil {
		c.eof.Store(true)
	}
}

// cutShort reports whether the stream ended inside a frame or between the
// fragments of a message. coder/websocket reports a message whose
// connection dropped in the middle as complete (its reader turns the
// connection's EOF into the message's), so the relay asks this before
// passing such a message on.
func (c *frameConn) cutShort() bool {
	if c == nil || !c.eof.Load() { // not watched; or, every message but a connection's last, no lock
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t.hdrLen > 0 || c.t.inBody || c.t.inMessage
}

// stalledMidMessage reports whether the stream stopped inside a message
// (a frame's header or payload half read, or between the fragments of a
// message) and nothing came for d: a sender that announced a frame and
// never sends it (a length over the read limit, which the library refuses
// only once that many bytes came) holds its reader forever otherwise.
func (c *frameConn) stalledMidMessage(now time.Time, d time.Duration) bool {
	c.mu.Lock()
	mid := !c.t.inHTTP && !c.t.closed && (c.t.hdrLen > 0 || c.t.inBody || c.t.inMessage)
	c.mu.Unlock()
	// Read after the tally: bytes fed since were stamped before the tally
	// that shows them was published (feed), so a frame that started a
	// moment ago never meets an old stamp.
	return mid && now.Sub(time.Unix(0, c.lastData.Load())) > d
}

// pending reports whether frame bytes were read from the socket: before
// the library delivered anything, they wait in a buffer above the socket.
func (c *frameConn) pending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.t.inHTTP && c.t.offset > c.t.frameStart
}

// linger reads and drops what the peer still sends, until its close frame,
// the end of the stream or wait, whichever comes first: chatguard closed
// the connection (1009) while the peer was still sending a message, and a
// peer answers the close only once that message is out. Closing at once
// would reset the connection, and the peer would never see the 1009.
func (c *frameConn) linger(wait time.Duration) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	for {
		c.mu.Lock()
		closed := c.t.closed // it may have come with the message
		c.mu.Unlock()
		if closed {
			return
		}
		n, err := c.Conn.Read(buf)
		if n > 0 {
			c.feed(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// idle reports a frame boundary outside a fragmented message.
func (c *frameConn) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.t.inHTTP && c.t.hdrLen == 0 && !c.t.inBody && !c.t.inMessage
}

// frameTally follows a stream of WebSocket frames (RFC 6455 §5.2), after
// the HTTP response(s) that precede them on the upstream side: where frames
// start, whether a frame header or payload is half read, and whether a
// data message is between its fragments.
// Headers may arrive split anywhere.
type frameTally struct {
	offset     uint64 // bytes seen
	frameStart uint64 // offset of the first frame (after the HTTP responses)

	inHTTP     bool     // still in the HTTP response(s) before the frames
	line       int      // bytes of the current HTTP line, CRs not counted
	status     [12]byte // the start of the current response's status line: "HTTP/1.1 101"
	statusN    int      // bytes of it kept
	statusDone bool     // the status line ended

	hdr       [14]byte // the header being read
	hdrLen    int      // bytes of it read
	left      uint64   // payload bytes of the current frame still to come
	inBody    bool     // the header is complete, the payload is being read
	inMessage bool     // a data message's first frames came, its last not yet
	dataBytes uint64   // bytes of data frames (headers and payloads) seen
	closed    bool     // a close frame came
}

func (t *frameTally) feed(b []byte) {
	for len(b) > 0 {
		switch {
		case t.inHTTP:
			n := t.skipHTTP(b)
			t.offset += uint64(n)
			b = b[n:]
			if !t.inHTTP {
				t.frameStart = t.offset
			}
		case t.inBody:
			n := uint64(len(b))
			if n > t.left {
				n = t.left
			}
			t.left -= n
			t.offset += n
			if t.hdr[0]&0x0f < 8 {
				t.dataBytes += n
			}
			b = b[n:]
			if t.left == 0 {
				t.endFrame()
			}
		default:
			t.hdr[t.hdrLen] = b[0]
			t.hdrLen++
			t.offset++
			b = b[1:]
			if t.hdr[0]&0x0f < 8 {
				t.dataBytes++
			}
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

// skipHTTP consumes b up to the blank line that ends the 101 response,
// past any other 1xx response before it (103 Early Hints, which Go's
// client skips too); lines may end in CRLF or a bare LF. It returns how
// many bytes it took.
func (t *frameTally) skipHTTP(b []byte) int {
	for i, c := range b {
		switch {
		case c == '\r':
		case c == '\n' && t.line > 0: // the end of a line
			t.line, t.statusDone = 0, true
		case c == '\n': // a blank line: the end of a response's header
			interim := t.statusN == len(t.status) && t.status[9] == '1' && string(t.status[9:12]) != "101"
			t.statusN, t.statusDone = 0, false
			if !interim {
				t.inHTTP = false
				return i + 1
			}
		default:
			if !t.statusDone && t.statusN < len(t.status) {
				t.status[t.statusN] = c
				t.statusN++
			}
			t.line++
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
	if opcode < 8 { // a data frame (control opcodes are 8 and up, and may come between fragments)
		t.inMessage = !fin
	}
	if opcode == 8 {
		t.closed = true
	}
	t.hdrLen, t.inBody = 0, false
}
