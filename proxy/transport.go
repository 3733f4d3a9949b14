package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	apierrors "github.com/chatguard/chatguard/errors"
)

// upstreamTransport is a lean HTTP/1.1 client for one plain-HTTP upstream,
// used in place of http.Transport for http:// upstreams. A request runs on
// the calling goroutine from write to last body byte: no per-connection
// reader and writer goroutines, no hand-offs between them, which is where
// http.Transport spends much of a small proxied request's CPU.
//
// Idle connections are kept in a LIFO stack. Before one is reused, a
// non-blocking peek checks that the upstream has not closed it (Node closes
// idle keep-alive connections after 5 s); a request that fails on a reused
// connection before any response byte arrived is sent once more on a fresh
// one when its body can be replayed (or it has none), and either the
// connection had been idle long enough (unsafeReuseIdle) for the upstream
// to be closing it for idleness, or it was reset (the request unread): one
// that closes cleanly right after a request on it was busy is the app's
// failure, and repeating the request would run it twice (two crashed
// workers for one request of death, QA).
type upstreamTransport struct {
	addr                  string
	dialer                *net.Dialer
	maxIdle               int
	idleTimeout           time.Duration
	responseHeaderTimeout time.Duration
	now                   func() time.Time

	mu        sync.Mutex // guards idle, reaper, reapArmed, reapAt
	idle      []*upstreamConn
	reaper    *time.Timer // closes expired idle connections while no request comes
	reapArmed bool
	reapAt    time.Time // when the armed reaper fires
}

// unsafeReuseIdle: a request that could not be sent again (a POST) goes only
// on a connection idle for less than this, else on a new one. An upstream
// closes an idle connection (Node's keep-alive timer) when it has been
// idle for its whole timeout; a request sent at that moment is lost with
// it, and a POST cannot be repeated.
const unsafeReuseIdle = time.Second

type upstreamConn struct {
	c        net.Conn
	cr       *countingReader // under br: bytes received on this connection
	br       *bufio.Reader
	bw       *bufio.Writer
	lastUsed time.Time
	// maxIdle is how long it may wait in the pool: the transport's idle
	// timeout, or less when the upstream's Keep-Alive header said so.
	maxIdle time.Duration

	// cancelled is set by the request's context: every deadline change must
	// then keep the connection's deadline in the past (see setReadDeadline).
	cancelled atomic.Bool

	// raw and peek are alive's, made at the first check and kept: built
	// afresh they were two allocations on every reuse.
	raw     syscall.RawConn
	peek    func(fd uintptr) bool
	peekRes bool
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
	// headEnd, when not zero, is the count past which a response head is
	// refused: set by the goroutine that reads the head, while it does.
	headEnd int64
}

// maxResponseHead bounds an upstream response's status line and headers
// (1xx responses included). http.Transport allows 10 MB and nginx 4–8 KiB
// (then 502 "upstream sent too big header"); a Node app sends a few KiB.
const maxResponseHead = 1 << 20

var errResponseHeadTooLarge = fmt.Errorf("%w: response headers over %d bytes", apierrors.ErrBadResponse, maxResponseHead)

func (c *countingReader) Read(p []byte) (int, error) {
	if c.headEnd != 0 && c.n.Load() >= c.headEnd {
		return 0, errResponseHeadTooLarge
	}
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// setReadDeadline moves the read deadline unless the request was cancelled,
// whose deadline in the past must win.
func (pc *upstreamConn) setReadDeadline(t time.Time) {
	if pc.cancelled.Load() {
		return
	}
	_ = pc.c.SetReadDeadline(t)
	if pc.cancelled.Load() { // cancelled meanwhile: put it back in the past
		_ = pc.c.SetDeadline(aLongTimeAgo)
	}
}

var aLongTimeAgo = time.Unix(1, 0)

func newUpstreamTransport(addr string, dialTimeout, idleTimeout, responseHeaderTimeout time.Duration, maxIdle int) *upstreamTransport {
	return &upstreamTransport{
		addr:                  addr,
		dialer:                &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		maxIdle:               maxIdle,
		idleTimeout:           idleTimeout,
		responseHeaderTimeout: responseHeaderTimeout,
		now:                   time.Now,
	}
}

// CloseIdleConnections closes every idle connection.
func (t *upstreamTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	if t.reaper != nil {
		t.reaper.Stop()
	}
	t.reapArmed = false
	t.mu.Unlock()
	for _, pc := range idle {
		_ = pc.c.Close()
	}
}

// get returns a live idle connection, or dials a new one. A request that
// could not be sent again (safe false) takes only a connection idle for
// less than unsafeReuseIdle. idle is how long a reused one sat in the pool.
func (t *upstreamTransport) get(ctx context.Context, safe bool) (pc *upstreamConn, reused bool, idle time.Duration, err error) {
	now := t.now()
	for {
		t.mu.Lock()
		n := len(t.idle)
		if n == 0 {
			t.mu.Unlock()
			break
		}
		pc = t.idle[n-1] // the least idle: the stack's top
		if !safe && now.Sub(pc.lastUsed) >= unsafeReuseIdle {
			t.mu.Unlock() // left for a request that can be repeated
			break
		}
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		if pc.expired(now) || !pc.alive() {
			_ = pc.c.Close()
			continue
		}
		return pc, true, now.Sub(pc.lastUsed), nil
	}
	c, err := t.dialer.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, false, 0, err
	}
	cr := &countingReader{r: c}
	return &upstreamConn{c: c, cr: cr, br: bufio.NewReaderSize(cr, 16<<10), bw: bufio.NewWriterSize(c, 16<<10), maxIdle: t.idleTimeout}, false, 0, nil
}

// expired: idle in the pool for longer than it may be.
func (pc *upstreamConn) expired(now time.Time) bool {
	return pc.maxIdle > 0 && now.Sub(pc.lastUsed) > pc.maxIdle
}

// keepAliveFor is how long the upstream said it keeps an idle connection
// (Node: "Keep-Alive: timeout=5", its keepAliveTimeout in seconds), less a
// margin: a second, or half of a timeout of 2 s or less; a nanosecond for
// timeout=0. 0 when it did not say.
func keepAliveFor(h http.Header) time.Duration {
	for _, v := range h.Values("Keep-Alive") {
		for _, p := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(k), "timeout") {
				continue
			}
			n, err := strconv.Atoi(strings.TrimSpace(val))
			if err != nil || n < 0 {
				return 0
			}
			if n == 0 { // Node's keepAliveTimeout under 1 s, floored: do not pool
				return time.Nanosecond
			}
			d := time.Duration(n) * time.Second
			if d <= 2*time.Second {
				return d / 2
			}
			return d - time.Second
		}
	}
	return 0
}

// put returns a connection whose last exchange completed cleanly.
func (t *upstreamTransport) put(pc *upstreamConn) {
	if pc.br.Buffered() > 0 { // unsolicited bytes: the stream is out of step
		_ = pc.c.Close()
		return
	}
	now := t.now()
	pc.lastUsed = now
	t.mu.Lock()
	// The bottom of the stack is the longest idle: reap what has expired
	// there, so that a steady trickle of traffic on the top cannot leave
	// closed connections below it forever.
	stale := t.expiredLocked(now)
	if len(t.idle) < t.maxIdle {
		t.idle = append(t.idle, pc)
		pc = nil
		if d := t.idle[len(t.idle)-1].maxIdle; d > 0 {
			t.armReaperLocked(now, d)
		}
	}
	t.mu.Unlock()
	if pc != nil {
		_ = pc.c.Close()
	}
	for _, c := range stale {
		_ = c.c.Close()
	}
}

// expiredLocked takes the expired connections off the bottom of the stack.
func (t *upstreamTransport) expiredLocked(now time.Time) (stale []*upstreamConn) {
	for len(t.idle) > 0 && t.idle[0].expired(now) {
		stale = append(stale, t.idle[0])
		t.idle = t.idle[1:]
	}
	return stale
}

// armReaperLocked makes the reaper fire within d (a connection just
// pooled expires then), unless it fires sooner already.
func (t *upstreamTransport) armReaperLocked(now time.Time, d time.Duration) {
	at := now.Add(d)
	switch {
	case t.reaper == nil:
		t.reaper = time.AfterFunc(d, t.reap)
	case t.reapArmed && !at.Before(t.reapAt):
		return
	default:
		t.reaper.Reset(d)
	}
	t.reapArmed, t.reapAt = true, at
}

// reap closes the idle connections that expired while no request came:
// the upstream has closed them by now (Node after 5 s), and each would
// hold a descriptor in CLOSE-WAIT until the next request. Connections may
// expire in any order (the upstream's Keep-Alive header sets each one's
// time): all are looked at, and it runs again when the next one expires.
func (t *upstreamTransport) reap() {
	now := t.now()
	var stale []*upstreamConn
	t.mu.Lock()
	t.reapArmed = false
	kept := t.idle[:0]
	var next time.Duration
	for _, pc := range t.idle {
		if pc.expired(now) {
			stale = append(stale, pc)
			continue
		}
		kept = append(kept, pc)
		if pc.maxIdle > 0 {
			if d := pc.lastUsed.Add(pc.maxIdle).Sub(now); next == 0 || d < next {
				next = d
			}
		}
	}
	clear(t.idle[len(kept):])
	t.idle = kept
	if next > 0 {
		t.armReaperLocked(now, max(next, 10*time.Millisecond))
	}
	t.mu.Unlock()
	for _, c := range stale {
		_ = c.c.Close()
	}
}

// alive peeks at an idle connection without blocking: nothing to read means
// alive; end of stream (or stray data) means the upstream is done with it.
// Only the goroutine that took pc from the pool calls it.
func (pc *upstreamConn) alive() bool {
	if pc.peek == nil {
		sc, ok := pc.c.(syscall.Conn)
		if !ok {
			return true
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		var buf [1]byte
		pc.raw = raw
		pc.peek = func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			pc.peekRes = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
			return true // never wait
		}
	}
	pc.peekRes = false
	rerr := pc.raw.Read(pc.peek)
	return rerr == nil && pc.peekRes
}

// RoundTrip sends req and returns the response; its body owns the connection.
func (t *upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		pc, reused, idle, err := t.get(req.Context(), retryable(req))
		if err != nil {
			return nil, err
		}
		resp, gotBytes, err := t.exchange(pc, req)
		if err == nil {
			return resp, nil
		}
		_ = pc.c.Close()
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		// A reset says the upstream closed the connection with the request
		// unread (Node's closeIdleConnections on shutdown, at any idle
		// age); a clean close after it was busy lately is the app's own
		// failure (review: the reset case had become a 502). A timeout is
		// the app being slow with the request in hand: sending it again
		// would run it twice and make the client wait twice (QA).
		if reused && attempt == 0 && !gotBytes && retryable(req) && !errors.Is(err, os.ErrDeadlineExceeded) &&
			(idle >= unsafeReuseIdle || errors.Is(err, syscall.ECONNRESET)) {
			infoFrom(req.Context()).retried = true
			if req.GetBody != nil {
				if req.Body, err = req.GetBody(); err != nil {
					return nil, err
				}
			}
			continue
		}
		return nil, err
	}
}

// recordingBody keeps the error a request body's reader returned, which
// Request.Write does not pass on as such.
type recordingBody struct {
	io.ReadCloser
	err *error
}

func (r *recordingBody) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && *r.err == nil {
		*r.err = err
	}
	return n, err
}

// retryable says whether a request that died on a reused connection before
// any response byte may be sent again, with net/http's rule: an idempotent
// method (or an Idempotency-Key), and a body that can be sent again. The
// upstream may have acted on it: a POST is never repeated blindly.
func retryable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// exchange writes req on pc and reads the response head. gotBytes reports
// whether any of the response arrived (then a retry would be wrong).
func (t *upstreamTransport) exchange(pc *upstreamConn, req *http.Request) (*http.Response, bool, error) {
	ctx := req.Context()
	pc.cancelled.Store(false)
	_ = pc.c.SetDeadline(time.Time{})
	// A cancelled request unblocks whatever I/O is in progress.
	stop := context.AfterFunc(ctx, func() {
		pc.cancelled.Store(true)
		_ = pc.c.SetDeadline(aLongTimeAgo)
	})
	received := pc.cr.n.Load() + int64(pc.br.Buffered())

	var bodyErr error
	if req.Body != nil && req.Body != http.NoBody {
		if req.ContentLength < 0 || req.ContentLength > streamBodyBytes {
			return t.exchangeStreaming(pc, req, stop, received)
		}
		req.Body = &recordingBody{ReadCloser: req.Body, err: &bodyErr}
	}
	werr := req.Write(pc.bw)
	if werr == nil {
		werr = pc.bw.Flush()
	}
	if bodyErr != nil && !errors.Is(bodyErr, io.EOF) {
		stop()
		return nil, false, clientBodyError(ctx, bodyErr)
	}
	// The head may be read ahead of by one buffer of body: the limit counts from here.
	pc.cr.headEnd = pc.cr.n.Load() + maxResponseHead + int64(pc.br.Size()) // reset by adoptBody; error paths close pc
	if werr != nil {
		// The upstream may have answered before taking the whole body
		// (a 413 from the app): read what it said, briefly.
		pc.setReadDeadline(t.now().Add(time.Second))
		if resp, err := readResponse(pc, req); err == nil {
			pc.setReadDeadline(time.Time{})
			resp.Close = true
			infoFrom(ctx).bodyLeft = true
			t.adoptBody(pc, resp, stop)
			return resp, true, nil
		}
		stop()
		return nil, false, werr
	}
	if t.responseHeaderTimeout > 0 {
		pc.setReadDeadline(t.now().Add(t.responseHeaderTimeout))
	}
	resp, got, err := t.readHead(pc, req, received)
	if err != nil {
		stop()
		return nil, got, err
	}
	pc.setReadDeadline(time.Time{})
	t.adoptBody(pc, resp, stop)
	return resp, true, nil
}

// streamBodyBytes: a request body larger than this, or of unknown length
// (chunked), is written while the response is read (exchangeStreaming); a
// smaller one fits the socket's buffers and is written first.
const streamBodyBytes = 64 << 10

// clientBodyError is what the client's body failing means: too large
// (413), cut off (the client left), or malformed (a bad chunk).
func clientBodyError(ctx context.Context, bodyErr error) error {
	var tooLarge *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(bodyErr, &tooLarge), errors.Is(bodyErr, errBodyTimeout):
		return bodyErr
	case errors.Is(bodyErr, io.ErrUnexpectedEOF), errors.As(bodyErr, &netErr), errors.Is(bodyErr, net.ErrClosed),
		errors.Is(bodyErr, syscall.ECONNRESET), ctx.Err() != nil:
		return fmt.Errorf("%w: %v", apierrors.ErrClientGone, bodyErr)
	}
	// The body arrived but does not parse: a malformed chunk.
	return fmt.Errorf("%w: %v", apierrors.ErrBadRequestBody, bodyErr)
}

// exchangeStreaming is exchange for a large or chunked body: a goroutine
// writes the request while this one reads the response, so that an
// upstream answering before it took the whole body (the app's own 413, an
// auth failure on an upload) is heard at once, as http.Transport and nginx
// hear it, not once the upload is over (or never, from an upstream that
// stopped reading). Such an early refusal (3xx and up) closes the
// connection; the writer then ends on its own (ReverseProxy closes the
// client's body when the handler returns). An early 2xx is an app that
// answers while it reads (req.pipe(res), upload progress, "accepted" then
// a summary): the body keeps flowing to it while the answer flows back,
// full duplex, as directly and through nginx; if the client's body then
// fails, the upstream connection is closed, so that the answer is cut
// rather than the app left waiting for bytes that will not come (a client
// that only pauses is waited for: the upstream, waiting too, meets the
// response body timeout). The
// response-header timeout starts when the body is written, as with
// http.Transport.
func (t *upstreamTransport) exchangeStreaming(pc *upstreamConn, req *http.Request, stop func() bool, received int64) (*http.Response, bool, error) {
	ctx := req.Context()
	var bodyErr error
	gate := &gatedBody{ReadCloser: req.Body}
	req.Body = &recordingBody{ReadCloser: gate, err: &bodyErr}
	pc.cr.headEnd = pc.cr.n.Load() + maxResponseHead + int64(pc.br.Size())
	var mu sync.Mutex // orders the writer's verdict and the head's arrival
	headRead, wrote, duplex := false, false, false
	written := make(chan error, 1)
	go func() {
		werr := req.Write(pc.bw)
		if werr == nil {
			werr = pc.bw.Flush()
		}
		mu.Lock()
		wrote = true
		switch {
		case headRead:
			if duplex && (werr != nil || bodyErr != nil && !errors.Is(bodyErr, io.EOF)) {
				// The app reads on while it answers, and the rest of the
				// body will not come: cut the answer (the client sees it
				// cut) rather than leave the app waiting.
				_ = pc.c.Close()
			}
		case bodyErr != nil && !errors.Is(bodyErr, io.EOF):
			// The upstream waits for the rest of a body that will not come.
			pc.setReadDeadline(aLongTimeAgo)
		case werr == nil && t.responseHeaderTimeout > 0:
			pc.setReadDeadline(t.now().Add(t.responseHeaderTimeout))
		}
		mu.Unlock()
		written <- werr
	}()
	resp, got, err := t.readHead(pc, req, received)
	fullDuplex := err == nil && resp.StatusCode < 300 && enableFullDuplex(ctx)
	mu.Lock()
	headRead = true
	early := !wrote
	duplex = early && fullDuplex
	mu.Unlock()
	if err == nil {
		pc.setReadDeadline(time.Time{})
		if duplex && infoFrom(ctx).expect && resp.ContentLength >= 0 && resp.ContentLength <= streamBodyBytes {
			// net/http closes the connection of an Expect: 100-continue
			// request whose answer goes out before its body ended, and the
			// client (curl) then stops sending it: an app that answered at
			// once (202) and reads on lost the rest (QA). A small answer
			// is held until the body went out instead.
			return t.holdAnswer(pc, resp, stop, written, gate, &bodyErr)
		}
		if duplex {
			// As after a refusal, a pause in the client's body no longer
			// cuts an answer on its way: an upstream waiting for the rest
			// meets the response body timeout instead.
			info := infoFrom(ctx)
			info.idle.disarm()
			readsOn := !resp.Close // an app that says close reads no more
			resp.Close = true      // the writer may still be writing: no reuse
			if resp.Body == http.NoBody {
				// A 204, or a 202 of no length: a body all the same, so
				// that settle runs when ReverseProxy reads its end (review:
				// the connection closed at once, and the upload with it).
				resp.Body = io.NopCloser(bytes.NewReader(nil))
			}
			// ReverseProxy flushes a streamed answer (chunked, an event
			// stream) itself, from a timer of its own at first: only an
			// answer of known length is flushed here (a flush of ours then
			// raced with that timer's).
			mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			flush := resp.ContentLength >= 0 && mt != "text/event-stream"
			t.adoptBody(pc, resp, stop)
			if ub, ok := resp.Body.(*upstreamBody); !ok {
				info.bodyLeft, info.closeConn = true, true // never here: as after a refusal
			} else {
				ub.settle = func(complete bool) {
					switch {
					case complete && readsOn:
						duplexSettle(info, written, gate, pc, flush)
					case complete:
						// The rest of the body is read and dropped for a
						// while, then the connection closes, as after a
						// refusal.
						info.bodyLeft = true
						info.closeConn = true
					}
				}
			}
			return resp, true, nil
		} else if early {
			// The writer starts no read of the client's body once the
			// answer is on its way to the client (one in progress ends with
			// the client's next bytes, or the server's close of the body).
			gate.cut()
			info := infoFrom(ctx)
			info.idle.disarm()
			info.bodyLeft = true
			resp.Close = true // the rest of the body may be on its way: no reuse
		} else if werr := <-written; bodyErr != nil && !errors.Is(bodyErr, io.EOF) && resp.StatusCode < 300 {
			// The client's body failed (over the limit, stalled,
			// malformed) before a success came: the body's own answer
			// (413, 408, 400), as when the success is held (holdAnswer);
			// which of the two the writer or the answer reached first
			// decided it (a flaky test: 202 instead of 413).
			stop()
			_ = pc.c.Close()
			return nil, false, clientBodyError(ctx, bodyErr)
		} else if werr != nil || bodyErr != nil && !errors.Is(bodyErr, io.EOF) {
			resp.Close = true // answered, but the request did not go out whole
		}
		t.adoptBody(pc, resp, stop)
		return resp, true, nil
	}
	stop()
	_ = pc.c.Close() // a writer still writing fails now
	var werr error
	select {
	case werr = <-written:
	case <-time.After(time.Second): // blocked reading a slow client's body: it ends on its own
		return nil, got, err
	}
	if bodyErr != nil && !errors.Is(bodyErr, io.EOF) {
		return nil, false, clientBodyError(ctx, bodyErr)
	}
	if werr != nil && !got {
		return nil, false, werr
	}
	return nil, got, err
}

// duplexSettle runs when the app's whole answer to a full-duplex upload
// is read: an app may answer at once (202) and read on, so the upstream
// connection is kept until the writer has sent the rest of the body (QA:
// the rest was dropped and the app's request never ended). The answer goes
// to the client first; the client's body timeout applies again meanwhile.
//
// The writer is waited for while it makes progress: a read of the client's
// body at least each server.body_read_timeout (which also ends a client
// that stalls); an upstream that stopped reading shows as none, and its
// connection is closed (which ends the writer). With that timeout 0, for
// as long as it takes.
func duplexSettle(info *reqInfo, written <-chan error, body *gatedBody, pc *upstreamConn, flush bool) {
	if flush {
		_ = info.idle.rc.Flush()
	}
	info.idle.rearm()
	if !waitWriter(info.idle.timeout, written, body, pc) || !info.idle.eof.Load() {
		// The body did not arrive whole: the client's connection closes
		// after the answer, rather than wait for a next request.
		info.closeConn = true
	}
}

// waitWriter waits for the writer of a full-duplex exchange while it makes
// progress (see duplexSettle); false when it was stopped for the lack of it.
func waitWriter(idle time.Duration, written <-chan error, body *gatedBody, pc *upstreamConn) bool {
	if idle <= 0 {
		<-written
		return true
	}
	tick := time.NewTicker(max(idle/4, 10*time.Millisecond))
	defer tick.Stop()
	last, since := body.n.Load(), time.Now()
	for {
		select {
		case <-written:
			return true
		case now := <-tick.C:
			if n := body.n.Load(); n != last {
				last, since = n, now
			} else if now.Sub(since) > idle {
				_ = pc.c.Close()
				<-written
				return false
			}
		}
	}
}

// holdAnswer waits for the writer to send the rest of the body (see
// waitWriter), then reads the small early answer whole and hands it on.
// The answer is read after the body, whose end the app may wait for before
// it writes the rest of its answer; it is small enough for the sockets'
// buffers meanwhile. A body that failed gets its own answer (413, 408,
// 400), as the head has not gone out. bodyErr is the writer's, read once it
// is done.
func (t *upstreamTransport) holdAnswer(pc *upstreamConn, resp *http.Response, stop func() bool, written <-chan error, body *gatedBody, bodyErr *error) (*http.Response, bool, error) {
	ctx := resp.Request.Context()
	info := infoFrom(ctx)
	if !waitWriter(info.idle.timeout, written, body, pc) {
		stop()
		_ = pc.c.Close()
		return nil, false, clientBodyError(ctx, errBodyTimeout)
	}
	if err := *bodyErr; err != nil && !errors.Is(err, io.EOF) {
		stop()
		_ = pc.c.Close()
		return nil, false, clientBodyError(ctx, err)
	}
	if t.responseHeaderTimeout > 0 {
		pc.setReadDeadline(t.now().Add(t.responseHeaderTimeout))
	}
	b, err := io.ReadAll(resp.Body)
	pc.setReadDeadline(time.Time{})
	if err != nil {
		stop()
		_ = pc.c.Close()
		return nil, true, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.Close = true // the writer wrote on it: not reused
	t.adoptBody(pc, resp, stop)
	return resp, true, nil
}

// enableFullDuplex lets the request's handler write its answer while the
// client's body is still being read: net/http otherwise reads (and drops)
// up to 256 KiB of an HTTP/1 body before the answer's head goes out, or
// closes the connection. False for a request that has no client body
// (chatguard's own on a polling session's behalf) or cannot.
func enableFullDuplex(ctx context.Context) bool {
	info := infoFrom(ctx)
	return info.idle != nil && info.idle.rc.EnableFullDuplex() == nil
}

// gatedBody is a client's request body whose reads can be cut off.
type gatedBody struct {
	io.ReadCloser
	mu    sync.Mutex
	isCut bool
	n     atomic.Int64 // bytes read
}

var errBodyCut = errors.New("proxy: the upstream answered before the whole body was sent")

func (g *gatedBody) Read(p []byte) (int, error) {
	g.mu.Lock()
	isCut := g.isCut
	g.mu.Unlock()
	if isCut {
		return 0, errBodyCut
	}
	n, err := g.ReadCloser.Read(p)
	g.n.Add(int64(n))
	return n, err
}

func (g *gatedBody) cut() {
	g.mu.Lock()
	g.isCut = true
	g.mu.Unlock()
}

// readResponse is http.ReadResponse that keeps the Connection field.
// ReadResponse deletes it when it says close, and with it the names of the
// fields it makes hop-by-hop ("Connection: close, X-Secret"), which the
// proxy's removal of hop-by-hop fields then never saw, and X-Secret
// reached the client (QA; RFC 9110 7.6.1 says a proxy must remove it). The
// field is put back from the buffer ReadResponse read the head from: only
// when ReadResponse read nothing more from the connection (the whole head
// had arrived), since a refill moves other bytes, the body's among them,
// under that view (review). A head that came in more than one read loses
// the field as before.
func readResponse(pc *upstreamConn, req *http.Request) (*http.Response, error) {
	if _, err := pc.br.Peek(1); err != nil {
		return nil, err // what ReadResponse would return for no bytes at all
	}
	buf, _ := pc.br.Peek(pc.br.Buffered())
	read := pc.cr.n.Load()
	resp, err := http.ReadResponse(pc.br, req)
	if err != nil || !resp.Close || len(resp.Header["Connection"]) > 0 || pc.cr.n.Load() != read {
		return resp, err
	}
	// The head's lines as textproto reads them (CRLF or a bare LF), up to
	// the first empty one.
	for first := true; len(buf) > 0; first = false {
		line, rest, ok := bytes.Cut(buf, []byte("\n"))
		if !ok {
			break
		}
		buf = rest
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); !first && ok && strings.EqualFold(string(name), "Connection") {
			resp.Header["Connection"] = append(resp.Header["Connection"], textproto.TrimString(string(value)))
		}
	}
	return resp, nil
}

// readHead reads the response head, passing 1xx responses to the client
// trace. got reports whether any of the response arrived.
func (t *upstreamTransport) readHead(pc *upstreamConn, req *http.Request, received int64) (resp *http.Response, got bool, err error) {
	trace := httptrace.ContextClientTrace(req.Context())
	for informational := 0; ; informational++ {
		resp, err := readResponse(pc, req)
		if err != nil {
			got := pc.cr.n.Load() > received // even bytes ReadResponse consumed before failing
			return nil, got, classifyReadError(err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			// Informational (103 Early Hints): hand it to the proxy, read on
			// (at most 5, as net/http allows).
			if informational >= 5 {
				return nil, true, errors.New("proxy: too many 1xx responses from the upstream")
			}
			if trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(resp.StatusCode, map[string][]string(resp.Header)); err != nil {
					return nil, true, err
				}
			}
			continue
		}
		if resp.StatusCode < 100 || resp.StatusCode > 599 {
			// net/http would panic writing 099 and pass 600–999 on to a
			// client that cannot know what they mean.
			return nil, true, fmt.Errorf("%w: status %d", apierrors.ErrBadResponse, resp.StatusCode)
		}
		return resp, true, nil
	}
}

// classifyReadError turns a read-deadline expiry into a timeout error the
// proxy reports as UPSTREAM_TIMEOUT, and keeps everything else.
func classifyReadError(err error) error {
	var netErr net.Error
	switch {
	case errors.Is(err, io.EOF):
		return io.ErrUnexpectedEOF
	case errors.Is(err, apierrors.ErrBadResponse):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &netErr), errors.Is(err, syscall.ECONNRESET):
		return err
	}
	// Not a read failure: http.ReadResponse refused what it read
	// ("malformed HTTP status code", a bad header line).
	return fmt.Errorf("%w: %v", apierrors.ErrBadResponse, err)
}

// adoptBody makes resp.Body own pc: reading it to the end returns pc to the
// pool when the exchange allows keep-alive; closing it early closes pc.
func (t *upstreamTransport) adoptBody(pc *upstreamConn, resp *http.Response, stop func() bool) {
	// The head is read: lift its limit now, before pc can go back to the
	// pool (a bodiless response returns it below) and another request set
	// its own.
	pc.cr.headEnd = 0
	if d := keepAliveFor(resp.Header); d > 0 && (pc.maxIdle == 0 || d < pc.maxIdle) {
		pc.maxIdle = d
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &upgradedBody{pc: pc, stop: stop}
		return
	}
	keep := !resp.Close && !resp.Request.Close
	if resp.Body == http.NoBody || resp.Body == nil {
		if stop() && keep {
			t.put(pc)
		} else {
			_ = pc.c.Close()
		}
		resp.Body = http.NoBody
		return
	}
	resp.Body = &upstreamBody{rc: resp.Body, pc: pc, t: t, stop: stop, keep: keep, ctx: resp.Request.Context()}
}

// upstreamBody is a response body that owns its connection. Close may be
// called while a Read is in progress (a timer giving up on a stalled body):
// the connection is then closed, which ends the Read.
type upstreamBody struct {
	rc   io.ReadCloser
	pc   *upstreamConn
	t    *upstreamTransport
	stop func() bool
	keep bool
	ctx  context.Context
	done atomic.Bool
	// settle, when set, runs once the body ends, before the connection is
	// released (complete: read to its end).
	settle  func(complete bool)
	eofNext bool // the last bytes were handed out without their io.EOF: the next Read ends the body
	// idle: proxy.response_body_timeout, as a read deadline pushed before
	// a Read (at most each eighth of it); armedAt: when it last was.
	idle    time.Duration
	armedAt atomic.Int64 // Close may come from another goroutine than Read
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, io.EOF
	}
	if b.eofNext {
		b.finish(true)
		return 0, io.EOF
	}
	if b.idle > 0 {
		now := b.t.now()
		if now.UnixNano()-b.armedAt.Load() >= min(int64(b.idle)/8, int64(time.Second)) {
			b.pc.setReadDeadline(now.Add(b.idle))
			b.armedAt.Store(now.UnixNano())
		}
	}
	n, err := b.rc.Read(p)
	if b.idle > 0 && err != nil && err != io.EOF {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && b.ctx.Err() == nil {
			err = fmt.Errorf("upstream response body: nothing for %s (proxy.response_body_timeout): %w", b.idle, context.DeadlineExceeded)
		}
	}
	switch {
	case err == io.EOF && n > 0 && b.settle != nil:
		// settle may wait (a full-duplex upload): these bytes go on to
		// the client first, and the next Read ends the body.
		b.eofNext = true
		err = nil
	case err == io.EOF:
		b.finish(true)
	case err != nil:
		b.finish(false)
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			err = ctxErr // the client left: say so, not "i/o timeout"
		}
	}
	return n, err
}

func (b *upstreamBody) Close() error {
	b.finish(false)
	return nil
}

// finish releases the connection, once: back to the pool after a complete
// body, closed otherwise.
func (b *upstreamBody) finish(complete bool) {
	if !b.done.CompareAndSwap(false, true) {
		return
	}
	if b.settle != nil {
		b.settle(complete)
	}
	if b.stop() && complete && b.keep {
		if b.armedAt.Load() != 0 {
			b.pc.setReadDeadline(time.Time{}) // the next request on it sets its own
		}
		b.t.put(b.pc)
		return
	}
	_ = b.pc.c.Close()
}

// upgradedBody is the body of a 101 response: the raw connection, both ways,
// as httputil.ReverseProxy expects for an upgrade.
type upgradedBody struct {
	pc   *upstreamConn
	stop func() bool
	once sync.Once
}

func (u *upgradedBody) Read(p []byte) (int, error)  { return u.pc.br.Read(p) }
func (u *upgradedBody) Write(p []byte) (int, error) { return u.pc.c.Write(p) }
func (u *upgradedBody) Close() error {
	var err error
	u.once.Do(func() {
		u.stop()
		err = u.pc.c.Close()
	})
	return err
}
