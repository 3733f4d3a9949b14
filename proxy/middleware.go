package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	apierrors "github.com/chatguard/chatguard/errors"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/redact"
	"github.com/chatguard/chatguard/internal/requestid"
)

// StatsPath is answered by chatguard itself on both listeners.
const StatsPath = "/api/internal/stats"

// reqInfo follows a request through the middleware, the proxy and the log line.
type reqInfo struct {
	id    string
	rt    *routing // the routing the request started with
	route int
	// preflightRoute, for a CORS preflight, is 1 + the route of the request
	// it asks about (see corsKey); 0 otherwise.
	preflightRoute int
	peer           netip.Addr
	client         netip.Addr
	// set on the way back
	upstreamStatus int
	// upstreamID: the requestId of the app's own envelope, passed through
	// in place of chatguard's (see apierrors.Result.UpstreamRequestID)
	upstreamID string
	// user: the user key of the request's verified token (routes with auth)
	user   string
	code   apierrors.Code
	reason string
	closed bool // the client went away before the upstream answered
	// bodyTimedOut: the client stopped sending its body (idleBody). net/http
	// cancels the request's context on the failed read, so the transport
	// may report that instead.
	bodyTimedOut atomic.Bool
	idle         *idleBody // the request body, read with its timeout
	// bodyLeft: the upstream answered before the whole request body, whose
	// rest is never read: the client's connection closes after the answer.
	bodyLeft bool
	// expect: the client sent Expect: 100-continue (which chatguard answers
	// and does not forward).
	expect bool
	// closeConn: the client's connection closes after the answer, whose
	// head went out without saying so (see idleBody.closeConn; applied
	// once the proxy returned, when no flush of its runs any more).
	closeConn bool
	// bodyErr is the error that ended reading a passed-through upstream
	// body early (watchBody), if any.
	bodyErr error
	aborted bool // the response was cut off after its status line went out
	// shadowLimited: a route in shadow mode would have refused the request
	shadowLimited bool
	// clientID: the client sent an X-Request-Id (else chatguard added one)
	clientID bool
	// retried: the request was sent again on a new upstream connection,
	// the reused one having died before any answer (see upstreamTransport)
	retried bool
	// pollClose: a polling POST that carries the client's Engine.IO close
	// packet, which engine.io may answer by destroying the request.
	pollClose bool
	// internal: a request chatguard sends on a polling session's behalf
	// (its long-poll, packets it tells the upstream), no client's.
	internal bool
	// onResponse, when set, sees the upstream's response first (Socket.IO
	// polling inspection).
	onResponse func(*http.Response)
}

type infoKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	if i, ok := ctx.Value(infoKey{}).(*reqInfo); ok {
		return i
	}
	return &reqInfo{}
}

// ServeHTTP is the public listener's handler: request id, limits, drain
// refusal, chatguard's own endpoints, then the reverse proxy; one access line
// and the metrics for every request, whatever happened.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	served(r)
	start := s.now()
	info := &reqInfo{id: requestid.FromRequest(r.Header, start)}
	info.peer = peerAddr(r)
	info.client = s.trust.clientIP(r, info.peer)
	info.rt = s.routing.Load()
	info.route = info.rt.table.match(r.Method, r.URL.Path, forwardedPath(r))
	if r.Method == http.MethodOptions {
		if m := r.Header.Get("Access-Control-Request-Method"); m != "" {
			info.preflightRoute = 1 + info.rt.table.match(m, r.URL.Path, forwardedPath(r))
		}
	}
	_, info.clientID = r.Header[requestid.Header]
	ids := [...]string{info.id, info.id} // one allocation for both headers' values
	r.Header[requestid.Header] = ids[0:1:1]
	w.Header()[requestid.Header] = ids[1:2:2]

	rw := &responseWriter{ResponseWriter: w, onHijack: s.trackConn, requestID: info.id, head: r.Method == http.MethodHead, http10: !r.ProtoAtLeast(1, 1),
		sendTimeout: s.cfg.Server.SendTimeout}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	s.inFlight.Add(1)
	s.metrics.inFlight.Inc()
	s.serve(rw, r, info, start)
	if info.closeConn {
		info.idle.closeConn()
	}
	rw.disarmWrite()
	if !info.bodyLeft && info.idle != nil && !rw.passThrough && rw.wroteHeader && !rw.hijacked &&
		!info.idle.eof.Load() && !info.bodyTimedOut.Load() && !strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		// chatguard answered itself (401, 403, 429…) before the whole
		// body came: the rest is read and dropped, as after its 413, or a
		// client that sends its whole upload before reading got a reset
		// instead of the answer (QA). Not after Expect: 100-continue: that
		// client sends no body unless told to; nor after a 408: that
		// client is known to be silent (review).
		info.bodyLeft = true
	}
	if info.bodyLeft {
		// Lingering only where the answer's end does not wait for the
		// handler: net/http writes a chunked answer's last chunk when the
		// handler returns, and an HTTP/1.0 answer without a length ends
		// with the connection (review: a chunked early 200 was complete
		// only 5 to 30 s later). Not while draining either.
		info.idle.end(rw.lengthKnown() && !s.refusing.Load(), s.refusing.Load)
	}
}

// serve handles the request and logs it, whatever happened.
func (s *Server) serve(rw *responseWriter, r *http.Request, info *reqInfo, start time.Time) {
	defer s.finish(rw, r, info, start)
	s.handle(rw, r, info)
}

// hasDotSegment reports whether the decoded path p has a "." or ".."
// segment, a backslash counting as a separator too (WHATWG URL parsers
// read it so).
func hasDotSegment(p string) bool {
	for len(p) > 0 {
		i := strings.IndexAny(p, "/\\")
		seg := p
		if i >= 0 {
			seg, p = p[:i], p[i+1:]
		} else {
			p = ""
		}
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// maxLogPath is the most of a request target an access line holds: a
// client's 70 KB path made a 70 KB line (QA), as many times as it liked.
const maxLogPath = 4096

// logPath is p, cut to maxLogPath bytes (on a character boundary) with its
// full length said. What a JSON line would escape into more bytes than it
// has — bytes that are not UTF-8 (6 bytes each, \ufffd, and the byte lost),
// control characters, '"', '\\', U+2028 and U+2029 — is percent-encoded
// first (after redaction), so that the cut bounds the line (QA: 8,000 bytes
// of 0xff in a query made a 24 KB line) and the bytes are not lost (though
// a %22 sent as such reads the same as a '"').
func logPath(p string) string {
	size := len(p) // as the client sent it (before redaction and escapes)
	if e := escapeLogPath(p); len(e) != len(p) || len(p) > maxLogPath {
		// Redacted first: the log's redaction reads quotes ("password":
		// "…" in a raw query) that escaping turns into %22, and a whole
		// JWT that the cut would leave half of, which no longer reads as
		// one (reviews).
		p = escapeLogPath(redact.String(p))
	}
	if len(p) <= maxLogPath {
		return p
	}
	cut := maxLogPath
	for cut > 0 && !utf8.RuneStart(p[cut]) {
		cut--
	}
	if i := strings.LastIndexByte(p[max(cut-2, 0):cut], '%'); i >= 0 {
		cut = max(cut-2, 0) + i // not in the middle of an escape (QA: "…%F…")
	}
	return p[:cut] + "…(" + strconv.Itoa(size) + " bytes)"
}

// escapeLogPath percent-encodes what logPath must not leave to the JSON
// encoder; p itself when there is none (no allocation).
func escapeLogPath(p string) string {
	i := 0
	for i < len(p) {
		c := p[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(p[i:])
			if (r != utf8.RuneError || n > 1) && r != '\u2028' && r != '\u2029' {
				i += n
				continue
			}
		}
		break
	}
	if i == len(p) {
		return p
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(p)+16)
	b = append(b, p[:i]...)
	for i < len(p) {
		c := p[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			b = append(b, c)
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(p[i:])
			if (r != utf8.RuneError || n > 1) && r != '\u2028' && r != '\u2029' {
				b = append(b, p[i:i+n]...)
				i += n
				continue
			}
			for _, x := range []byte(p[i : i+n]) {
				b = append(b, '%', hex[x>>4], hex[x&15])
			}
			i += n
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
		i++
	}
	return string(b)
}

// targetProblem says what is wrong with a request line or Host that Go's
// server takes and nginx refuses with 400 (QA), or "" when nothing is:
//   - a method with other than capital letters, '_' and '-' ("post"):
//     Node refuses it too, but chatguard matched no route to it, and an
//     unknown method is the app's to accept, not a lower-case known one;
//   - an absolute-form target with user information (RFC 9110 4.2.4: an
//     error), no host ("http:///x"), or no "//" at all ("http:api/x",
//     which went upstream as the path "api/x", past every route);
//   - an empty Host in HTTP/1.1 (RFC 9110 4.2.1: an http URI with an
//     empty host is invalid; forwarded, it became the upstream's address).
func targetProblem(r *http.Request) string {
	for i := 0; i < len(r.Method); i++ {
		if c := r.Method[i]; (c < 'A' || c > 'Z') && c != '_' && c != '-' {
			return "the method must be written in capital letters"
		}
	}
	if r.URL.Scheme != "" {
		switch {
		case r.URL.User != nil:
			return "the request target must not hold user information (user@ or user:password@)"
		case r.URL.Opaque != "" || r.URL.Host == "":
			return "the request target must be a path, or an http URL with a host (http://host/path)"
		}
	}
	if r.ProtoAtLeast(1, 1) && r.Host == "" {
		return "the Host header must name a host"
	}
	return ""
}

// bodylessMethod: methods whose requests carry no body in practice.
func bodylessMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// proxiedMethods are what a 405 for CONNECT or TRACE, and OPTIONS *, say is
// allowed.
var proxiedMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

func (s *Server) handle(w *responseWriter, r *http.Request, info *reqInfo) {
	if s.refusing.Load() {
		e := apierrors.New(apierrors.CodeServiceUnavailable, "chatguard is shutting down; retry on another instance")
		e.Header = http.Header{"Connection": {"close"}, "Retry-After": {"1"}}
		s.writeError(w, r, info, e, sourceProxy)
		return
	}
	if r.ProtoMajor != 1 {
		// Only HTTP/2's prior-knowledge preface (PRI * HTTP/2.0) gets here:
		// net/http passes it on for an h2c handler. This listener speaks
		// HTTP/1.1; forwarded, the preface reached the upstream as a request.
		e := apierrors.New(apierrors.CodeValidation, "this listener speaks HTTP/1.1 only, not HTTP/2 with prior knowledge")
		e.Status = http.StatusHTTPVersionNotSupported
		e.Header = http.Header{"Connection": {"close"}}
		s.writeError(w, r, info, e, sourceProxy)
		return
	}
	if len(r.TransferEncoding) > 0 || !r.ProtoAtLeast(1, 1) && (r.ContentLength > 0 || r.Method != http.MethodGet && r.Method != http.MethodHead) {
		// net/http drops Content-Length when Transfer-Encoding came with it
		// (and Transfer-Encoding from HTTP/1.0), so a chunked body cannot be
		// told from one framed both ways, as request smuggling frames it for
		// a front proxy that reads the other length. RFC 9112 6.1 and 6.3:
		// the connection closes after the response, and whatever followed
		// the body is never read as a request. HTTP/1.0 bodies likewise, and
		// any HTTP/1.0 request but GET and HEAD: net/http ignores an
		// HTTP/1.0 Transfer-Encoding, reading a chunked body as requests.
		w.Header().Set("Connection", "close")
		w.closeAfter = true // kept past a 1xx, whose relay clears the header map (review)
	}
	if r.URL.Scheme != "" && !strings.EqualFold(r.URL.Scheme, "http") && !strings.EqualFold(r.URL.Scheme, "https") {
		// An absolute-form target names the scheme too: only HTTP's
		// (nginx answers the others with 400 as well).
		s.writeError(w, r, info, apierrors.New(apierrors.CodeValidation, "the request target must be an http or https URL"), sourceProxy)
		return
	}
	if problem := targetProblem(r); problem != "" {
		s.writeError(w, r, info, apierrors.New(apierrors.CodeValidation, problem), sourceProxy)
		return
	}
	if strings.IndexByte(r.RequestURI, '#') >= 0 {
		// A fragment is never sent (RFC 9112 3.2): Go keeps it in the path
		// or the query, Node drops it, so ?sid=<real>#x was a session
		// chatguard never saw, passed uninspected, and the real one to
		// engine.io (QA: an anonymous CONNECT got through with auth
		// required). nginx refuses it too.
		s.writeError(w, r, info, apierrors.New(apierrors.CodeValidation, "the request target must not hold a fragment (#)"), sourceProxy)
		return
	}
	if hasDotSegment(r.URL.Path) {
		// Express routes the path as sent, dot segments and all
		// (/api/conversations/.. runs /api/conversations/:id with id ".."),
		// so chatguard cannot resolve them to pick a route without letting
		// such a path past the route's auth and limit (QA), nor pass them
		// on unresolved as another route. No browser or HTTP library sends
		// one: they resolve them first. nginx refuses those that climb
		// above the root.
		s.writeError(w, r, info, apierrors.New(apierrors.CodeValidation, "the path must not hold . or .. segments (plain or percent-encoded)"), sourceProxy)
		return
	}
	if !r.ProtoAtLeast(1, 1) && r.Header.Get("Content-Length") == "" && !bodylessMethod(r.Method) &&
		(r.Header.Get("Content-Type") != "" || r.Header.Get("Content-Encoding") != "") {
		// RFC 1945 7.2.2: an HTTP/1.0 request with a body needs a
		// Content-Length. net/http ignores (and deletes) an HTTP/1.0
		// Transfer-Encoding and reads no body at all: a chunked POST went
		// upstream empty and was answered 200 (QA; nginx answers 400). A
		// Content-Type says a body came; a POST without one (a health
		// check, ab -m POST) has none and passes (review).
		e := apierrors.New(apierrors.CodeValidation, "an HTTP/1.0 "+r.Method+" needs a Content-Length (chunked bodies are HTTP/1.1)")
		e.Status = http.StatusLengthRequired
		s.writeError(w, r, info, e, sourceProxy)
		return
	}
	if maxQueryParams >= 0 && strings.Count(r.URL.RawQuery, "&") >= maxQueryParams {
		// Go's parser reads none of a query with more parameters than
		// that (net/url's limit), while Express's reads the first 1,000
		// and engine.io all: a token or sid there was the app's alone (a
		// polling POST with the real sid went to engine.io uninspected).
		e := apierrors.New(apierrors.CodeValidation, "the query holds more than "+strconv.Itoa(maxQueryParams)+" parameters")
		s.writeError(w, r, info, e, sourceProxy)
		return
	}
	if name, problem := suspectQueryParam(r.URL.RawQuery, func() bool { return s.ws != nil && s.ws.underSocketIOPath(r) }); problem != "" {
		// The query goes upstream as sent, and the app's parser reads
		// pairs Go's skips (a ';', a stray '%') and takes the last of a
		// repeated name: one of the parameters chatguard decides on,
		// written that way, would be one thing to chatguard and another
		// to the app.
		e := apierrors.New(apierrors.CodeValidation, "the query parameter "+strconv.Quote(name)+" "+problem)
		s.writeError(w, r, info, e, sourceProxy)
		return
	}
	if r.RequestURI == "*" {
		// The asterisk form is for OPTIONS about the server itself (RFC 9112
		// 3.2.4), which chatguard answers as nginx does; nothing else may
		// use it (forwarded, * became the path /%2A).
		if r.Method == http.MethodOptions {
			w.Header().Set("Allow", strings.Join(proxiedMethods, ", "))
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusOK)
			return
		}
		s.writeError(w, r, info, apierrors.New(apierrors.CodeValidation, "the request target * is for OPTIONS only"), sourceProxy)
		return
	}
	if r.Method == http.MethodConnect || r.Method == http.MethodTrace {
		// A reverse proxy opens no tunnels, and TRACE would echo the request,
		// cookies and Authorization included, back to a script (cross-site
		// tracing): nginx answers both with 405 as well.
		s.writeError(w, r, info, methodNotAllowed(r.Method+" is not allowed", proxiedMethods), sourceProxy)
		return
	}
	n, fields := headerBytes(r)
	if !info.clientID {
		fields-- // the request id chatguard added is not the client's
	}
	if max := s.cfg.Server.MaxHeaderCount; max > 0 && fields > max {
		// Node would drop the fields past its own count, chatguard's
		// forwarding headers (written after the client's) first (QA).
		e := apierrors.New(apierrors.CodeValidation, "the request has too many header fields")
		e.Status = http.StatusRequestHeaderFieldsTooLarge
		e.Details = map[string]any{"limitFields": max}
		e.Header = http.Header{"Connection": {"close"}}
		s.writeError(w, r, info, e, sourceProxy)
		return
	}
	if len(r.RequestURI) > s.cfg.Server.MaxHeaderBytes {
		// The target alone is over the limit: 414, as nginx answers,
		// rather than blaming the headers.
		e := apierrors.New(apierrors.CodeValidation, "the request target (path and query) is too long")
		e.Status = http.StatusRequestURITooLong
		e.Details = map[string]any{"limitBytes": s.cfg.Server.MaxHeaderBytes}
		e.Header = http.Header{"Connection": {"close"}}
		s.writeError(w, r, info, e, sourceProxy)
		return
	}
	if n > s.cfg.Server.MaxHeaderBytes {
		e := apierrors.New(apierrors.CodeValidation, apierrors.HeadersTooLarge)
		e.Status = http.StatusRequestHeaderFieldsTooLarge
		e.Details = map[string]any{"limitBytes": s.cfg.Server.MaxHeaderBytes}
		e.Header = http.Header{"Connection": {"close"}}
		s.writeError(w, r, info, e, sourceProxy)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		info.idle = &idleBody{ReadCloser: r.Body, w: w.ResponseWriter, rc: http.NewResponseController(w.ResponseWriter), timeout: s.cfg.Server.BodyReadTimeout, timedOut: &info.bodyTimedOut, busy: make(chan struct{}, 1)}
		r.Body = info.idle
	}
	if max := s.cfg.Server.MaxBodyBytes; max > 0 {
		if r.ContentLength > max {
			e := apierrors.New(apierrors.CodePayloadTooLarge, "")
			e.Details = map[string]any{"limitBytes": max}
			e.Header = http.Header{"Connection": {"close"}}
			s.writeError(w, r, info, e, sourceProxy)
			info.bodyLeft = true // an early answer of chatguard's own
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			// Not http.MaxBytesReader: it writes to the response (to close
			// the connection) from whatever goroutine reads the body, and the
			// transport's body writer may read on after the handler returned
			// (an early answer). The 413 says Connection: close itself.
			r.Body = &limitedBody{ReadCloser: r.Body, left: max, limit: max}
		}
	}
	if isStatsPath(r.URL.Path) {
		info.route = info.rt.table.intern
		s.serveStats(w, r, info)
		return
	}
	if !s.guard(w, r, info) {
		return
	}
	if s.ws != nil {
		socketIO := s.ws.underSocketIOPath(r) // the other checks only then: this runs on every request
		if !socketIO {
			s.ws.noteStray(r)
		}
		if socketIO && s.ws.oldEngineIO(r) {
			e := apierrors.New(apierrors.CodeValidation, "chatguard accepts Engine.IO v4 (Socket.IO 3 and 4 clients) only")
			e.Details = map[string]any{"EIO": r.URL.Query().Get("EIO")}
			s.writeError(w, r, info, e, sourceProxy)
			return
		}
		if isWebSocketUpgrade(r) {
			s.serveWebSocket(w, r, info)
			return
		}
		if socketIO && s.ws.isSocketIO(r) && r.URL.Query().Get("transport") == "polling" {
			if r.URL.Query().Has("j") {
				// JSONP polling (engine.io still serves it): its answers
				// are script, not packets chatguard reads, so its sessions
				// ran uncounted and unfollowed (QA). socket.io-client
				// has not used it since 3.0.
				e := apierrors.New(apierrors.CodeValidation, "chatguard does not serve JSONP polling (the j parameter): use XHR polling or WebSocket")
				e.Details = map[string]any{"transport": "polling"}
				s.writeError(w, r, info, e, sourceProxy)
				return
			}
			s.servePolling(w, r, info)
			return
		}
	}
	w.passThrough = true
	s.proxy.ServeHTTP(w, r)
}

// isStatsPath matches the stats endpoint the way an Express backend would
// route it (case-insensitive, trailing slash, dot segments), so that no
// spelling of it slips past the token check to the backend's own handler.
func isStatsPath(p string) bool { return canonicalPath(p) == StatsPath }

// headerBytes approximates the size of the request's header block as sent,
// and counts its fields (Host included).
func headerBytes(r *http.Request) (n, fields int) {
	n = len(r.Method) + len(r.RequestURI) + len(r.Host) + 16
	fields = 1 // Host
	for k, vals := range r.Header {
		fields += len(vals)
		for _, v := range vals {
			n += len(k) + len(v) + 4
		}
	}
	return n, fields
}

// finish recovers a panic into a 500 envelope (when nothing went out yet),
// records metrics and writes the access line.
func (s *Server) finish(w *responseWriter, r *http.Request, info *reqInfo, start time.Time) {
	p := recover()
	if !w.hijacked {
		s.inFlight.Add(-1)
		s.metrics.inFlight.Dec()
	}
	if p != nil && p != http.ErrAbortHandler {
		s.log.WithFields(logrus.Fields{
			"requestId":           info.id,
			logging.FieldCategory: logging.CategoryAPI,
			"panic":               fmt.Sprint(p),
			"stack":               string(debug.Stack()),
		}).Error("handler panicked")
		if !w.wroteHeader {
			s.writeError(w, r, info, apierrors.New(apierrors.CodeInternal, ""), sourceProxy)
		}
	}
	if p == http.ErrAbortHandler && info.reason == "" && w.stalled {
		// The client took nothing for server.send_timeout: cut, as nginx's
		// send_timeout cuts it; the client's doing, not the upstream's.
		info.closed, info.reason = true, "send_timeout"
	}
	if p == http.ErrAbortHandler && info.reason == "" {
		s.aborted(r, info)
	}
	if p == http.ErrAbortHandler && info.aborted && w.wroteHeader && !w.hijacked {
		// The upstream cut its body: what came of it goes out before the
		// connection closes, as nginx sends it. Unflushed, a body shorter
		// than net/http's 4 KiB buffer never left: the client saw the
		// connection close without even a status line. The write deadline
		// is pushed first: armed when those bytes were written, it ran out
		// with the default timeouts at the moment the body timeout did
		// (send_timeout ≤ response_body_timeout; QA: nothing reached the
		// client).
		w.armedAt = 0
		w.armWrite()
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
	status := w.status
	switch {
	case info.closed:
		status = apierrors.StatusClientClosed
	case !w.wroteHeader:
		status = http.StatusOK
	}
	end := s.now()
	elapsed := end.Sub(start)
	info.rt.observe(info.route, status, elapsed.Seconds())
	if info.retried {
		s.metrics.upstreamRetries.Inc()
	}
	s.accessLog(w, r, info, status, end, elapsed)
	if p == http.ErrAbortHandler {
		panic(p) // let net/http abort the connection, as the proxy asked
	}
}

// aborted tells why the reverse proxy cut a response off after its status
// line: the upstream failed mid-body (counted as an upstream error, and the
// access line says so), or the client went away (499).
func (s *Server) aborted(r *http.Request, info *reqInfo) {
	if info.bodyErr == nil || r.Context().Err() != nil {
		info.closed, info.reason = true, reasonClientClosed
		return
	}
	e, reason := apierrors.FromProxyError(info.bodyErr)
	if reason == reasonClientClosed {
		info.closed, info.reason = true, reason
		return
	}
	info.aborted, info.reason = true, reason
	s.metrics.upstreamError(e.Code, reason)
}

func (s *Server) accessLog(w *responseWriter, r *http.Request, info *reqInfo, status int, end time.Time, elapsed time.Duration) {
	lvl := logrus.InfoLevel
	switch {
	case status >= 500:
		lvl = logrus.ErrorLevel
	case info.aborted:
		lvl = logrus.WarnLevel
	}
	if !s.log.IsLevelEnabled(lvl) {
		return
	}
	f := accessFields.Get().(logrus.Fields)
	defer func() { clear(f); accessFields.Put(f) }()
	f["requestId"] = info.id
	f[logging.FieldCategory] = logging.CategoryAPI
	f["method"] = r.Method
	f["path"] = logPath(redact.URI(r.URL.RequestURI()))
	f["route"] = info.rt.names[info.route]
	f["status"] = status
	f["duration"] = float64(elapsed.Microseconds()) / 1000
	f["bytes"] = w.bytes
	f["remoteIp"] = info.client.String()
	if info.user != "" {
		f["user"] = logUser(info.user)
	}
	if info.code != "" {
		f["code"] = string(info.code)
	}
	if info.upstreamStatus != 0 {
		f["upstreamStatus"] = info.upstreamStatus
	}
	if info.upstreamID != "" {
		f["upstreamRequestId"] = info.upstreamID
	}
	if info.aborted {
		f["aborted"] = true
	}
	if info.shadowLimited {
		f["rateLimit"] = "shadow"
	}
	if info.retried {
		f["retried"] = true
	}
	if info.reason != "" {
		f["reason"] = info.reason
		if info.closed && s.cut.Load() {
			f["reason"] = "shutdown" // chatguard closed it, past server.shutdown_timeout
		}
	}
	// An Entry of our own map: Logger.WithFields would copy it first, and
	// logrus copies it again for the hooks, so the map can be reused. The
	// time is the one the duration ended at (logrus would read the clock).
	(&logrus.Entry{Logger: s.log, Data: f, Time: end}).Log(lvl, "request completed")
}

// accessFields recycles the access line's field maps: one map of ten
// entries a request was the largest allocation of the line.
var accessFields = sync.Pool{New: func() any { return make(logrus.Fields, 16) }}

// writeError sends an envelope and counts it.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, info *reqInfo, e *apierrors.Error, source string) {
	info.code = e.Code
	if source == sourceProxy && info.idle != nil && !info.idle.eof.Load() {
		// An answer of chatguard's own before the whole body: net/http
		// would read up to 256 KiB more of it before the answer's head, and
		// a client holding its body back got no answer at all, and kept
		// the connection for good (QA: a 401, 403 or 429 with a stalled
		// body). Full duplex sends the answer at once; the rest of the body
		// is read and dropped afterwards (idleBody.end), which keeps the
		// connection when it comes.
		_ = info.idle.rc.EnableFullDuplex()
	}
	if !info.internal {
		// A request chatguard sent on a polling session's behalf answers
		// a recorder, not a client: no envelope was sent (accounting QA:
		// a long-poll's timeout counted one no client got).
		s.metrics.envelopes.WithLabelValues(envelopeCode(e.Code), source).Inc()
	}
	s.cors.grant(r, w.Header())
	apierrors.Write(w, r, e, info.id, s.now())
}

// idleBody is a request body whose client must send more within timeout
// of each read (nginx's client_body_timeout; none when timeout is 0): a
// client that stalls mid-body held its connection and an upstream
// connection for good. The deadline is the connection's; it is lifted once
// the body is read whole, before net/http's background read (which watches
// for the client leaving while the response is made) could meet it.
type idleBody struct {
	io.ReadCloser
	w        http.ResponseWriter // net/http's own, for closeConn
	rc       *http.ResponseController
	timeout  time.Duration
	timedOut *atomic.Bool
	// disarmed: the upstream answered before the whole body (an early
	// answer streams to the client while the rest of the body may never
	// come); a deadline then would cut that response (net/http cancels the
	// request on the failed read).
	disarmed atomic.Bool
	released atomic.Bool   // end: the transport's writer reads no more
	eof      atomic.Bool   // a Read returned io.EOF: the body was read whole
	busy     chan struct{} // holds a token while a read is in progress
	// closeErr: a Close through r.Body failed: net/http's body then read
	// part of what was left and gave up, without closing the connection
	// itself. (ReverseProxy's and its transport's Closes stop at its own
	// wrapper and never get here; the polling inspection's does.)
	closeMu  sync.Mutex
	closeErr error
}

// Close closes the body, noting a failure (see closeErr).
func (b *idleBody) Close() error {
	b.closeMu.Lock() // held across the Close: end must not see the body closed before the error
	defer b.closeMu.Unlock()
	err := b.ReadCloser.Close()
	if err != nil && b.closeErr == nil {
		b.closeErr = err
	}
	return err
}

// disarm lifts the timeout (for good, but after rearm); the handler's
// goroutine calls it.
func (b *idleBody) disarm() {
	if b == nil || !b.disarmed.CompareAndSwap(false, true) {
		return
	}
	_ = b.rc.SetReadDeadline(time.Time{})
}

// rearm puts the timeout back once an answer that lifted it is over, a
// read in progress included, so that a full-duplex upload whose client
// stalls after the app's whole answer still ends (the handler's goroutine
// calls it; the body is not at its end, so net/http's own background read
// has not started).
func (b *idleBody) rearm() {
	if b == nil || b.timeout <= 0 || b.eof.Load() || !b.disarmed.CompareAndSwap(true, false) {
		return
	}
	_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
}

// closeConn makes net/http close the client's connection after the
// answer, whose head went out without Connection: close, when the rest of
// the body will not be read: left open, the connection was kept for a next
// request that the unread body would have garbled. It is what
// http.MaxBytesReader documents for a body over its limit; the handler's
// goroutine calls it, once nothing else writes the answer (ReverseProxy's
// flushes ran on a timer of their own).
func (b *idleBody) closeConn() {
	if b == nil {
		return
	}
	_, _ = http.MaxBytesReader(b.w, io.NopCloser(strings.NewReader("x")), 0).Read(make([]byte, 1))
}

// errBodyTimeout: the client sent no more of its body within
// server.body_read_timeout.
var errBodyTimeout = errors.New("proxy: the client sent no more of its request body in time")

// Lingering after an early answer, as nginx's lingering_close: how long
// the rest of the body is read and dropped, in all and between two reads.
const (
	lingerTime    = 30 * time.Second
	lingerTimeout = 5 * time.Second
)

// end ends the client's body after an early answer, once the answer is
// logged: the transport's writer reads no more of it. With linger, the
// rest is read and dropped, as nginx does, for at most lingerTime and
// lingerTimeout between reads (and until stop says the server drains), so
// that the connection closes on a client that has sent everything. Closed
// under a client still sending (net/http waits 500 ms without reading),
// the socket answers its next bytes with a reset, which discards the
// answer from the client's receive buffer if it had not read it yet: a
// client that sends its whole body before reading got "connection reset"
// instead of the 413. Without linger, a read still waiting for the client
// ends at once. Either way net/http, which reads up to 256 KiB of a body
// when the handler returns, no longer waits on a client that stalled with
// no deadline: that client got no answer at all (nor did the connection
// close).
func (b *idleBody) end(linger bool, stop func() bool) {
	if b == nil {
		return
	}
	b.released.Store(true)
	err := error(errBodyReleased)
	if linger {
		_ = b.rc.Flush() // the answer before the wait
		until := time.Now().Add(lingerTime)
		buf := make([]byte, 4<<10)
		for err = nil; err == nil && !stop(); {
			d := time.Now().Add(lingerTimeout)
			if d.After(until) {
				d = until
			}
			_ = b.rc.SetReadDeadline(d)
			_, err = b.ReadCloser.Read(buf)
		}
	}
	// A body net/http already closed needs no deadline to end it: when the
	// answer's head went out it read a small body whole (or gave up on a
	// large one and closes the connection). The deadline would then land
	// on its background read of the next request, and now and then fail
	// it: that request's context cancelled, the connection reset (QA soak:
	// 1 % of requests after a 401 of chatguard's).
	if err != io.EOF && !errors.Is(err, http.ErrBodyReadAfterClose) {
		_ = b.rc.SetReadDeadline(aLongTimeAgo)
	}
	if errors.Is(err, http.ErrBodyReadAfterClose) {
		b.closeMu.Lock()
		if b.closeErr != nil {
			err = b.closeErr // closed by a Close of ours that failed, not read whole
		}
		b.closeMu.Unlock()
	}
	if err != io.EOF && !errors.Is(err, http.ErrBodyReadAfterClose) {
		// What is left of the body must never be read as a request: an
		// answer sent in full duplex (chatguard's own before the body's
		// end) went out without Connection: close. A body net/http closed
		// itself it read whole, or gave up on and closes the connection
		// for (review: closing after those dropped keep-alive on the
		// stats endpoint's answer to a GET with a small body).
		b.closeConn()
	}
	// net/http resets the deadline if a read is still in progress when the
	// handler returns: wait for the writer's (it ends now), briefly.
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case b.busy <- struct{}{}:
		<-b.busy
	case <-t.C:
	}
}

// errBodyReleased: the upstream answered before the whole body, and the
// handler is done.
var errBodyReleased = errors.New("proxy: the request body is not read after an early answer")

func (b *idleBody) Read(p []byte) (int, error) {
	b.busy <- struct{}{}
	defer func() { <-b.busy }()
	if b.released.Load() {
		return 0, errBodyReleased
	}
	if b.timedOut.Load() {
		return 0, errBodyTimeout
	}
	if b.disarmed.Load() || b.timeout <= 0 {
		n, err := b.ReadCloser.Read(p)
		if err == io.EOF {
			b.eof.Store(true)
		}
		return n, err
	}
	_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	if b.disarmed.Load() { // disarmed meanwhile: its clearing may have come first
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	n, err := b.ReadCloser.Read(p)
	var ne net.Error
	switch {
	case err == io.EOF:
		b.eof.Store(true)
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.As(err, &ne) && ne.Timeout():
		b.timedOut.Store(true)
		return n, errBodyTimeout
	}
	return n, err
}

// checkedQueryParam numbers the query parameters chatguard decides on: the
// token on every route (1), Engine.IO's version, transport and session
// under the Socket.IO path (2-4); 0 for any other name.
func checkedQueryParam(name string) int {
	switch name {
	case "token":
		return 1
	case "EIO":
		return 2
	case "transport":
		return 3
	case "sid":
		return 4
	}
	return 0
}

// maxQueryParams is the most parameters net/url reads of a query: it
// returns nothing of one with more. 10,000 unless GODEBUG's
// urlmaxqueryparams sets another limit (N: fewer than N; 0: none, here
// -1), as net/url reads it (review: with a lower setting, a query between
// the two passed unread).
var maxQueryParams = queryParamLimit(os.Getenv("GODEBUG"))

func queryParamLimit(godebug string) int {
	limit := 10000
	for _, kv := range strings.Split(godebug, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(kv), "urlmaxqueryparams="); ok {
			switch n, err := strconv.Atoi(v); {
			case err != nil || n < 0:
			case n == 0:
				limit = -1
			default:
				limit = n - 1
			}
		}
	}
	return limit
}

// suspectQueryParam finds a parameter chatguard decides on that chatguard
// and the app would read differently: written so that Go's parser skips it
// (a ';', a bad escape), which Express reads, or given more than once (Go
// reads the first, engine.io the last: ?sid=unknown&sid=<real session> was
// a session chatguard never saw, uninspected, while engine.io applied its
// packets to the real one; Express makes an array of it). Engine.IO's
// names count only when socketIO (asked only then) says the request is for
// the Socket.IO path: elsewhere they are the app's own (?transport=car;bus).
func suspectQueryParam(rawQuery string, socketIO func() bool) (name, problem string) {
	var seen [5]bool
	sio := 0 // 0 unknown, 1 yes, 2 no
	for q := rawQuery; q != ""; {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		n, _, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(n, "%+") {
			if un, err := url.QueryUnescape(n); err == nil {
				n = un
			}
		}
		i := checkedQueryParam(n)
		if i == 0 {
			continue
		}
		if i > 1 {
			if sio == 0 {
				sio = 2
				if socketIO() {
					sio = 1
				}
			}
			if sio == 2 {
				continue
			}
		}
		if strings.ContainsAny(pair, ";%") {
			if _, err := url.ParseQuery(pair); err != nil {
				return n, "does not parse"
			}
		}
		if seen[i] {
			return n, "is given more than once"
		}
		seen[i] = true
	}
	return "", ""
}

// limitedBody is a request body cut at limit bytes: reading past it fails
// with *http.MaxBytesError, as http.MaxBytesReader does, but without
// touching the response.
type limitedBody struct {
	io.ReadCloser
	left, limit int64
	err         error
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1] // one more byte tells "over the limit" from "exactly at it"
	}
	n, err := b.ReadCloser.Read(p)
	if int64(n) <= b.left {
		b.left -= int64(n)
		b.err = err
		return n, err
	}
	n = int(b.left)
	b.left = 0
	b.err = &http.MaxBytesError{Limit: b.limit}
	return n, b.err
}
