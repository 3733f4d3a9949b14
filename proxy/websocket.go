package proxy

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/sirupsen/logrus"

	apierrors "github.com/chatguard/chatguard/errors"
	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/identity"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/redact"
	"github.com/chatguard/chatguard/internal/requestid"
	"github.com/chatguard/chatguard/sessions"
)

// wsHub owns every relayed WebSocket: it dials the upstream, keeps the set
// of live pairs for drain and the idle sweep, and holds the Socket.IO
// polling sessions. Its goroutine (the janitor) stops with Close.
type wsHub struct {
	// warnedPayload: the backend's maxPayload over the ceiling was logged.
	warnedPayload atomic.Bool
	// strayPaths: paths where Engine.IO traffic outside
	// websocket.socketio_path was logged (once each, at most maxStrayPaths).
	strayMu    sync.Mutex
	strayPaths map[string]bool

	s        *Server
	cfg      config.WebSocket
	base     *url.URL // the upstream as ws:// or wss://
	client   *http.Client
	metrics  *wsMetrics
	registry *sessions.Registry // nil: no presence tracking
	poller   *readyPoller       // made by start; nil: every relayed direction keeps a goroutine
	events   atomic.Pointer[eventPolicies]
	// handshakeGrace: how long a polling session whose client never came
	// back after the handshake is followed (handshakeGraceDefault; tests
	// shorten it).
	handshakeGrace atomic.Int64
	// readStall: how long a sender may stop in the middle of a message
	// (readStallDefault; tests shorten it).
	readStall atomic.Int64
	seq       atomic.Uint64
	readers   atomic.Int64 // directions with a goroutine reading

	// Lock order: mu before a session's mu (sweep, stop). bgMu is a leaf,
	// taken under either: background runs with a session's lock held
	// (a GET poll starting), and took mu there once, which deadlocked
	// against sweep (QA: 100 polling clients, 35 s).
	bgMu    sync.Mutex
	stopped bool // set by stop under bgMu: background starts nothing

	mu      sync.Mutex
	pairs   map[*wsPair]struct{}
	closing bool // set by drain: later upgrades are refused
	polls   map[string]*sioSession
	gone    map[string]time.Time // sids of polling sessions that ended, refused for pollGrace

	pids *pidOwners // who each recoverable socket was admitted as

	stopCh   chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newWSHub(s *Server, target *url.URL, registry *sessions.Registry) (*wsHub, error) {
	h := &wsHub{
		s: s, cfg: s.cfg.WebSocket, registry: registry,
		pairs: map[*wsPair]struct{}{}, polls: map[string]*sioSession{}, gone: map[string]time.Time{},
		pids: newPIDOwners(), stopCh: make(chan struct{}),
	}
	h.handshakeGrace.Store(int64(handshakeGraceDefault))
	h.readStall.Store(int64(readStallDefault))
	base := *target
	base.Scheme = "ws"
	if target.Scheme == "https" {
		base.Scheme = "wss"
	}
	h.base = &base
	dialer := &net.Dialer{Timeout: s.cfg.Proxy.DialTimeout, KeepAlive: 30 * time.Second}
	plain := base.Scheme == "ws" // through TLS the socket's bytes are not frames
	h.client = &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dialer.DialContext(ctx, network, addr)
				if err != nil || !plain || h.poller == nil {
					return c, err
				}
				if slot, _ := ctx.Value(upstreamConnKey{}).(**wsSock); slot != nil {
					if fc := newFrameConn(c, true); fc != nil {
						*slot = newWSSock(fc)
						return *slot, nil
					}
				}
				return c, nil
			},
			TLSHandshakeTimeout: 10 * time.Second,
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
			DisableCompression:  true,
			MaxIdleConns:        -1, // every handshake is its own connection
			DisableKeepAlives:   true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	var err error
	if h.metrics, err = newWSMetrics(s.metricsReg, func() float64 {
		h.mu.Lock()
		defer h.mu.Unlock()
		return float64(len(h.polls))
	}, func() float64 { return float64(h.readers.Load()) }); err != nil {
		return nil, err
	}
	h.setEvents(newEventPolicies(s.cfg))
	return h, nil
}

// upstreamConnKey carries, in a dial's context, where the upstream socket
// of that WebSocket goes (a **wsSock).
type upstreamConnKey struct{}

// start runs the janitor (and the readiness poller) until stop; Serve owns
// both.
func (h *wsHub) start() {
	h.wg.Add(1)
	go h.janitor()
	if p, err := newReadyPoller(); err != nil {
		h.s.log.WithFields(logrus.Fields{logging.FieldCategory: logging.CategorySocket}).WithError(err).
			Warn("idle WebSockets will each keep two goroutines")
	} else {
		h.poller = p // before any request: Serve starts the hub first
	}
	if h.poller != nil {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.poller.run()
		}()
	}
}

// stop stops the janitor and the poller and waits for the hub's
// goroutines. Live pairs are ended by drain, with close frames; one still
// open here (Serve ended without a drain) is dropped, so that no socket
// outlives the hub waiting for a poller that is gone.
func (h *wsHub) stop() {
	h.stopOnce.Do(func() { close(h.stopCh) })
	h.bgMu.Lock()
	h.stopped = true
	h.bgMu.Unlock()
	h.mu.Lock()
	for _, sess := range h.polls {
		sess.pollStop() // polls sent on a session's behalf end with the server
	}
	left := make([]*wsPair, 0, len(h.pairs))
	for p := range h.pairs {
		left = append(left, p)
	}
	h.mu.Unlock()
	if h.poller != nil {
		_ = h.poller.close()
	}
	for _, p := range left {
		p.abort()
	}
	h.wg.Wait()
}

// isUpgrade reports a WebSocket upgrade request.
func isWebSocketUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet &&
		headerHasToken(r.Header, "Connection", "upgrade") &&
		strings.EqualFold(strings.TrimSpace(r.Header.Get("Upgrade")), "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// isSocketIO reports whether a request belongs to Socket.IO (Engine.IO v4).
// Other protocol versions are relayed without inspection. Engine.IO matches
// a raw prefix of the path, dot segments and all, so the uncleaned path is
// matched too: /socket.io/../x is Socket.IO to the upstream.
func (h *wsHub) isSocketIO(r *http.Request) bool {
	return h.underSocketIOPath(r) && r.URL.Query().Get("EIO") == "4"
}

// underSocketIOPath matches the path as sent, and cleaned the way the
// routes are (canonicalPath drops a trailing slash: "/socket.io" is under
// "/socket.io/" too). A configured path without its trailing slash is
// engine.io's addTrailingSlash: false, which serves every URL that starts
// with it (/socket.ioX, /socket.io-x/y): those are Socket.IO to the
// upstream and must not pass uninspected (QA); with the slash, such paths
// are the app's own (review). It runs on every request, so it does not
// allocate.
func (h *wsHub) underSocketIOPath(r *http.Request) bool {
	p := h.cfg.SocketIOPath
	if !strings.HasSuffix(p, "/") {
		return strings.HasPrefix(r.URL.Path, p) || strings.HasPrefix(canonicalPath(r.URL.Path), p)
	}
	if strings.HasPrefix(r.URL.Path, p) {
		return true
	}
	c := canonicalPath(r.URL.Path)
	return strings.HasPrefix(c, p) || c == p[:len(p)-1]
}

// maxStrayPaths bounds the paths noteStray remembers (and logs).
const maxStrayPaths = 16

// noteStray logs, once per path, an Engine.IO request (EIO and transport in
// its query) outside websocket.socketio_path: an app whose Socket.IO path
// is not the configured one gets no inspection at all there — no presence,
// no event limits, and websocket.auth required does not apply — and
// nothing said so (QA: a backend on path /custom/ let anonymous clients
// connect with auth required). r is known not to be under the path.
func (h *wsHub) noteStray(r *http.Request) {
	if !strings.Contains(r.URL.RawQuery, "EIO=") {
		return // the common case, at the cost of a scan
	}
	q := r.URL.Query()
	if !q.Has("EIO") || !q.Has("transport") {
		return
	}
	p := r.URL.Path // an Engine.IO request's path is the Socket.IO path itself
	h.strayMu.Lock()
	if h.strayPaths[p] || len(h.strayPaths) >= maxStrayPaths {
		h.strayMu.Unlock()
		return
	}
	if h.strayPaths == nil {
		h.strayPaths = map[string]bool{}
	}
	h.strayPaths[p] = true
	h.strayMu.Unlock()
	h.s.log.WithFields(logrus.Fields{
		logging.FieldCategory: logging.CategorySocket, "path": p, "socketioPath": h.cfg.SocketIOPath,
	}).Warn("Engine.IO requests outside websocket.socketio_path are relayed without inspection (no presence, event limits or websocket.auth); if this is the app's Socket.IO path, set websocket.socketio_path to it")
}

// oldEngineIO reports an Engine.IO request under the Socket.IO path for a
// version other than 4: EIO=3 (Socket.IO 2 clients, which a backend with
// allowEIO3 accepts), or no EIO at all, which engine.io reads as 3.
// chatguard reads v4 only, so such a request would skip authentication and
// every event limit: it is refused. Other requests there (the client bundle
// /socket.io/socket.io.js) pass.
func (h *wsHub) oldEngineIO(r *http.Request) bool {
	if !h.underSocketIOPath(r) {
		return false
	}
	q := r.URL.Query()
	if q.Get("EIO") == "4" {
		return false
	}
	return q.Has("EIO") || q.Has("transport") || q.Has("sid") || isWebSocketUpgrade(r)
}

// originAllowed applies websocket.origins to the Origin header. A request
// without Origin is not from a browser and cannot be a cross-site attack.
func (h *wsHub) originAllowed(r *http.Request) bool {
	if len(h.cfg.Origins) == 0 {
		return true
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false
	}
	host := strings.ToLower(u.Host)
	for _, p := range h.cfg.Origins {
		if ok, _ := path.Match(strings.ToLower(p), host); ok {
			return true
		}
	}
	return false
}

// serveWebSocket relays one WebSocket: checks, dial the upstream first (so
// that its refusal becomes an envelope, not a socket that closes at once),
// then accept the client with the subprotocol the upstream chose, then relay.
func (s *Server) serveWebSocket(w *responseWriter, r *http.Request, info *reqInfo) {
	h := s.ws
	fail := func(outcome string, e *apierrors.Error) {
		h.metrics.outcomes.WithLabelValues(outcome).Inc()
		s.writeError(w, r, info, e, sourceProxy)
	}
	if s.draining.Load() || h.isClosing() {
		e := apierrors.New(apierrors.CodeServiceUnavailable, "chatguard is shutting down; reconnect to another instance")
		e.Header = http.Header{"Retry-After": {"1"}}
		fail(outcomeDraining, e)
		return
	}
	if !h.originAllowed(r) {
		fail(outcomeOrigin, apierrors.New(apierrors.CodeForbidden, "this origin may not open a WebSocket"))
		return
	}
	if e := badClientHandshake(r); e != nil {
		// Checked before the upstream is dialled (QA: a bad key opened a
		// real WebSocket to the app, closed at once with 1001), and
		// answered with an envelope, not the library's plain text.
		fail(outcomeHandshake, e)
		return
	}
	kind := kindWebSocket
	var (
		sess *sioSession
		adm  *sessions.Admission // a plain WebSocket's place under the per-IP limit
	)
	if h.isSocketIO(r) {
		kind = kindSocketIO
		var e *apierrors.Error
		if sess, e = h.sessionFor(r, info); e != nil {
			fail(refusalOutcome(e), e)
			return
		}
		if !sess.claimWS() {
			fail(outcomeHandshake, apierrors.New(apierrors.CodeValidation, "this Engine.IO session already has a WebSocket"))
			return
		}
	} else if h.registry != nil {
		var err error
		if adm, err = h.registry.Admit("", info.client); err != nil {
			fail(outcomeLimited, socketLimitError(err))
			return
		}
	}
	release := func() {
		if adm != nil {
			adm.Release()
		}
	}

	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.HandshakeTimeout)
	defer cancel()
	var upSock, clientSock *wsSock
	ctx = context.WithValue(ctx, upstreamConnKey{}, &upSock)
	pings := &pingRelay{}
	up, resp, err := websocket.Dial(ctx, h.upstreamURL(r), &websocket.DialOptions{
		HTTPClient:     h.client,
		HTTPHeader:     h.upstreamHeader(r, info),
		Host:           h.upstreamHost(r),
		Subprotocols:   subprotocols(r.Header),
		OnPingReceived: pings.fromUpstream,
	})
	if err != nil {
		if sess != nil {
			sess.release()
		}
		release()
		h.dialFailed(w, r, info, resp, err)
		return
	}
	copyUpgradeHeaders(w.Header(), resp.Header)
	opts := &websocket.AcceptOptions{InsecureSkipVerify: true, OnPingReceived: pings.fromClient} // Origin is checked above
	if p := up.Subprotocol(); p != "" {
		opts.Subprotocols = []string{p}
	}
	if h.cfg.Compression {
		opts.CompressionMode = websocket.CompressionContextTakeover
	}
	w.onHijack = func(c net.Conn) net.Conn {
		c = s.trackWebSocket(c)
		if h.poller != nil {
			if fc := newFrameConn(c, false); fc != nil {
				clientSock = newWSSock(fc)
				return clientSock
			}
		}
		return c
	}
	w.smallBuffers = true
	client, err := websocket.Accept(w, r, opts)
	if err != nil {
		// Accept wrote the client its error (a bad handshake).
		h.metrics.outcomes.WithLabelValues(outcomeHandshake).Inc()
		_ = up.Close(websocket.StatusGoingAway, "client handshake failed")
		if sess != nil {
			sess.release()
		}
		release()
		return
	}
	h.metrics.outcomes.WithLabelValues(outcomeAccepted).Inc()
	p := h.newPair(kind, info, client, up, clientSock, upSock, sess)
	p.pings = pings
	pings.pair.Store(p)
	if !h.add(p) { // a drain started while dialing
		h.background(func() {
			p.end(sideChatguard, websocket.StatusCode(h.cfg.DrainCloseCode), "server shutting down", "drain")
		})
	} else if p.sessionOver { // the session ended while dialing (see sioSession.ended)
		h.background(func() { p.end(sideChatguard, websocket.StatusNormalClosure, "session ended", "") })
	}
	p.start(release) // the handler returns: its access line is the upgrade's
}

func (h *wsHub) live() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.pairs)
}

func (h *wsHub) isClosing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closing
}

// trackWebSocket is the hijack hook of a relayed WebSocket: the request
// stops counting as in flight; the hub, not the raw-connection list, ends it
// on drain (with a close frame rather than a dropped connection).
func (s *Server) trackWebSocket(c net.Conn) net.Conn {
	s.inFlight.Add(-1)
	s.metrics.inFlight.Dec()
	return c
}

func (h *wsHub) upstreamURL(r *http.Request) string {
	u := *h.base
	u.Path = singleJoin(h.base.Path, r.URL.Path)
	u.RawPath = ""
	u.RawQuery = r.URL.RawQuery
	return u.String()
}

func singleJoin(a, b string) string {
	switch {
	case a == "" || a == "/":
		return b
	case strings.HasSuffix(a, "/") && strings.HasPrefix(b, "/"):
		return a + b[1:]
	case !strings.HasSuffix(a, "/") && !strings.HasPrefix(b, "/"):
		return a + "/" + b
	}
	return a + b
}

func (h *wsHub) upstreamHost(r *http.Request) string {
	if h.s.cfg.Proxy.PreserveHost {
		return r.Host
	}
	return ""
}

// wsHandshakeHeaders are set by the WebSocket client itself, or are
// hop-by-hop: never copied from the client's request.
var wsHandshakeHeaders = []string{
	"Connection", "Upgrade", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding",
	"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions", "Sec-Websocket-Protocol", "Sec-Websocket-Accept", "Host",
}

// upstreamHeader is the client's handshake headers (cookies, auth, origin,
// user agent, request id) with the forwarding headers chatguard sets for
// every proxied request.
func (h *wsHub) upstreamHeader(r *http.Request, info *reqInfo) http.Header {
	out := r.Header.Clone()
	dropConnectionNamed(out) // headers the client named hop-by-hop
	for _, k := range wsHandshakeHeaders {
		out.Del(k)
	}
	h.s.trust.setForwarded(&httputil.ProxyRequest{In: r, Out: &http.Request{Header: out}}, info.peer, info.client)
	out.Set(requestid.Header, info.id) // even when the client named it hop-by-hop
	if _, ok := out["User-Agent"]; !ok {
		// Present and empty: Go's client then sends none, instead of its
		// own "Go-http-client/1.1", which the app would take for the
		// client's (ReverseProxy does the same for plain requests).
		out["User-Agent"] = []string{""}
	}
	return out
}

// copyUpgradeHeaders passes the upstream's 101 headers to the client's:
// cookies an app sets on the upgrade (Socket.IO's "headers" event, sticky
// sessions) and its own fields; not those of the handshake itself, which
// Accept writes for the client's side, nor hop-by-hop ones.
func copyUpgradeHeaders(dst, src http.Header) {
	skip := map[string]bool{}
	for _, f := range src.Values("Connection") {
		for _, k := range strings.Split(f, ",") {
			skip[http.CanonicalHeaderKey(strings.TrimSpace(k))] = true
		}
	}
	for k, vs := range src {
		if skip[k] || slices.Contains(wsHandshakeHeaders, k) || k == "Content-Length" || k == "Date" || k == requestid.Header {
			continue
		}
		dst[k] = append(dst[k], vs...)
	}
}

func subprotocols(h http.Header) []string {
	var list []string
	for _, v := range h.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
	}
	return list
}

// dialFailed answers a failed upstream handshake: the upstream's own
// refusal (a status other than 101) is classified like any error reply;
// a failure to reach it is 502 or 504.
func (h *wsHub) dialFailed(w *responseWriter, r *http.Request, info *reqInfo, resp *http.Response, err error) {
	s := h.s
	if resp != nil && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// The app answered the upgrade as a plain request: no WebSocket
		// there. The client still gets an envelope, but the upstream did
		// not fail (QA: it counted in upstream_errors_total, the 502
		// alert's series): it refused, as with a 4xx.
		h.metrics.outcomes.WithLabelValues(outcomeUpstreamRefuse).Inc()
		info.reason = "not_upgraded"
		e := apierrors.New(apierrors.CodeUpstreamUnavailable, fmt.Sprintf("the upstream answered the WebSocket upgrade with %d, not 101: it serves no WebSocket at this path", resp.StatusCode))
		s.writeError(w, r, info, e, sourceProxy)
		return
	}
	if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode >= 300 {
		h.metrics.outcomes.WithLabelValues(outcomeUpstreamRefuse).Inc()
		var body []byte
		truncated := false
		if resp.Body != nil { // the library kept the first 1 KiB of it
			body, _ = io.ReadAll(io.LimitReader(resp.Body, 1024))
			truncated = len(body) == 1024
		}
		// The app's own fields go with its answer, as with any error it
		// sends (QA: a refused upgrade lost Retry-After, WWW-Authenticate,
		// a Set-Cookie and CORS, and a redirect its Location).
		refusalFields(w.Header(), resp.Header, resp.StatusCode)
		if resp.StatusCode < 400 {
			// A redirect is no error: it passes as it came, as a plain
			// request's does, with its body when the library kept all of it.
			w.passThrough = true
			if truncated { // the library kept 1 KiB: none then, nor the fields that describe it (review)
				body = nil
				for _, k := range replacedBodyFields {
					w.Header().Del(k)
				}
				w.Header().Del("Content-Type")
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(body)
			return
		}
		status, out := s.classifyReply(info, apierrors.Reply{
			Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type"), Body: body, Truncated: truncated,
			WWWAuthenticate: strings.Join(resp.Header.Values("WWW-Authenticate"), ", "),
		})
		apierrors.SetHeaders(w.Header(), len(out))
		w.WriteHeader(status)
		_, _ = w.Write(out)
		return
	}
	h.metrics.outcomes.WithLabelValues(outcomeUpstreamFailed).Inc()
	e, reason := apierrors.FromProxyError(err)
	if errors.Is(err, context.DeadlineExceeded) {
		e, reason = apierrors.New(apierrors.CodeUpstreamTimeout, ""), "timeout"
	}
	if reason == reasonClientClosed {
		info.closed = true
		return
	}
	info.reason = reason
	s.metrics.upstreamError(e.Code, reason)
	s.log.WithFields(logrus.Fields{
		"requestId": info.id, logging.FieldCategory: logging.CategorySocket, "reason": reason,
		logrus.ErrorKey: dialErrorText(err),
	}).Warn("websocket upstream handshake failed")
	s.writeError(w, r, info, e, sourceProxy)
}

// dialErrorText is err's text with the URL it names cut as an access line
// cuts a target: the dial's error quoted the whole URL, and a client's
// 60 KB query made each failed upgrade a 60 KB line (QA).
func dialErrorText(err error) string {
	text := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) && len(ue.URL) > maxLogPath {
		// Redacted whole first: cut, the URL no longer reads as one to
		// the log's redaction, and its query's secrets passed (review).
		text = strings.Replace(text, strconv.Quote(ue.URL), strconv.Quote(logPath(redact.URI(ue.URL))), 1)
	}
	return text
}

// refusalFields copies to dst the fields of the app's answer to an upgrade
// that a client gets with it: its own (Set-Cookie, Retry-After,
// WWW-Authenticate, CORS, Location…), not the hop-by-hop ones, the
// handshake's, the body's that the envelope replaces, nor its request id.
func refusalFields(dst, src http.Header, status int) {
	h := src.Clone()
	dropHopByHop(h)
	for _, k := range wsHandshakeHeaders {
		h.Del(k)
	}
	h.Del(requestid.Header)
	if status >= 400 {
		dropBodyFields(h, status)
	} else {
		h.Del("Content-Length")
	}
	for k, vs := range h {
		dst[k] = vs
	}
}

func (h *wsHub) add(p *wsPair) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.pairs[p] = struct{}{}
	h.metrics.open.WithLabelValues(p.kind).Inc()
	h.s.metrics.upgraded.Inc()
	return true
}

func (h *wsHub) remove(p *wsPair) {
	h.mu.Lock()
	_, ok := h.pairs[p]
	delete(h.pairs, p)
	h.mu.Unlock()
	if ok {
		h.metrics.open.WithLabelValues(p.kind).Dec()
		h.s.metrics.upgraded.Dec()
	}
}

// closeAll ends every pair with code (drain) and waits until they are gone
// or ctx ends; it reports how many it closed.
func (h *wsHub) closeAll(ctx context.Context, code websocket.StatusCode) int {
	h.mu.Lock()
	h.closing = true
	list := make([]*wsPair, 0, len(h.pairs))
	for p := range h.pairs {
		list = append(list, p)
	}
	polls := make([]*sioSession, 0, len(h.polls))
	for _, sess := range h.polls {
		polls = append(polls, sess)
	}
	h.mu.Unlock()
	for _, sess := range polls {
		sess.closeForDrain()
	}
	for _, p := range list {
		h.background(func() { p.end(sideChatguard, code, "server shutting down", "drain") })
	}
	for _, p := range list {
		select {
		case <-p.done:
		case <-ctx.Done():
			for _, q := range list {
				q.abort()
			}
			return len(list)
		}
	}
	return len(list)
}

// janitor closes idle and stalled pairs, forgets silent polling sessions,
// and runs the registry's consistency check.
func (h *wsHub) janitor() {
	defer h.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastCheck time.Time
	for {
		select {
		case <-h.stopCh:
			return
		case now := <-tick.C:
			h.sweep(now)
			if c := h.cfg.ConsistencyCheck; c > 0 && h.registry != nil && now.Sub(lastCheck) >= c {
				lastCheck = now
				h.checkConsistency()
			}
		}
	}
}

// writeStall is how long one write may block before the pair is closed: a
// peer that reads nothing must not hold a relay forever.
const writeStall = 30 * time.Second

// readStallDefault is how long a side may stop sending in the middle of a
// message before the pair is dropped: nginx's proxy_read_timeout, applied
// only where a message is unfinished (an idle socket costs nothing).
const readStallDefault = 60 * time.Second

func (h *wsHub) sweep(now time.Time) {
	h.mu.Lock()
	var idle, stalled, readStalled, quiet []*wsPair
	readStall := time.Duration(h.readStall.Load())
	for p := range h.pairs {
		last := p.last.Load()
		since := now.Sub(time.Unix(0, last))
		switch {
		case p.stalled(now, writeStall):
			stalled = append(stalled, p)
		case p.readStalled(now, readStall):
			readStalled = append(readStalled, p)
		case h.cfg.IdleTimeout > 0 && since > h.cfg.IdleTimeout:
			idle = append(idle, p)
		case p.sleepy && !p.sleeping.Load() && now.Sub(time.Unix(0, max(last, p.woke.Load()))) >= wsSleepAfter:
			quiet = append(quiet, p)
		}
	}
	var gone []*sioSession
	for sid, sess := range h.polls {
		if sess.pollExpired(now) {
			delete(h.polls, sid)
			gone = append(gone, sess)
		}
	}
	for sid, at := range h.gone {
		if now.Sub(at) > pollGrace {
			delete(h.gone, sid)
		}
	}
	h.mu.Unlock()
	for _, p := range idle {
		h.background(func() { p.end(sideChatguard, websocket.StatusGoingAway, "idle timeout", "idle") })
	}
	for _, p := range stalled {
		p.countForced("write_stalled")
		p.abort()
	}
	for _, p := range readStalled {
		p.countForced("read_stalled")
		p.abort()
	}
	for _, sess := range gone {
		sess.ended()
	}
	for _, p := range quiet {
		p.sleep()
	}
}

func (h *wsHub) checkConsistency() {
	stale, unlisted := h.registry.Check()
	h.metrics.orphans.WithLabelValues("stale_entry").Add(float64(stale))
	h.metrics.orphans.WithLabelValues("unlisted_socket").Add(float64(unlisted))
	if stale+unlisted > 0 {
		h.s.log.WithFields(logrus.Fields{
			logging.FieldCategory: logging.CategorySocket, "staleEntries": stale, "unlistedSockets": unlisted,
		}).Warn("socket consistency check fixed orphans")
	}
}

// newSocketID is chatguard's id for a socket until Socket.IO names it.
func (h *wsHub) newSocketID() string {
	return "cg_" + strconv.FormatUint(h.seq.Add(1), 36)
}

// identify verifies the token of a handshake request, if it carries one.
func (h *wsHub) identify(r *http.Request) (identity.Identity, error) {
	v := h.s.verifier.Load()
	if v == nil {
		return identity.Identity{}, identity.ErrMissing
	}
	return v.VerifyRequest(r, h.s.cfg.Auth.Cookie)
}

// badClientHandshake checks what websocket.Accept would refuse in the
// client's handshake (RFC 6455 4.2.1), before the upstream is dialled:
// version 13 (426 with the version otherwise, as the RFC asks) and a
// Sec-WebSocket-Key of 16 bytes in base64.
func badClientHandshake(r *http.Request) *apierrors.Error {
	if r.Method != http.MethodGet {
		return apierrors.New(apierrors.CodeValidation, "a WebSocket handshake is a GET")
	}
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" {
		e := apierrors.New(apierrors.CodeValidation, "unsupported Sec-WebSocket-Version; 13 is spoken here")
		e.Status = http.StatusUpgradeRequired
		e.Header = http.Header{"Sec-Websocket-Version": {"13"}}
		return e
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 16 {
		return apierrors.New(apierrors.CodeValidation, "the Sec-WebSocket-Key is not 16 bytes in base64")
	}
	return nil
}
