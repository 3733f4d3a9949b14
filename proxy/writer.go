package proxy

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chatguard/chatguard/internal/requestid"
)

// responseWriter records what the handler did with a response: status, bytes,
// whether headers went out, whether the connection was hijacked. It unwraps
// for http.ResponseController, so flushing (event streams) and hijacking
// (upgrades) reach the real writer.
type responseWriter struct {
	http.ResponseWriter
	status      int
	bytes       int64 // body bytes sent (none for HEAD: net/http eats them)
	head        bool
	wroteHeader bool
	// http10: the client speaks HTTP/1.0, which has no 1xx responses (it
	// would take a 103 for the final answer; RFC 9110 15.2): none is sent.
	http10 bool
	// onHijack is called with the hijacked connection; it returns the
	// connection the caller gets (so that the server can track and close it).
	onHijack func(net.Conn) net.Conn
	hijacked bool
	// smallBuffers gives the hijacked connection buffers of wsBufferSize
	// instead of net/http's 4 KiB ones (a relayed WebSocket keeps them for
	// its whole life).
	smallBuffers bool
	// passThrough: the response is the upstream's, whose headers go out as
	// they came: no Content-Type is sniffed and added when it sent none.
	passThrough bool
	// requestID and lists are chatguard's own fields on every final
	// response: the request id and the RateLimit fields. They are set again
	// when the final status goes out, because ReverseProxy clears the header
	// map after relaying a 1xx (Node answers Expect: 100-continue itself),
	// and the upstream's own X-Request-ID must not make a second value.
	// lists are Structured Field lists (RateLimit, RateLimit-Policy): an
	// upstream's own policies stay beside chatguard's.
	requestID string
	lists     http.Header
	// closeAfter: the connection closes after this response (a chunked or
	// HTTP/1.0 body), which its final head says even after a 1xx.
	closeAfter bool
	// sendTimeout bounds one write to the client (nginx's send_timeout): a
	// client that takes nothing for that long is cut, rather than holding
	// the upstream's connection and the copy for as long as it likes.
	// armedAt is when the write deadline was last pushed (see armWrite);
	// stalled: a write hit it.
	sendTimeout time.Duration
	armedAt     int64
	stalled     bool
}

// armWrite pushes the write deadline to now + sendTimeout before a write
// that may block; at most each eighth of sendTimeout (and each second), so
// that a write always has at least 7/8 of it.
func (w *responseWriter) armWrite() {
	if w.sendTimeout <= 0 || w.hijacked {
		return
	}
	now := time.Now().UnixNano()
	if now-w.armedAt < min(int64(w.sendTimeout)/8, int64(time.Second)) {
		return
	}
	if d, ok := w.ResponseWriter.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(time.Unix(0, now).Add(w.sendTimeout))
		w.armedAt = now
	}
}

// disarmWrite lifts the write deadline at the end of a request: with no
// WriteTimeout, net/http leaves it on the connection for the next request.
func (w *responseWriter) disarmWrite() {
	if w.armedAt == 0 || w.hijacked {
		return
	}
	if d, ok := w.ResponseWriter.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(time.Time{})
	}
	w.armedAt = 0
}

// noteWriteErr records a write that hit the send timeout.
func (w *responseWriter) noteWriteErr(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		w.stalled = true
	}
}

// setList puts a list-valued field of chatguard's on the response.
func (w *responseWriter) setList(key, value string) {
	if w.lists == nil {
		w.lists = http.Header{}
	}
	w.lists.Set(key, value)
	w.Header().Set(key, value)
}

// ownFields puts chatguard's fields back on the final response's header.
func (w *responseWriter) ownFields(h http.Header) {
	if w.requestID != "" {
		if v := h[requestid.Header]; len(v) != 1 || v[0] != w.requestID { // usually still there: no allocation
			h[requestid.Header] = []string{w.requestID}
		}
	}
	for k, vs := range w.lists {
		for _, v := range vs {
			if !slices.Contains(h[k], v) {
				h[k] = append(h[k], v)
			}
		}
	}
	if w.closeAfter && !slices.Contains(h["Connection"], "close") {
		h["Connection"] = append(h["Connection"], "close")
	}
}

// wsBufferSize sizes a relayed WebSocket's client-side read and write
// buffers. A frame bigger than a buffer is read into, or written from, the
// message directly; most chat messages fit whole.
const wsBufferSize = 1024

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Informational responses (103 Early Hints) do not end the headers.
		// They carry chatguard's request id alone, as the final one does.
		if w.http10 {
			return
		}
		dropHopByHop(w.Header())
		if w.requestID != "" {
			w.Header()[requestid.Header] = []string{w.requestID}
		}
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.status = code
	w.wroteHeader = true
	w.ownFields(w.Header())
	if c := w.Header()["Connection"]; len(c) > 1 {
		// chatguard's own close (a chunked upload) and the one it put on
		// the upstream's early answer: one is enough (QA).
		w.Header()["Connection"] = slices.Compact(c)
	}
	if h := w.Header(); w.passThrough {
		if _, ok := h["Content-Type"]; !ok {
			h["Content-Type"] = nil // net/http's way to say "send none"
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.armWrite()
	n, err := w.ResponseWriter.Write(b)
	if !w.head {
		w.bytes += int64(n)
	}
	if err != nil {
		w.noteWriteErr(err)
	}
	return n, err
}

func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.armWrite()
	if err := http.NewResponseController(w.ResponseWriter).Flush(); err != nil {
		w.noteWriteErr(err)
	}
}

func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.hijacked = true
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusSwitchingProtocols, true
	}
	if w.onHijack != nil {
		conn = w.onHijack(conn)
	}
	if fc, ok := conn.(interface{ feed([]byte) }); ok && brw.Reader.Buffered() > 0 {
		// The client's first frames came with its handshake: they reach
		// the library from this buffer, not through fc's Read.
		b, _ := brw.Reader.Peek(brw.Reader.Buffered())
		fc.feed(b)
	}
	if w.smallBuffers {
		if brw.Reader.Buffered() == 0 { // else it holds the client's first bytes
			brw.Reader = bufio.NewReaderSize(conn, wsBufferSize)
		}
		if brw.Writer.Buffered() == 0 {
			brw.Writer = bufio.NewWriterSize(conn, wsBufferSize)
		}
	}
	return conn, brw, nil
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// trackedConn is a hijacked connection the server can close on drain.
type trackedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// lengthKnown reports whether the response's end reaches the client without
// the handler returning: a HEAD answer, one without a body, or one whose
// Content-Length went out (net/http writes a chunked answer's last chunk,
// and ends an HTTP/1.0 answer of unknown length by closing, only then).
func (w *responseWriter) lengthKnown() bool {
	if w.head || !w.wroteHeader {
		return w.head
	}
	if w.status == http.StatusNoContent || w.status == http.StatusNotModified || w.status < 200 {
		return true
	}
	return w.Header().Get("Content-Length") != ""
}

// hopByHop are the fields RFC 9110 §7.6.1 keeps to one connection, which
// ReverseProxy drops from a final response but not from a 1xx (QA: a 103's
// Connection, Keep-Alive and Upgrade reached the client).
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// dropHopByHop removes from h the hop-by-hop fields and those its
// Connection names.
func dropHopByHop(h http.Header) {
	dropConnectionNamed(h)
	for _, k := range hopByHop {
		h.Del(k)
	}
}

// dropConnectionNamed removes from h the fields its Connection names.
func dropConnectionNamed(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, k := range strings.Split(f, ",") {
			if k = strings.TrimSpace(k); k != "" {
				h.Del(k)
			}
		}
	}
}
