package proxy

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	stderrors "errors"
	"fmt"
	"io"
	"log"
	"math"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/sirupsen/logrus"

	apierrors "github.com/chatguard/chatguard/errors"
	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/requestid"
)

// defaultTransport is the lean HTTP/1.1 client for a plain-HTTP upstream (a
// sidecar's own pod) and net/http's Transport for HTTPS.
func defaultTransport(target *url.URL, c config.Proxy) http.RoundTripper {
	if target.Scheme == "http" {
		addr := target.Host
		if target.Port() == "" {
			addr = net.JoinHostPort(target.Hostname(), "80")
		}
		return newUpstreamTransport(addr, c.DialTimeout, c.IdleConnTimeout, c.ResponseHeaderTimeout, c.MaxIdleConns)
	}
	return newTransport(c)
}

func newTransport(c config.Proxy) *http.Transport {
	return &http.Transport{
		// No Proxy: a sidecar talks to its own pod, whatever HTTP_PROXY says.
		DialContext: (&net.Dialer{
			Timeout:   c.DialTimeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          c.MaxIdleConns,
		MaxIdleConnsPerHost:   c.MaxIdleConns,
		IdleConnTimeout:       c.IdleConnTimeout,
		ResponseHeaderTimeout: c.ResponseHeaderTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Pass Accept-Encoding and compressed bodies through untouched.
		DisableCompression: true,
		WriteBufferSize:    32 << 10,
		ReadBufferSize:     32 << 10,
	}
}

func (s *Server) newReverseProxy(target *url.URL, transport http.RoundTripper) *httputil.ReverseProxy {
	redirects := newLocationRewriter(target)
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			info := infoFrom(pr.In.Context())
			pr.SetURL(target)
			// The path as the client sent it, as nginx passes it: Go
			// re-encodes a path holding a character it would escape ({, |,
			// ^, a quote) from its decoded form, and so also turned the
			// client's %2F into a real separator (Express then routed
			// /api/files/reports%2F2024|final.pdf to a 404).
			if raw, ok := rawPath(pr.In.RequestURI); ok {
				if joined := strings.TrimSuffix(target.EscapedPath(), "/") + raw; joined != pr.Out.URL.EscapedPath() {
					pr.Out.URL.Opaque = joined
				}
			}
			// The query as the client sent it: ReverseProxy drops the
			// parameters Go cannot parse (a ';', a stray '%'), which Express
			// reads (?name=a;b is name "a;b"), and the app lost them
			// without a word. nginx passes the query unchanged too.
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			if target.RawQuery != "" {
				pr.Out.URL.RawQuery = target.RawQuery + "&" + pr.In.URL.RawQuery
				if pr.In.URL.RawQuery == "" {
					pr.Out.URL.RawQuery = target.RawQuery
				}
			}
			if s.cfg.Proxy.PreserveHost {
				pr.Out.Host = pr.In.Host
			}
			s.trust.setForwarded(pr, info.peer, info.client)
			// Set again: a client that named it in Connection had it
			// removed with the hop-by-hop headers.
			pr.Out.Header.Set(requestid.Header, info.id)
			// chatguard answers Expect itself (net/http sends 100 Continue
			// when the body is first read); forwarded, Node would send a
			// second 100 and the upstream would decide what only the
			// proxy's checks should.
			info.expect = strings.EqualFold(pr.In.Header.Get("Expect"), "100-continue")
			pr.Out.Header.Del("Expect")
			forwardTrailers(pr)
			if !isWebSocketUpgrade(pr.In) {
				// Only WebSocket upgrades pass: any other (h2c, a custom
				// protocol) would open a raw tunnel past every check, as
				// h2c smuggling does. Without the header it is a plain
				// request, as nginx sends it; a 101 anyway is a 502.
				pr.Out.Header.Del("Upgrade")
				pr.Out.Header.Del("Connection")
			}
		},
		Transport:    transport,
		BufferPool:   bufferPool{},
		ErrorHandler: s.upstreamFailed,
		ModifyResponse: func(resp *http.Response) error {
			redirects.rewrite(resp, resp.Request)
			return s.rewriteError(resp)
		},
		ErrorLog: newStdLogger(s.log, logrus.WarnLevel),
	}
}

// forwardTrailers sends a chunked request's trailers on (Node's
// req.trailers): Out took a copy of In's map before the body was read, and
// net/http fills In's once it is. Only the names the request declared in
// Trailer go, and none that chatguard sets or that frames, routes or
// authenticates a request (RFC 9110 §6.5.1): net/http merges every
// trailer field it receives, declared or not, and a forged
// X-Forwarded-For or Authorization there would reach the app (review).
func forwardTrailers(pr *httputil.ProxyRequest) {
	pr.Out.Trailer = nil
	if len(pr.In.Trailer) == 0 {
		return
	}
	out := http.Header{}
	for k := range pr.In.Trailer {
		if !forbiddenTrailer(k) {
			out[k] = nil
		}
	}
	if len(out) == 0 {
		return
	}
	pr.Out.Trailer = out
	pr.Out.Body = &trailerBody{ReadCloser: pr.Out.Body, in: pr.In.Trailer, out: out}
}

// forbiddenTrailer: a field that may not come after the body, or that
// chatguard itself decides.
func forbiddenTrailer(k string) bool {
	switch k {
	case "Authorization", "Proxy-Authorization", "Cookie", "Host", "Content-Length", "Content-Type",
		"Content-Encoding", "Content-Range", "Transfer-Encoding", "Trailer", "Te", "Connection",
		"Keep-Alive", "Upgrade", "Expect", "Forwarded", "X-Real-Ip", requestid.Header:
		return true
	}
	return strings.HasPrefix(k, "X-Forwarded-") || strings.HasPrefix(k, "Proxy-")
}

// trailerBody copies the declared trailers' values into the outgoing
// request's map when the body ends: Request.Write writes them after the
// last chunk, on the goroutine that read the body.
type trailerBody struct {
	io.ReadCloser
	in, out http.Header
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		for k := range b.out {
			b.out[k] = b.in[k]
		}
	}
	return n, err
}

// forwardedPath is the path the upstream gets for r (see Rewrite): the
// target's as it came, or, for the forms rawPath declines, Go's encoding of
// the decoded path. Routes are matched on it, as Express matches what it
// gets (review: an absolute-form target's %2F, re-encoded as a real slash,
// was routed on the path chatguard did not send).
func forwardedPath(r *http.Request) string {
	if raw, ok := rawPath(r.RequestURI); ok {
		return raw
	}
	return r.URL.EscapedPath()
}

// rawPath is the path of an origin-form request target as it came ("" and
// false for the absolute and asterisk forms, and for a path starting with
// "//", which as a URL's opaque part would be sent as a host).
func rawPath(requestURI string) (string, bool) {
	if !strings.HasPrefix(requestURI, "/") || strings.HasPrefix(requestURI, "//") {
		return "", false
	}
	p, _, _ := strings.Cut(requestURI, "?")
	return p, true
}

// upstreamFailed answers the proxy's own failures to reach the upstream.
func (s *Server) upstreamFailed(w http.ResponseWriter, r *http.Request, err error) {
	info := infoFrom(r.Context())
	if stderrors.Is(err, errBodyTimeout) || info.bodyTimedOut.Load() {
		s.bodyTimedOut(w, r, info)
		return
	}
	e, reason := apierrors.FromProxyError(err)
	info.reason = reason
	if info.pollClose && (reason == "reset" || reason == "eof") {
		// engine.io closing the session on the client's close packet
		// destroys the POST that carried it (polling.js doClose): the
		// session's normal end, which the client ignores, not a failure
		// of the upstream's to page for (QA: ERROR 502 lines and upstream
		// "reset" errors on ordinary disconnects). The client gets what
		// engine.io answers an accepted POST.
		info.reason = "session_closed"
		s.log.WithFields(logrus.Fields{"requestId": info.id, logging.FieldCategory: logging.CategorySocket}).
			WithError(err).Debug("the backend closed the polling session as the client asked")
		s.writeAccepted(w, r)
		return
	}
	if e.Code == apierrors.CodePayloadTooLarge {
		info.bodyLeft = true // the rest of the body is never read: linger
	}
	if info.internal && reason == reasonClientClosed {
		// chatguard's own long-poll for a polling session, cut because the
		// session ended (the client left or closed it): nobody's request
		// failed (re-check of QA: ordinary disconnects counted here).
		return
	}
	s.metrics.upstreamError(e.Code, reason)
	entry := s.log.WithFields(logrus.Fields{
		"requestId":           info.id,
		logging.FieldCategory: logging.CategoryAPI,
		"reason":              reason,
		"code":                string(e.Code),
	}).WithError(err)
	if reason == reasonClientClosed {
		info.closed = true
		entry.Debug("client went away before the upstream answered")
		if rw, ok := w.(*responseWriter); ok && !rw.wroteHeader {
			// Returning would make net/http send an empty 200 to a
			// client that may still be reading (it only stopped sending).
			panic(http.ErrAbortHandler)
		}
		return
	}
	if rw, ok := w.(*responseWriter); ok && rw.wroteHeader {
		entry.Warn("upstream failed after the response started")
		return
	}
	if reason == "bad_request" {
		// The client's malformed upload (a bad chunk size): its doing, not
		// the upstream's, and no warning for on-call (QA).
		entry.Info("the client's request body is malformed")
	} else {
		entry.Warn("upstream request failed")
	}
	s.writeError(w, r, info, e, sourceProxy)
}

// bodyTimedOut answers a request whose client stopped sending its body
// (server.body_read_timeout) with 408, as nginx does: the client's fault,
// not counted as an upstream error.
func (s *Server) bodyTimedOut(w http.ResponseWriter, r *http.Request, info *reqInfo) {
	info.reason = "body_timeout"
	s.log.WithFields(logrus.Fields{
		"requestId":           info.id,
		logging.FieldCategory: logging.CategoryAPI,
		"reason":              info.reason,
	}).Info("the client stopped sending its request body")
	e := apierrors.New(apierrors.CodeValidation, "The request body did not arrive in time")
	e.Status = http.StatusRequestTimeout
	e.Header = http.Header{"Connection": {"close"}}
	s.writeError(w, r, info, e, sourceProxy)
}

// rewriteError turns an upstream error reply into the envelope. Replies
// below 400, event streams and switching protocols are never touched.
func (s *Server) rewriteError(resp *http.Response) error {
	if resp.StatusCode == http.StatusSwitchingProtocols && resp.Request.Header.Get("Upgrade") == "" {
		// A switch nobody asked for: ReverseProxy would tunnel it (the
		// request's Upgrade and the answer's, both absent, match), and the
		// client waited for an answer that never came (QA). A 101 to an
		// Upgrade chatguard removed is refused the same way, by
		// ReverseProxy itself.
		return fmt.Errorf("%w: 101 to a request that asked for no upgrade", apierrors.ErrBadResponse)
	}
	info := infoFrom(resp.Request.Context())
	if info.bodyLeft {
		// net/http would read the rest of the body before sending this
		// answer's head, to keep the connection: from a client that
		// stalled, never (or after the body timeout). nginx closes too.
		resp.Header.Set("Connection", "close")
	}
	if info.onResponse != nil {
		info.onResponse(resp)
	}
	s.cors.learn(resp.Request, resp.Header)
	s.cors.expose(resp.Header) // after learn: a grant keeps the app's own list
	ct := resp.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	if resp.StatusCode < 400 || mt == "text/event-stream" {
		idle := s.cfg.Proxy.ResponseBodyTimeout
		if mt == "text/event-stream" {
			idle = 0 // a stream may be quiet for long: its own heartbeats decide
		}
		watchBody(resp, info, idle)
		if mt == "text/event-stream" {
			resp.Body = s.streams.add(resp.Body, info)
		}
		return nil
	}
	body, truncated, readErr := s.readErrorBody(resp)
	if err := resp.Request.Context().Err(); stderrors.Is(err, context.Canceled) {
		// The client left while the body was read: nobody gets an
		// envelope, and the error handler logs it as 499.
		return err
	}
	status, out := s.classifyReply(info, apierrors.Reply{
		Status: resp.StatusCode, ContentType: ct, Body: body, Truncated: truncated,
		WWWAuthenticate: strings.Join(resp.Header.Values("WWW-Authenticate"), ", "),
	})
	if readErr != nil {
		// The status came, the body did not (it stalled past the response
		// header timeout, or the upstream cut it): the envelope goes by the
		// status, and the failure is the upstream's, logged and counted.
		_, info.reason = apierrors.FromProxyError(readErr)
		s.metrics.upstreamError(info.code, info.reason)
	}

	h := resp.Header
	dropBodyFields(h, resp.StatusCode)
	apierrors.SetHeaders(h, len(out))
	resp.StatusCode = status
	resp.Status = fmt.Sprintf("%d %s", status, http.StatusText(status))
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	if resp.Request.Method == http.MethodHead {
		// The upstream's answer to HEAD has no body to classify, so this
		// envelope is not the one a GET gets, and its length must not be
		// sent as the GET's (RFC 9110 8.6; QA: 176 against 162). No length
		// then, and no body for net/http to count one from.
		h.Del("Content-Length")
		resp.Body, resp.ContentLength = http.NoBody, -1
	}
	resp.TransferEncoding = nil
	resp.Trailer = nil // ReverseProxy would announce the old body's trailers
	resp.Uncompressed = false
	return nil
}

// replacedBodyFields describe the upstream's error body, which the envelope
// replaces, or would let a cache keep the envelope despite its no-store
// (CDN-Cache-Control and Surrogate-Control take precedence at CDNs).
var replacedBodyFields = []string{
	"Content-Encoding", "Content-Length", "Transfer-Encoding", "Trailer", "Etag", "Content-Md5", "Last-Modified",
	"Accept-Ranges", "Content-Disposition", "Content-Location", "Content-Language", "Digest", "Content-Digest",
	"Repr-Digest", "Expires", "Age", "Pragma", "Surrogate-Control", "CDN-Cache-Control", "Cloudflare-CDN-Cache-Control",
}

// dropBodyFields removes from the header of an upstream error answered
// with an envelope the fields that described the upstream's body.
func dropBodyFields(h http.Header, status int) {
	for _, k := range replacedBodyFields {
		h.Del(k)
	}
	if status != http.StatusRequestedRangeNotSatisfiable { // there it describes the representation
		h.Del("Content-Range")
	}
}

// watchBody makes a failed read of a passed-through body (the upstream
// closing or resetting mid-body) known to the access log and the metrics:
// the status line has gone out by then, so the proxy can only abort.
// Upgrades keep their body as it is (it must stay a ReadWriteCloser).
func watchBody(resp *http.Response, info *reqInfo, idle time.Duration) {
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	if ub, ok := resp.Body.(*upstreamBody); ok && idle > 0 {
		// chatguard's own transport: a read deadline on the connection
		// does it without a timer per response.
		ub.idle, idle = idle, 0
	}
	resp.Body = &watchedBody{ReadCloser: resp.Body, info: info, idle: idle}
}

// watchedBody is a passed-through upstream body: it records the error that
// ended it, and gives up on one whose next bytes do not come within idle
// (proxy.response_body_timeout; 0: never), as nginx's proxy_read_timeout
// does. Only time spent waiting in Read counts: a client that reads
// slowly holds the copy in its write, not here.
type watchedBody struct {
	io.ReadCloser
	info *reqInfo
	idle time.Duration

	timer     *time.Timer
	readSince atomic.Int64 // UnixNano when the Read in progress began; 0 between Reads
	stalled   atomic.Bool
	closed    atomic.Bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	if b.idle > 0 {
		b.readSince.Store(time.Now().UnixNano())
		if b.timer == nil {
			// Set before it can fire: check resets it.
			b.timer = time.AfterFunc(time.Duration(math.MaxInt64), b.check)
			b.timer.Reset(b.idle)
		}
	}
	n, err := b.ReadCloser.Read(p)
	if b.idle > 0 {
		b.readSince.Store(0)
		if err != nil && b.stalled.Load() {
			err = fmt.Errorf("upstream response body: nothing for %s (proxy.response_body_timeout): %w", b.idle, context.DeadlineExceeded)
		}
	}
	if err != nil && err != io.EOF && b.info.bodyErr == nil {
		b.info.bodyErr = err
	}
	return n, err
}

// check runs on the timer: a Read waiting idle or longer ends (the body is
// closed under it); otherwise the timer waits for the rest of the time.
func (b *watchedBody) check() {
	if b.closed.Load() {
		return
	}
	wait := b.idle
	if since := b.readSince.Load(); since != 0 {
		waited := time.Since(time.Unix(0, since))
		if waited >= b.idle {
			b.stalled.Store(true)
			_ = b.ReadCloser.Close()
			return
		}
		wait = b.idle - waited
	}
	b.timer.Reset(wait)
}

func (b *watchedBody) Close() error {
	b.closed.Store(true)
	if b.timer != nil {
		b.timer.Stop()
	}
	return b.ReadCloser.Close()
}

// classifyReply turns an upstream error reply into what the client gets
// (the envelope, or the upstream's own envelope), and counts it.
func (s *Server) classifyReply(info *reqInfo, rep apierrors.Reply) (status int, body []byte) {
	res := apierrors.ClassifyUpstream(rep, info.id, s.classify)
	status, body, source := rep.Status, res.Body, sourcePassthrough
	if !res.PassThrough {
		status, body, source = res.Err.HTTPStatus(), res.Err.Marshal(info.id, s.now()), sourceUpstream
	}
	info.upstreamStatus, info.code = rep.Status, apierrors.Code(capText(string(res.Code), maxUpstreamIDBytes))
	if id := res.UpstreamRequestID; id != "" {
		info.upstreamID = capText(id, maxUpstreamIDBytes)
	}
	s.metrics.envelopes.WithLabelValues(envelopeCode(res.Code), source).Inc()
	return status, body
}

// readErrorBody reads at most the inspection cap of an error body, undoing
// gzip or deflate. It reports truncated when the body is larger, cannot be
// decoded or does not arrive in time, and readErr when reading it failed
// (context.DeadlineExceeded for a body that stalled); the body is closed in
// every case.
func (s *Server) readErrorBody(resp *http.Response) (body []byte, truncated bool, readErr error) {
	defer resp.Body.Close()
	limit := int64(s.cfg.Proxy.ErrorInspectBytes)
	if resp.ContentLength > limit {
		return nil, true, nil
	}
	// A stalled body must not hold the request forever.
	var stalled atomic.Bool
	timer := time.AfterFunc(s.cfg.Proxy.ResponseHeaderTimeout, func() { stalled.Store(true); _ = resp.Body.Close() })
	defer timer.Stop()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if stalled.Load() {
			err = context.DeadlineExceeded
		}
		return nil, true, err
	}
	if int64(len(raw)) > limit {
		return nil, true, nil
	}
	plain, err := decodeBody(raw, resp.Header.Get("Content-Encoding"), limit)
	if err != nil {
		return nil, true, nil
	}
	return plain, false, nil
}

// decodeBody undoes a body's Content-Encoding (gzip, deflate), reading at
// most limit decoded bytes: an upstream error body to inspect, a request
// body to key on. Another encoding, a broken stream or more than limit
// bytes is an error.
func decodeBody(raw []byte, encoding string, limit int64) ([]byte, error) {
	var dec io.Reader
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return raw, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		dec = zr
	case "deflate":
		// HTTP's "deflate" is zlib; some servers send raw deflate.
		if zr, err := zlib.NewReader(bytes.NewReader(raw)); err == nil {
			dec = zr
		} else {
			dec = flate.NewReader(bytes.NewReader(raw))
		}
	case "br":
		// What expressjs/compression (1.8 and later) sends for bodies of
		// 1 KB or more when the browser offers it: large validation errors.
		// A decoder allocates up to its stream's window: at most 4 MiB
		// (zlib's and Node's default) and two at a time, or the body is
		// wrapped without details.
		if brotliWindowBits(raw) > maxBrotliWindowBits {
			return nil, stderrors.New("proxy: brotli window over 4 MiB")
		}
		select {
		case brotliSlots <- struct{}{}:
			defer func() { <-brotliSlots }()
		default:
			return nil, stderrors.New("proxy: brotli decoders busy")
		}
		dec = brotli.NewReader(bytes.NewReader(raw))
	default:
		return nil, stderrors.New("proxy: unsupported content encoding")
	}
	plain, err := io.ReadAll(io.LimitReader(dec, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(plain)) > limit {
		return nil, stderrors.New("proxy: decoded body over the limit")
	}
	return plain, nil
}

// maxBrotliWindowBits is the largest brotli window decoded: 4 MiB.
const maxBrotliWindowBits = 22

// brotliSlots bounds the brotli decoders at work at once.
var brotliSlots = make(chan struct{}, 2)

// brotliWindowBits reads the window size (WBITS) from a brotli stream's
// first byte (RFC 7932, 9.1); 0 for an empty stream, 31 for the
// large-window extension, which standard decoders refuse anyway.
func brotliWindowBits(raw []byte) int {
	if len(raw) == 0 {
		return 0
	}
	b := raw[0]
	if b&1 == 0 {
		return 16
	}
	if n := int(b>>1) & 7; n != 0 {
		return 17 + n
	}
	switch m := int(b>>4) & 7; m {
	case 0:
		return 17
	case 1:
		return 31
	default:
		return 8 + m
	}
}

// bufferPool lends the reverse proxy 32 KiB copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// newStdLogger adapts net/http's and httputil's *log.Logger to logrus.
func newStdLogger(l *logrus.Logger, lvl logrus.Level) *log.Logger {
	return log.New(stdWriter{l: l, lvl: lvl}, "", 0)
}

type stdWriter struct {
	l   *logrus.Logger
	lvl logrus.Level
}

func (w stdWriter) Write(p []byte) (int, error) {
	msg, lvl := strings.TrimSpace(string(p)), w.lvl
	if strings.Contains(msg, "ReverseProxy read error during body copy") {
		// The request's own access line says it (aborted, reason) with its
		// requestId; this copy, without one, only matters when debugging.
		lvl = logrus.DebugLevel
	}
	w.l.WithField(logging.FieldCategory, logging.CategorySystem).Log(lvl, msg)
	return len(p), nil
}

// maxUpstreamIDBytes bounds the app's own requestId and the code of its
// own envelope on the access line: they are the app's text, and a log line
// is no place for a page of it (QA: a 20,000-character code).
const maxUpstreamIDBytes = 128

// capText is s cut to at most n bytes, on a character boundary.
func capText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
