package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/socketio"
)

// Sides of a close, the "side" label.
const (
	sideClient    = "client"
	sideUpstream  = "upstream"
	sideChatguard = "chatguard"
)

// wsPair is one relayed WebSocket: the client's side and the upstream's,
// and a direction (wsDir) for each way messages go. A direction that is
// reading holds a goroutine; one whose socket is idle waits in the hub's
// readiness poller without one, so that an idle client costs no goroutine
// stack. The pair is over when both directions are (see finished).
type wsPair struct {
	hub     *wsHub
	kind    string
	reqID   string
	ip      netip.Addr
	sess    *sioSession // nil for a plain WebSocket
	started time.Time

	// The library connections, nil while the pair sleeps (see wssleep.go):
	// used only between hold and unhold.
	mu          sync.Mutex
	client      *websocket.Conn
	upstream    *websocket.Conn
	users       int     // holders of the connections
	dropped     bool    // asleep, and the sockets were closed: never wakes
	clientSock  *wsSock // the sockets as the connections see them; nil: not watched (never sleeps)
	upSock      *wsSock
	clientLimit int64        // the client side's read limit
	subprotocol string       // the one both sides agreed on
	sleepy      bool         // the pair may sleep at all (see canSleep)
	sessionOver bool         // its Socket.IO session ended before it was attached (see sioSession.attach)
	sleeping    atomic.Bool  // the connections are retired; changed under mu, read by the janitor's sweep without it
	woke        atomic.Int64 // unix ns of the last wake: a wake for a ping or an ack is not a message, but the pair is not quiet either
	pings       *pingRelay   // the connections' ping callbacks (nil in tests that build pairs by hand)

	up   wsDir // client → upstream
	down wsDir // upstream → client

	// gates, one per destination (gateClient, gateUpstream; nil for a plain
	// WebSocket), keep chatguard's own messages out of a Socket.IO binary
	// packet, which is a text message and then its attachments as binary
	// messages: the direction relaying one holds its destination's gate
	// from the text message to the last attachment, and write takes it
	// for each message of chatguard's. A packet of chatguard's in between
	// made socket.io-client drop the connection ("parse error: got
	// plaintext data when reconstructing a packet"; browser QA).
	gates [2]chan struct{}
	// streaming, by gate: the gate's holder is a streamed message, whose
	// end may be far off (a slow side taking a large message). A write of
	// chatguard's then waits only streamWait for it: it runs on the
	// direction relaying the other side's messages, which its wait holds
	// up (QA: each rejected event held the client's next events to the app
	// for 5 s).
	streaming [2]atomic.Bool

	last      atomic.Int64 // unix ns of the last data message either way
	writingUp atomic.Int64 // unix ns a write to the upstream started; 0 = none
	writingDn atomic.Int64 // the same toward the client

	ending  atomic.Bool   // chatguard is ending the pair itself
	failed  atomic.Bool   // a side sent what may not go on (invalidText): nothing more is relayed
	counted atomic.Bool   // a close was counted
	live    atomic.Int32  // directions not finished
	release func()        // run when the pair is over
	done    chan struct{} // closed when both directions finished
}

// newPair pairs the two sides. clientSock and upSock are their sockets as
// the library reads them (nil: not watchable, that direction keeps a
// goroutine and the pair never sleeps).
func (h *wsHub) newPair(kind string, info *reqInfo, client, up *websocket.Conn, clientSock, upSock *wsSock, sess *sioSession) *wsPair {
	p := &wsPair{
		hub: h, kind: kind, reqID: info.id, ip: info.client,
		client: client, upstream: up, sess: sess, started: time.Now(),
		clientSock: clientSock, upSock: upSock, subprotocol: up.Subprotocol(),
		clientLimit: h.cfg.MaxMessageBytes, sleepy: canSleep(h, clientSock, upSock),
		done: make(chan struct{}),
	}
	if sess != nil {
		p.gates = [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
	}
	p.up = wsDir{p: p, from: sideClient, fc: sockFrames(clientSock)}
	p.down = wsDir{p: p, from: sideUpstream, fc: sockFrames(upSock)}
	p.last.Store(p.started.UnixNano())
	client.SetReadLimit(p.clientLimit)
	up.SetReadLimit(-1) // the backend's messages are its own business, and streamed past streamAfter
	if sess != nil && !sess.attach(p) {
		p.sessionOver = true // the caller ends it once it runs
	}
	return p
}

// start relays both ways and returns at once: the handler that accepted the
// socket ends, so that its stack (grown by the handshake) and the request's
// state are not held for the socket's whole life. release runs when the
// pair is over.
func (p *wsPair) start(release func()) {
	p.release = release
	p.live.Store(2)
	p.down.begin()
	p.up.begin()
}

// finished is called once by each direction as it stops; the second call
// ends the pair.
func (p *wsPair) finished() {
	if p.live.Add(-1) != 0 {
		return
	}
	h := p.hub
	close(p.done) // live reaches 0 once
	h.remove(p)
	p.mu.Lock()
	if p.sleeping.Load() { // closed asleep (dropped): it never wakes
		h.metrics.sleeping.Dec()
	}
	p.mu.Unlock()
	if p.sess != nil {
		p.sess.detach(p)
	}
	if p.release != nil {
		p.release()
	}
	h.s.log.WithFields(logrus.Fields{
		"requestId": p.reqID, logging.FieldCategory: logging.CategorySocket, "kind": p.kind,
		"duration": float64(time.Since(p.started).Microseconds()) / 1000,
	}).Info("websocket closed")
}

// Indexes of wsPair.gates.
const (
	gateClient   = 0
	gateUpstream = 1
)

// gate is the gate of d's destination (nil for a plain WebSocket).
func (d *wsDir) gate() chan struct{} {
	return d.p.gates[d.gateIndex()]
}

// gateIndex is the index of d's destination's gate.
func (d *wsDir) gateIndex() int {
	if d.from == sideUpstream {
		return gateClient
	}
	return gateUpstream
}

// streamWait is how long a write of chatguard's waits for a streamed
// message to end before it is dropped (see wsPair.streaming).
const streamWait = 100 * time.Millisecond

// wsDir is one direction of a pair: messages read from src go to dst.
//
// Its state says who reads src: a goroutine of its own (running), nobody
// until the poller reports src readable (armed), or nobody ever again
// (ended). Only the poller's dispatch turns armed into running, and only
// the direction's own goroutine turns running into armed or ended. Anyone
// closing src takes the direction (see take): an armed one becomes ended,
// and the closer finishes it once src is closed, since a closed socket
// never reports; a running one becomes closing, and its goroutine reads on
// (it never parks again) until it meets the close.
type wsDir struct {
	p    *wsPair
	from string     // the side src belongs to
	fc   *frameConn // src's socket; nil: a goroutine always reads src

	state atomic.Int32
	watch uint64 // the poller's id for src; 0: none

	head io.LimitedReader // reads the start of a message that may be streamed; only by the reading goroutine
	// attachments: binary messages of the Socket.IO packet being relayed
	// still to come; while above 0 the direction holds its destination's
	// gate. Only whoever runs or finishes the direction touches it.
	attachments int
}

const (
	dirRunning int32 = iota
	dirArmed
	dirClosing // running, and src is being closed: never parks again
	dirEnded
)

// conns is the direction's source and destination; only while the pair is
// held.
func (d *wsDir) conns() (src, dst *websocket.Conn) {
	if d.from == sideClient {
		return d.p.client, d.p.upstream
	}
	return d.p.upstream, d.p.client
}

func sockFrames(s *wsSock) *frameConn {
	if s == nil {
		return nil
	}
	return s.frameConn
}

func (d *wsDir) other() *wsDir {
	if d == &d.p.up {
		return &d.p.down
	}
	return &d.p.up
}

// begin starts the direction: a goroutine when src has bytes waiting (the
// upstream's first message may have come with its handshake) or cannot be
// watched, else a watch.
func (d *wsDir) begin() {
	h := d.p.hub
	if h.poller == nil || d.fc == nil {
		d.spawn()
		return
	}
	id, err := h.poller.add(d.fc.raw, d.ready)
	if err != nil { // src already closed, say: a goroutine meets that
		d.spawn()
		return
	}
	d.watch = id
	if d.fc.pending() || !d.park() {
		d.spawn()
	}
}

// ready is the poller's dispatch: src became readable (or closed).
func (d *wsDir) ready() {
	if d.state.CompareAndSwap(dirArmed, dirRunning) {
		d.spawn()
	}
}

func (d *wsDir) spawn() {
	if !d.p.hub.background(d.run) { // the hub stopped
		d.p.abort()
		d.finish()
	}
}

// park hands src to the poller; false when it cannot, and the caller reads
// on. After true the caller must not touch d: another goroutine may own it.
func (d *wsDir) park() bool {
	if !d.state.CompareAndSwap(dirRunning, dirArmed) {
		return false
	}
	if err := d.p.hub.poller.arm(d.fc.raw, d.watch); err != nil {
		// src closed meanwhile (by the other direction, say): read on,
		// and meet the error, unless someone ending the pair took d.
		return !d.state.CompareAndSwap(dirArmed, dirRunning)
	}
	return true
}

// take claims an armed direction for someone about to close its src: true
// means the caller finishes it (after the close); false means src's own
// goroutine will see the close and finish it.
func (d *wsDir) take() bool {
	for {
		switch d.state.Load() {
		case dirArmed:
			if d.state.CompareAndSwap(dirArmed, dirEnded) {
				return true
			}
		case dirRunning:
			// Its goroutine must not park from now on: src's close
			// handshake may still be under way, and once src is closed
			// no readiness would ever come. It reads on and meets the
			// close instead; a linger it is in ends now (frameConn clears
			// the deadline for any read it reaches).
			if d.state.CompareAndSwap(dirRunning, dirClosing) {
				if d.fc != nil {
					_ = d.fc.Conn.SetReadDeadline(time.Now())
				}
				return false
			}
		default: // closing or ended: someone is on it
			return false
		}
	}
}

// finish stops the direction for good.
func (d *wsDir) finish() {
	if d.attachments > 0 { // ended inside a binary packet: chatguard's writes may go on
		d.attachments = 0
		<-d.gate()
	}
	d.state.Store(dirEnded)
	if d.watch != 0 {
		d.p.hub.poller.remove(d.fc.raw, d.watch)
	}
	d.p.finished()
}

// run relays messages until src has been quiet for wsLinger (then parks)
// or the direction ends.
func (d *wsDir) run() {
	p := d.p
	p.hub.readers.Add(1)
	defer p.hub.readers.Add(-1)
	defer func() {
		if v := recover(); v != nil {
			p.hub.s.log.WithFields(logrus.Fields{
				"requestId": p.reqID, logging.FieldCategory: logging.CategorySocket,
				"panic": fmt.Sprint(v), "stack": string(debug.Stack()),
			}).Error("websocket relay panicked; both sides dropped")
			p.abort()
			d.finish()
		}
	}()
	if _, _, err := p.hold(); err != nil { // the pair was ended asleep (hold aborted it)
		d.finish()
		return
	}
	defer p.unhold()
	for {
		ok, drained := d.relayOne()
		if !ok {
			d.finish()
			return
		}
		if drained && d.park() {
			return
		}
	}
}

// wsLinger is how long a direction's goroutine waits for the next message
// (in Go's poller, as any read) before it hands its socket to the readiness
// poller and ends: a busy socket keeps its reader (no poller round per
// message), an idle one holds no goroutine.
const wsLinger = 250 * time.Millisecond

// wsLingerClose bounds how long chatguard reads on after closing a side
// with 1009, for that side's close frame (see frameConn.linger).
const wsLingerClose = 5 * time.Second

var messageBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuffer keeps one huge message from pinning its buffer forever.
const maxPooledBuffer = 64 << 10

// relayOne copies one message from src to dst. ok is false when the
// direction is over (src ended and its close was mirrored onto dst, or dst
// failed); drained is true when, instead of a message, src turned out to
// have nothing left to read (everything received was handled: see
// frameConn), which only a watched direction that may still park asks for.
func (d *wsDir) relayOne() (ok, drained bool) {
	p, h := d.p, d.p.hub
	frames, nbytes, writing := h.metrics.framesUp, h.metrics.bytesUp, &p.writingUp
	if d.from == sideUpstream {
		frames, nbytes, writing = h.metrics.framesDown, h.metrics.bytesDown, &p.writingDn
	}
	ctx := context.Background() // no per-message timer: the janitor watches idle and stalled writes
	// A direction that may park waits wsLinger at most for a message.
	nowait := d.watch != 0 && d.state.Load() == dirRunning
	if nowait {
		d.fc.nowait.Store(true)
	}
	src, dst := d.conns()
	typ, rd, err := src.Reader(ctx)
	if nowait {
		d.fc.nowait.Store(false) // the message itself is read to its end, waiting if need be
	}
	if nowait && errors.Is(err, errWouldBlock) {
		return true, true
	}
	// The buffer is borrowed only while a message is in hand: an idle
	// socket holds none.
	var buf *bytes.Buffer
	streamed := false
	if err == nil {
		buf = messageBuffers.Get().(*bytes.Buffer)
		buf.Reset()
		if d.from == sideUpstream || p.sess == nil {
			// Not inspected whole (the backend's messages, a plain
			// WebSocket's): a message longer than streamAfter goes on
			// frame by frame instead of being held, whatever its size.
			d.head = io.LimitedReader{R: rd, N: streamAfter + 1} // the direction's own: no allocation per message
			_, err = buf.ReadFrom(&d.head)
			d.head.R = nil
			streamed = err == nil && buf.Len() > streamAfter
		} else {
			_, err = buf.ReadFrom(rd)
		}
		if err == nil && !streamed && d.fc.cutShort() {
			err = io.ErrUnexpectedEOF // a message cut by a dropped connection is not a message
		}
	}
	if err != nil {
		putBuffer(buf)
		d.srcFailed(err, src)
		return false, false
	}
	now := time.Now().UnixNano()
	p.last.Store(now)
	msg := buf.Bytes()
	if p.failed.Load() { // invalidText is ending the pair: nothing more goes on
		putBuffer(buf)
		if streamed {
			// Read to its end, or the library would read the rest of
			// its frame as the next frame's header (review: 1002 with a
			// garbage reason instead of the 1007 on its way).
			if err := discardInvalid(rd); !errors.Is(err, errInvalidUTF8) {
				d.srcFailed(err, src)
				return false, false
			}
		}
		return true, false
	}
	if typ == websocket.MessageText && !streamed && !utf8.Valid(msg) {
		putBuffer(buf)
		d.invalidText()
		return true, false
	}
	gate := d.gate() // nil for a plain WebSocket
	if typ == websocket.MessageText && d.attachments > 0 && len(msg) > 0 && msg[0] == byte(socketio.EIOMessage) {
		// A Socket.IO packet inside a binary packet (an Engine.IO ping or
		// pong is not one): the packet is abandoned (the receiving decoder
		// fails on it anyway), and its gate opens before the inspection,
		// whose own writes may need it (review).
		d.attachments = 0
		<-gate
	}
	if p.sess != nil && !streamed { // a streamed message is an event's or an ack's, never the open packet nor a CONNECT
		var forward bool
		if d.from == sideClient {
			forward = p.sess.fromClient(typ, msg)
		} else {
			forward = p.sess.fromUpstream(typ, msg)
		}
		if !forward {
			putBuffer(buf)
			return true, false // taken out (and answered) by the inspection
		}
	}
	packetEnds := false // msg is a binary packet's last attachment: its gate opens after it
	if gate != nil {
		switch {
		case d.attachments > 0 && typ == websocket.MessageBinary:
			d.attachments--
			packetEnds = d.attachments == 0
		case d.attachments == 0 && typ == websocket.MessageText:
			if n := socketio.BinaryAttachments(msg); n > 0 {
				gate <- struct{}{} // after a write of chatguard's in progress (5 s at most)
				d.attachments = n
			}
		}
	}
	// A streamed message holds the library's write lock until its end, which
	// a slow side may take long to reach: it holds the gate too, so that a
	// write of chatguard's waits for it as for a binary packet, and is
	// dropped after its wait, instead of failing on the lock and taking a
	// healthy socket down with it (review).
	streamGate := streamed && gate != nil && d.attachments == 0 && !packetEnds
	if streamGate {
		gate <- struct{}{}
	}
	if streamed && gate != nil { // an attachment too: the packet's gate is held meanwhile (review)
		p.streaming[d.gateIndex()].Store(true)
	}
	frames.Inc()
	writing.Store(now)
	n := int64(len(msg))
	var readErr error
	if streamed {
		n, readErr, err = stream(ctx, dst, typ, msg, rd, writing, &p.last, d.fc)
	} else {
		err = dst.Write(ctx, typ, msg)
	}
	if streamed && gate != nil {
		p.streaming[d.gateIndex()].Store(false)
	}
	if packetEnds || streamGate {
		<-gate
	}
	nbytes.Add(float64(n))
	writing.Store(0)
	putBuffer(buf)
	switch {
	case errors.Is(readErr, errInvalidUTF8):
		d.invalidText() // its close ends dst's unfinished message
		return true, false
	case readErr != nil:
		// src failed in the middle of a streamed message: dst's stays
		// unfinished (finishing it would deliver a cut message as whole),
		// and the close mirrored onto dst ends it.
		d.srcFailed(readErr, src)
		return false, false
	}
	if err != nil {
		if p.ending.Load() {
			// chatguard is ending the pair: end closes src itself, after
			// its close frame. Closed here first (a pong to an upstream
			// that end had just closed), the client got EOF instead of
			// that close (TestSocketIOExpiredUserIsDisconnected, 1-3 %).
			return false, false
		}
		if errors.Is(err, net.ErrClosed) {
			// dst was closed already (the library's 1009 or its answer to
			// a close, a mirrored close, a failed write of chatguard's,
			// the end of the pair): whoever closed it closes src as well,
			// with the close code src is to hear. Taking dst's direction
			// would cut a linger after a 1009 short and reset dst before
			// its peer saw the close; closing src here raced the mirrored
			// close, and a client whose backend closed with 4001 while it
			// was sending got a dropped connection instead (review).
			return false, false
		}
		_ = src.CloseNow()
		// dst is gone, and so is this direction. The library does not
		// close a connection whose write failed: closed here, or nobody
		// would once the other direction (parked, reading dst) is taken
		// and finished below. Left open, its socket and buffers stayed for
		// good (the Conn's finalizer sits in a cycle the GC never frees).
		_ = dst.CloseNow()
		if o := d.other(); o.take() {
			o.finish()
		}
		return false, false
	}
	return true, false
}

// srcFailed ends the direction after src failed (EOF, a close, a reset,
// its read limit): its close mirrored onto the other side.
func (d *wsDir) srcFailed(err error, src *websocket.Conn) {
	d.p.mirrorClose(err, d.other(), d.from)
	if d.fc != nil && isReadLimit(err) && d.state.Load() == dirRunning { // not when someone is ending the pair
		d.fc.linger(wsLingerClose)
	}
	// The library leaves a connection that ended without a close
	// handshake (EOF, a reset, a read limit) open: its socket would stay
	// in CLOSE-WAIT and its descriptor would leak.
	_ = src.CloseNow()
}

// streamAfter is the longest message relayed whole; a longer one that is
// not inspected is streamed. streamChunk is what one read of it takes.
const (
	// Below the pooled size by bytes.Buffer's read margin: its ReadFrom
	// keeps MinRead bytes free, and a head of exactly 64 KiB doubled the
	// buffer past what the pool keeps (review).
	streamAfter = maxPooledBuffer - bytes.MinRead - 1
	streamChunk = 32 << 10
)

// stream writes a message too long to hold to dst: head, the part of it
// already read, then the rest of rd as it comes, a frame per read. readErr
// is rd's failure (the message was cut, and is left unfinished on dst),
// err dst's; fc is src's socket (nil: not watched), last the pair's
// activity mark. writing is the direction's write-start mark, set only while
// a write is out, so that a sender slow to send its message is not taken
// for a stalled receiver. n counts the bytes written.
func stream(ctx context.Context, dst *websocket.Conn, typ websocket.MessageType, head []byte, rd io.Reader, writing, last *atomic.Int64, fc *frameConn) (n int64, readErr, err error) {
	var text *utf8Check // a text message's bytes are checked before they go on
	if typ == websocket.MessageText {
		text = new(utf8Check)
		if !text.valid(head) {
			writing.Store(0) // what follows only reads
			return 0, discardInvalid(rd), nil
		}
	}
	w, err := dst.Writer(ctx, typ)
	if err != nil {
		return 0, nil, err
	}
	if _, err = w.Write(head); err != nil {
		return 0, nil, err
	}
	n = int64(len(head))
	chunk := make([]byte, streamChunk)
	for {
		writing.Store(0)
		m, rerr := rd.Read(chunk)
		if rerr == io.EOF && fc.cutShort() { // before the text check: a cut character is a cut, not bad UTF-8
			return n, io.ErrUnexpectedEOF, nil
		}
		if text != nil && (!text.valid(chunk[:m]) || rerr == io.EOF && !text.done()) {
			return n, discardInvalid(rd), nil
		}
		if m > 0 {
			now := time.Now().UnixNano()
			writing.Store(now)
			last.Store(now) // a long message is activity all along, for websocket.idle_timeout
			if _, err = w.Write(chunk[:m]); err != nil {
				return n, nil, err
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return n, rerr, nil
		}
	}
	writing.Store(time.Now().UnixNano())
	return n, nil, w.Close()
}

// errInvalidUTF8: a text message that is not UTF-8 (RFC 6455 §8.1).
var errInvalidUTF8 = errors.New("proxy: text message is not UTF-8")

// discardInvalid reads the rest of an invalid text message, so that the
// connection stays at a message boundary for its close, and reports
// errInvalidUTF8, or what cut the reading.
func discardInvalid(rd io.Reader) error {
	if _, err := io.Copy(io.Discard, rd); err != nil {
		return err
	}
	return errInvalidUTF8
}

// invalidText ends the pair after a text message that is not UTF-8, which
// is not passed on: a WebSocket endpoint must fail such a connection
// (1007), and a backend's library raises an error on it (ws, unhandled,
// crashes a Node process: QA). From the backend, the client hears 1011.
func (d *wsDir) invalidText() {
	p := d.p
	code, why := websocket.StatusInvalidFramePayloadData, "invalid UTF-8"
	if d.from == sideUpstream {
		code, why = websocket.StatusInternalError, "the upstream sent invalid UTF-8"
	}
	p.hub.s.log.WithFields(logrus.Fields{
		"requestId": p.reqID, logging.FieldCategory: logging.CategorySocket, "from": d.from,
	}).Warn("websocket text message is not UTF-8; socket closed")
	p.failed.Store(true)
	p.hub.background(func() { p.end(sideChatguard, code, why, "malformed") })
}

// utf8Check checks a text message's UTF-8 as it streams: a character may
// be split between two reads.
type utf8Check struct {
	carry [utf8.UTFMax]byte // the start of a character the last read cut
	n     int
}

// valid reports whether p, after what came before, is UTF-8 so far.
func (u *utf8Check) valid(p []byte) bool {
	for u.n > 0 && len(p) > 0 { // finish the carried character
		u.carry[u.n] = p[0]
		u.n++
		p = p[1:]
		if utf8.FullRune(u.carry[:u.n]) {
			if !utf8.Valid(u.carry[:u.n]) {
				return false
			}
			u.n = 0
		}
	}
	if u.n > 0 { // p ended inside the carried character
		return true
	}
	cut := len(p) // hold back a character that p cuts
	for i := len(p) - 1; i >= 0 && i > len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				cut = i
			}
			break
		}
	}
	if !utf8.Valid(p[:cut]) {
		return false
	}
	u.n = copy(u.carry[:], p[cut:])
	return true
}

// done reports whether the message ended on a whole character.
func (u *utf8Check) done() bool { return u.n == 0 }

func putBuffer(b *bytes.Buffer) {
	if b != nil && b.Cap() <= maxPooledBuffer {
		messageBuffers.Put(b)
	}
}

// mirrorClose closes the side o reads the way the other side was closed:
// the peer's close code and reason when it sent one, a dropped connection
// when it dropped. from is the side that closed. The pair is held.
func (p *wsPair) mirrorClose(err error, o *wsDir, from string) {
	if p.counted.Load() {
		// A close was already mirrored onto this side (the first close
		// either way is): what arrives here is its answer. Mirrored back,
		// it would take the other direction in the middle of its own
		// close, a linger after a 1009 say, and reset that connection.
		return
	}
	dst, _ := o.conns()
	if o.take() {
		defer o.finish()
	}
	if p.closing() {
		// chatguard is ending the pair itself, and end closes both sides
		// with its own code. What arrives here is the peer's answer to
		// that close: mirrored, it raced end's close of the other side,
		// and the client could get the upstream's 1001, or a dropped
		// connection, instead of chatguard's 1008.
		return
	}
	code := websocket.CloseStatus(err)
	var ce websocket.CloseError
	reason := ""
	if errors.As(err, &ce) && utf8.ValidString(ce.Reason) {
		reason = ce.Reason // one that is not UTF-8 is not passed on (a backend's library would fail on it)
	}
	if code == -1 && isReadLimit(err) {
		// The library answered the sender 1009 itself; the other side
		// hears the same.
		code, reason, from = websocket.StatusMessageTooBig, "message too big", sideChatguard
	}
	if p.counted.CompareAndSwap(false, true) { // the other side's echo of this close is not another close
		p.hub.metrics.closeCodes.WithLabelValues(from, closeCodeLabel(code)).Inc()
	}
	switch code {
	case -1, websocket.StatusAbnormalClosure, websocket.StatusTLSHandshake:
		_ = dst.CloseNow()
	case websocket.StatusNoStatusRcvd:
		// A close frame without a code: the library sends one for this
		// code, so the other side reads 1005 too, as it would directly
		// (engine.io closes that way; it read 1000).
		_ = dst.Close(websocket.StatusNoStatusRcvd, "")
	default:
		_ = dst.Close(code, reason)
	}
}

// isReadLimit recognises the library's read-limit error: the message was
// bigger than the limit.
func isReadLimit(err error) bool {
	return errors.Is(err, websocket.ErrMessageTooBig)
}

// closing reports whether chatguard started ending the pair itself.
func (p *wsPair) closing() bool {
	select {
	case <-p.done:
		return true
	default:
		return p.ending.Load()
	}
}

// countForced counts the pair's end as a forced disconnect for reason,
// unless its Socket.IO session was disconnected already and counted then (a
// kick whose DISCONNECT was still on its way when the drain, the idle sweep
// or a stalled close came: reviews).
func (p *wsPair) countForced(reason string) {
	if p.sess == nil || !p.sess.wasKicked() {
		p.hub.metrics.forced.WithLabelValues(reason).Inc()
	}
}

// end closes both sides with code and reason, counted as chatguard's close
// for reason (a forced-disconnect label; "" = not forced). It returns when
// both close handshakes are done (or timed out); the pumps then stop and
// close p.done.
func (p *wsPair) end(side string, code websocket.StatusCode, why, reason string) {
	if !p.ending.CompareAndSwap(false, true) {
		return
	}
	if reason != "" {
		p.countForced(reason)
	}
	if !p.counted.Load() {
		// A side's close already mirrored is the pair's one close: a kick
		// racing the client's close counted both (review). Only read:
		// set, counted would make mirrorClose take the peer's answer to
		// this close for a close of its own.
		p.hub.metrics.closeCodes.WithLabelValues(side, closeCodeLabel(code)).Inc()
	}
	takenUp, takenDown := p.up.take(), p.down.take()
	if client, up, err := p.hold(); err == nil {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = client.Close(code, why) }()
		go func() { defer wg.Done(); _ = up.Close(websocket.StatusGoingAway, why) }()
		wg.Wait()
		p.unhold()
	}
	finishTaken(&p.up, takenUp, &p.down, takenDown)
}

// finishTaken finishes the directions that were taken, for the closes that
// took them are done.
func finishTaken(a *wsDir, ta bool, b *wsDir, tb bool) {
	if ta {
		a.finish()
	}
	if tb {
		b.finish()
	}
}

// abort drops both connections without a close handshake.
func (p *wsPair) abort() {
	p.ending.Store(true)
	takenUp, takenDown := p.up.take(), p.down.take()
	p.dropSockets()
	finishTaken(&p.up, takenUp, &p.down, takenDown)
}

// stalled reports a write blocked for longer than d.
func (p *wsPair) stalled(now time.Time, d time.Duration) bool {
	for _, w := range []int64{p.writingUp.Load(), p.writingDn.Load()} {
		if w != 0 && now.Sub(time.Unix(0, w)) > d {
			return true
		}
	}
	return false
}

// readStalled reports whether either side stopped sending in the middle of
// a message more than d ago (see frameConn.stalledMidMessage).
func (p *wsPair) readStalled(now time.Time, d time.Duration) bool {
	for _, fc := range []*frameConn{p.up.fc, p.down.fc} {
		if fc != nil && fc.stalledMidMessage(now, d) {
			return true
		}
	}
	return false
}

// send writes a message chatguard made (an ack, an error event) to the client.
func (p *wsPair) send(msg []byte) error {
	return p.write(msg, true)
}

// holdSide is hold for one side's connection: the client's (toClient) or
// the upstream's. It stays valid until unhold.
func (p *wsPair) holdSide(toClient bool) (*websocket.Conn, error) {
	client, up, err := p.hold()
	if toClient {
		return client, err
	}
	return up, err
}

// errPacketOpen: a write of chatguard's waited for a binary packet being
// relayed to that side to end (5 s for the client's side, whose packets
// come from the app, 1 s for the app's, whose come from a client that may
// hold an attachment back); the message is dropped.
var errPacketOpen = errors.New("proxy: a socket.io binary packet was still being relayed")

// write sends msg to the client (toClient) or the upstream, between
// Socket.IO packets (see gates).
func (p *wsPair) write(msg []byte, toClient bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	idx, wait := gateUpstream, time.Second
	if toClient {
		idx, wait = gateClient, 5*time.Second
	}
	if gate := p.gates[idx]; gate != nil {
		// In steps of streamWait: a streamed message found holding the
		// gate at any step (it may have taken it after this wait began)
		// drops the write at once (see wsPair.streaming).
		t := time.NewTimer(streamWait)
		defer t.Stop()
		for waited := time.Duration(0); ; {
			select {
			case gate <- struct{}{}:
				defer func() { <-gate }()
			case <-t.C:
				waited += streamWait
				if waited >= wait || p.streaming[idx].Load() {
					return errPacketOpen
				}
				t.Reset(streamWait)
				continue
			}
			break
		}
	}
	c, err := p.holdSide(toClient)
	if err != nil {
		return err
	}
	defer p.unhold()
	err = c.Write(ctx, websocket.MessageText, msg)
	if err != nil {
		p.writeFailed(toClient, err)
	}
	return err
}

// writeFailed ends the pair after a write of chatguard's own to one side
// failed (a message, a relayed ping): that connection is unusable (the
// library leaves it open, or closed it itself). Closing it alone was not
// enough: the direction reading it, waiting in the poller, never hears of a
// closed socket, and the pair, its user's presence and its client's
// admission slot stayed for good (review). The client hears 1011 and the
// app 1001, as when chatguard ends a pair for any reason. A close already
// under way ends the pair by itself: a mirrored one, chatguard's, or one
// the peer sent, which the library answered and closed the connection on
// (net.ErrClosed) before the mirror began; ended here too, the other side
// heard 1011 instead of the peer's code (review: 30 in 400 pings).
func (p *wsPair) writeFailed(toClient bool, err error) {
	if errors.Is(err, net.ErrClosed) || p.counted.Load() || p.closing() {
		return
	}
	why := "the upstream connection failed"
	if toClient {
		why = "the client connection failed"
	}
	if !p.hub.background(func() { p.end(sideChatguard, websocket.StatusInternalError, why, "") }) {
		p.abort()
	}
}

// sendUp writes a message chatguard made to the upstream.
func (p *wsPair) sendUp(msg []byte) error {
	return p.write(msg, false)
}
