package proxy

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// An idle relayed WebSocket sleeps: after wsSleepAfter without a message
// either way, with both directions parked in the readiness poller, the pair
// retires its two library connections and keeps only the two sockets. A
// library connection holds its read and write buffers for its whole life
// (the upstream side's are coder/websocket's own 4 KiB each, which no
// option shrinks), and most chat sockets are idle most of the time: asleep,
// a pair costs its sockets, the frame tallies and chatguard's own state.
//
// The first use after that (a message either way, a close, a message
// chatguard sends) wraps each socket in a new library connection again,
// through the library's own Accept and Dial over a handshake that never
// leaves the process (see rewrapClient and rewrapUpstream). A socket sleeps
// only at a frame boundary, outside a fragmented message, with nothing
// buffered above it and no write under way, and without compression (whose
// context a new connection would not have): the new connection starts where
// the old one stopped.
const wsSleepAfter = 2 * time.Second

// wsSock is a socket as one library connection sees it. Once that
// connection is retired its Close does nothing: the library closes its
// transport when a connection is closed or collected, and the socket lives
// on under the next one.
type wsSock struct {
	*frameConn
	retired atomic.Bool
}

func newWSSock(fc *frameConn) *wsSock { return &wsSock{frameConn: fc} }

func (s *wsSock) Close() error {
	if s.retired.Load() {
		return nil
	}
	return s.frameConn.Close()
}

// canSleep: both sides are watched sockets and nothing needs a connection's
// history. It never changes for a pair (newPair sets p.sleepy from it).
func canSleep(h *wsHub, clientSock, upSock *wsSock) bool {
	return clientSock != nil && upSock != nil && !h.cfg.Compression
}

// hold returns the pair's two library connections, waking the pair if it
// sleeps; they stay valid (the pair does not sleep) until unhold. Every use
// of p.client or p.upstream is between the two.
func (p *wsPair) hold() (client, up *websocket.Conn, err error) {
	p.mu.Lock()
	if p.sleeping.Load() {
		if p.dropped {
			p.mu.Unlock()
			return nil, nil, net.ErrClosed // the sockets were closed asleep
		}
		if err := p.wake(); err != nil {
			p.mu.Unlock()
			// Both directions wait on sockets that are now closed, which
			// never report: end the pair here, whoever asked.
			p.abort()
			return nil, nil, err
		}
	}
	p.users++
	client, up = p.client, p.upstream
	p.mu.Unlock()
	return client, up, nil
}

func (p *wsPair) unhold() {
	p.mu.Lock()
	p.users--
	p.mu.Unlock()
}

// sleep retires the library connections of an idle pair; false when the pair
// is in use, not idle on both sides, ending, or cannot sleep at all.
func (p *wsPair) sleep() bool {
	if !p.sleepy {
		return false
	}
	p.mu.Lock()
	if p.sleeping.Load() || p.users > 0 || p.closing() ||
		p.up.state.Load() != dirArmed || p.down.state.Load() != dirArmed {
		p.mu.Unlock()
		return false
	}
	// Both directions are parked: each stopped at a frame boundary with the
	// library's buffer empty, and nobody writes (writers hold the pair).
	p.clientSock.retired.Store(true)
	p.upSock.retired.Store(true)
	client, up := p.client, p.upstream
	p.client, p.upstream = nil, nil
	p.sleeping.Store(true)
	p.hub.metrics.sleeping.Inc()
	p.mu.Unlock()
	// Nobody else has the retired connections now. Closing them closes
	// nothing of the sockets (retired), and gives the upstream side's
	// buffers back to the library's pool for the next wake.
	_ = client.CloseNow()
	_ = up.CloseNow()
	return true
}

// wake wraps both sockets in new library connections; p.mu is held. On
// failure (nothing of it touches the network, so it should not fail) the
// sockets are closed, and hold ends the pair.
func (p *wsPair) wake() error {
	cs, us := newWSSock(p.clientSock.frameConn), newWSSock(p.upSock.frameConn)
	var fromClient, fromUpstream func(context.Context, []byte) bool
	if p.pings != nil {
		fromClient, fromUpstream = p.pings.fromClient, p.pings.fromUpstream
	}
	client, err := rewrapClient(cs, p.subprotocol, fromClient)
	var up *websocket.Conn
	if err == nil {
		up, err = (*rewrapUpstreamFunc.Load())(us, p.subprotocol, fromUpstream)
	}
	if err != nil {
		p.dropped = true
		cs.retired.Store(true) // the half-built connection closes nothing
		if client != nil {
			_ = client.CloseNow()
		}
		_ = cs.frameConn.Close()
		_ = us.frameConn.Close()
		return err
	}
	p.woke.Store(time.Now().UnixNano())
	client.SetReadLimit(p.clientLimit)
	up.SetReadLimit(-1) // as in newPair
	p.client, p.upstream, p.clientSock, p.upSock = client, up, cs, us
	p.sleeping.Store(false)
	p.hub.metrics.sleeping.Dec()
	p.hub.metrics.wakes.Inc()
	return nil
}

// setClientLimit sets the client side's read limit, now and for every
// connection that later wraps that socket.
func (p *wsPair) setClientLimit(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clientLimit = n
	if !p.sleeping.Load() {
		p.client.SetReadLimit(n)
	}
}

// dropSockets closes both sides without a close handshake: the library
// connections when the pair is awake (no hold: a holder may be in the middle
// of a read that this close ends), else the sockets themselves, and then the
// pair never wakes again.
func (p *wsPair) dropSockets() {
	p.mu.Lock()
	client, up, cs, us := p.client, p.upstream, p.clientSock, p.upSock
	if p.sleeping.Load() {
		p.dropped = true
		_ = p.clientSock.frameConn.Close()
		_ = p.upSock.frameConn.Close()
	}
	p.mu.Unlock()
	// The sockets themselves first: CloseNow waits for a close handshake
	// in progress (end's, which waits up to the library's 5 s for the
	// peer's close frame) to finish, and only a closed socket cuts that
	// wait short (QA: a drain ended 5 s after its deadline).
	for _, s := range []*wsSock{cs, us} {
		if s != nil {
			_ = s.frameConn.Close()
		}
	}
	if client != nil {
		_ = client.CloseNow()
		_ = up.CloseNow()
	}
}

// rewrapKey carries, in a rewrap's context, the socket to wrap.
type rewrapKey struct{}

// rewrapDialer is the HTTP client of rewrapUpstream: its transport answers
// the library's handshake itself, with the socket from the context as the
// connection.
var rewrapDialer = &http.Client{Transport: rewrapTransport{}}

type rewrapTransport struct{}

func (rewrapTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s, _ := r.Context().Value(rewrapKey{}).(*wsSock)
	if s == nil {
		return nil, errors.New("proxy: rewrap without a socket")
	}
	h := http.Header{
		"Upgrade":              {"websocket"},
		"Connection":           {"Upgrade"},
		"Sec-Websocket-Accept": {wsAccept(r.Header.Get("Sec-WebSocket-Key"))},
	}
	if sp := r.Header.Get("Sec-WebSocket-Protocol"); sp != "" {
		h["Sec-Websocket-Protocol"] = []string{sp}
	}
	return &http.Response{
		Status: "101 Switching Protocols", StatusCode: http.StatusSwitchingProtocols,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h, Body: s, Request: r,
	}, nil
}

// rewrapUpstreamFunc holds rewrapUpstream; a test swaps it to make a wake
// fail.
var rewrapUpstreamFunc atomic.Pointer[func(*wsSock, string, func(context.Context, []byte) bool) (*websocket.Conn, error)]

func init() {
	f := rewrapUpstream
	rewrapUpstreamFunc.Store(&f)
}

// rewrapUpstream wraps the upstream socket in a client-side library
// connection, as Dial made the first one, with the same ping callback.
func rewrapUpstream(s *wsSock, subprotocol string, onPing func(context.Context, []byte) bool) (*websocket.Conn, error) {
	opts := &websocket.DialOptions{HTTPClient: rewrapDialer, OnPingReceived: onPing}
	if subprotocol != "" {
		opts.Subprotocols = []string{subprotocol}
	}
	ctx := context.WithValue(context.Background(), rewrapKey{}, s)
	c, _, err := websocket.Dial(ctx, "ws://upstream/", opts)
	return c, err
}

// rewrapKeyValue is the Sec-WebSocket-Key of rewrapClient's handshake: any
// valid key does, nothing checks the answer.
const rewrapKeyValue = "Y2hhdGd1YXJkIHJld3JhcA=="

// rewrapClient wraps the client socket in a server-side library connection,
// as Accept made the first one, with the same small buffers and ping
// callback.
func rewrapClient(s *wsSock, subprotocol string, onPing func(context.Context, []byte) bool) (*websocket.Conn, error) {
	r := &http.Request{
		Method: http.MethodGet, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{
			"Connection":            {"Upgrade"},
			"Upgrade":               {"websocket"},
			"Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key":     {rewrapKeyValue},
		},
	}
	opts := &websocket.AcceptOptions{InsecureSkipVerify: true, OnPingReceived: onPing}
	if subprotocol != "" {
		r.Header["Sec-Websocket-Protocol"] = []string{subprotocol}
		opts.Subprotocols = []string{subprotocol}
	}
	return websocket.Accept(&rewrapWriter{sock: s, h: http.Header{}}, r, opts)
}

// rewrapWriter is the response of rewrapClient's handshake: its head goes
// nowhere (the client got the real one long ago).
type rewrapWriter struct {
	sock *wsSock
	h    http.Header
}

func (w *rewrapWriter) Header() http.Header         { return w.h }
func (w *rewrapWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *rewrapWriter) WriteHeader(int)             {}

func (w *rewrapWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.sock, bufio.NewReadWriter(bufio.NewReaderSize(w.sock, wsBufferSize), bufio.NewWriterSize(w.sock, wsBufferSize)), nil
}

// wsAccept is RFC 6455's Sec-WebSocket-Accept for key.
func wsAccept(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}
