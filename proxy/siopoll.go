package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"

	apierrors "github.com/chatguard/chatguard/errors"
	"github.com/chatguard/chatguard/internal/socketio"
)

// Engine.IO long-polling: GET receives packets, POST sends them, both with
// the session id in the query once the handshake GET has answered the open
// packet. chatguard follows the session so that presence and per-event
// limits hold on this transport too: an over-limit event is taken out of
// the POST body before it goes upstream, and the client is told on its
// next poll (the packets chatguard owes it are appended to that response).

// pollGrace is how long a polling session is followed without a request:
// Socket.IO's default pingInterval + pingTimeout (25 s + 20 s) and a margin.
const pollGrace = 60 * time.Second

// handshakeGraceDefault is how long a polling session is followed when its
// client never came back after the handshake: socket.io-client sends its
// CONNECT and first poll at once. Such a session holds a slot of the
// per-IP and per-user socket caps, and held it for pollGrace: 5 bare
// handshakes a minute kept an address (a NAT's users) from connecting
// (QA).
const handshakeGraceDefault = 10 * time.Second

// maxPollBody bounds a polling body chatguard reads to inspect.
func (h *wsHub) maxPollBody() int64 { return h.cfg.MaxMessageBytes * 2 }

// postLimit is the most of a polling POST read: the app's own maxPayload
// (its maxHttpBufferSize, 1 MB by default, which engine.io applies to a
// whole POST) once the open packet gave it, else twice
// websocket.max_message_bytes; never over server.max_body_bytes. Before,
// every POST was read whole up to 32 MiB whatever the app accepted: a
// dozen anonymous 20 MB POSTs took a sidecar past its 256 MiB (QA).
func (h *wsHub) postLimit(sess *sioSession) int64 {
	limit := h.maxPollBody()
	sess.mu.Lock()
	if mp := sess.maxPayload; mp > 0 {
		limit = min(limit, max(mp, 1024))
	}
	sess.mu.Unlock()
	if mb := h.s.cfg.Server.MaxBodyBytes; mb > 0 {
		limit = min(limit, mb)
	}
	return limit
}

// servePolling inspects one Engine.IO polling request and proxies it.
func (s *Server) servePolling(w *responseWriter, r *http.Request, info *reqInfo) {
	h := s.ws
	if !h.cfg.Polling {
		e := apierrors.New(apierrors.CodeValidation, "the polling transport is disabled; connect with transports: [\"websocket\"]")
		e.Details = map[string]any{"transport": "polling"}
		s.writeError(w, r, info, e, sourceProxy)
		return
	}
	sid := r.URL.Query().Get("sid")
	if sid == "" {
		if r.Method != http.MethodGet {
			s.proxy.ServeHTTP(w, r)
			return
		}
		sess, e := h.sessionFor(r, info)
		if e != nil {
			h.metrics.outcomes.WithLabelValues(refusalOutcome(e)).Inc()
			s.writeError(w, r, info, e, sourceProxy)
			return
		}
		r.Header.Del("Accept-Encoding") // an uncompressed body can be read and extended
		info.onResponse = func(resp *http.Response) { h.handshakeAnswered(sess, resp) }
		// Deferred: a client that leaves before the upstream answers ends
		// the handler with http.ErrAbortHandler, and its admission must
		// still be given back.
		defer func() {
			if !h.followsPoll(sess.sid) {
				sess.release() // the handshake failed: nothing to follow
			}
		}()
		s.proxy.ServeHTTP(w, r)
		return
	}
	sess := h.polling(sid)
	if sess == nil {
		s.writeError(w, r, info, h.unfollowedSession(sid, "polling"), sourceProxy)
		return
	}
	sess.seen()
	switch r.Method {
	case http.MethodPost:
		forward := h.inspectPost(sess, w, r, info)
		if info.pollClose {
			// Once the POST went upstream, and without holding its answer
			// (review: "ok" came up to a second late).
			defer func() {
				if !h.background(func() { h.closedByClient(sess) }) {
					sess.ended()
				}
			}()
		}
		if !forward {
			return
		}
	case http.MethodGet:
		h.pollGet(sess, w, r, info)
		return
	}
	s.proxy.ServeHTTP(w, r)
}

// closedByClient ends a session whose client POSTed Engine.IO's close,
// once the upstream has read it: engine.io then answers the GET that
// waits with a noop, which goes to the client's waiting GET with the app's
// headers (its CORS grant), as directly. Ended before (as the POST
// arrived), the upstream's long-poll was cut first: the client's GET got
// an empty 200 without CORS headers (a CORS error in the browser), and
// engine.io, seeing its long-poll cut, dropped the session, so that the
// close POST itself got 400 half the time (browser QA).
func (h *wsHub) closedByClient(sess *sioSession) {
	sess.mu.Lock()
	p := sess.poll
	sess.mu.Unlock()
	if p != nil {
		t := time.NewTimer(time.Second)
		select {
		case <-p.done:
		case <-t.C:
		}
		t.Stop()
	}
	sess.ended()
}

// owesPoll reports whether the polling session sid was ended by chatguard
// and its client has yet to poll for what it is owed.
func (h *wsHub) owesPoll(sid string) bool {
	sess := h.polling(sid)
	if sess == nil {
		return false
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	// Or kicked, its DISCONNECT on its way: a block kicks the IP's sockets
	// as it starts, and a poll between the two got 403, which the client
	// took for a transport error and reconnected (e2e QA, 1 run in 5).
	return sess.killed && len(sess.notices) > 0 || sess.kicked && !sess.over
}

// unfollowedSession is the refusal of a request of an Engine.IO session
// chatguard does not follow (on transport): one it ended (refused, kicked,
// closed: not to be reused), or one it never saw the handshake of (a
// restart, another replica), which would run uninspected, and with auth
// required an anonymous CONNECT would pass (QA). The client opens a new
// session, as after engine.io's own "Session ID unknown"; a WebSocket client
// reconnects after a restart as well.
func (h *wsHub) unfollowedSession(sid, transport string) *apierrors.Error {
	h.mu.Lock()
	_, gone := h.gone[sid]
	h.mu.Unlock()
	msg := "this Engine.IO session is unknown to chatguard (it restarted, or another instance saw the handshake); open a new one"
	if gone {
		msg = "this Engine.IO session is closed; open a new one"
	}
	e := apierrors.New(apierrors.CodeValidation, msg)
	e.Details = map[string]any{"transport": transport}
	return e
}

// polling is the polling session chatguard follows as sid; nil: none.
func (h *wsHub) polling(sid string) *sioSession {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.polls[sid]
}

func (h *wsHub) followsPoll(sid string) bool {
	return sid != "" && h.polling(sid) != nil
}

// unfollowPoll stops following sess as a polling session (it upgraded).
func (h *wsHub) unfollowPoll(sid string, sess *sioSession) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.polls[sid] == sess {
		delete(h.polls, sid)
	}
}

func (s *sioSession) seen() {
	s.mu.Lock()
	s.lastSeen = time.Now()
	s.followed = true
	s.mu.Unlock()
}

func (s *sioSession) pollExpired(now time.Time) bool {
	grace := pollGrace
	if d := time.Duration(s.hub.handshakeGrace.Load()); d > 0 && d < grace {
		grace = d
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.followed || s.wsBusy {
		grace = pollGrace
	}
	return s.pair == nil && now.Sub(s.lastSeen) > grace
}

// handshakeAnswered reads the open packet of a handshake response and
// starts following the session.
func (h *wsHub) handshakeAnswered(sess *sioSession, resp *http.Response) {
	if resp.StatusCode != http.StatusOK {
		return
	}
	body, ok := readSmall(resp, h.maxPollBody())
	if !ok {
		return
	}
	for _, pkt := range socketio.SplitPayload(body) {
		if len(pkt) > 0 && pkt[0] == byte(socketio.EIOOpen) {
			sess.opened(pkt[1:])
		} else {
			sess.fromUpstream(websocket.MessageText, pkt)
		}
	}
	sess.mu.Lock()
	sid := sess.sid
	sess.mu.Unlock()
	if sid == "" || len(sid) > 128 {
		return
	}
	sess.mu.Lock()
	sess.polled = true
	// The grace runs from the answer, not from the request: a backend
	// slow to answer the handshake would otherwise eat into the client's
	// time to come back.
	sess.lastSeen = time.Now()
	sess.mu.Unlock()
	h.mu.Lock()
	h.polls[sid] = sess
	h.mu.Unlock()
}

// pollAnswered follows what a poll response carries: CONNECT accepted,
// the session closed or forgotten.
func (h *wsHub) pollAnswered(sess *sioSession, resp *http.Response) {
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode == http.StatusBadRequest {
			sess.ended() // the upstream forgot the session
		}
		return
	}
	body, ok := readSmall(resp, h.maxPollBody())
	if !ok {
		return
	}
	for _, pkt := range socketio.SplitPayload(body) {
		if len(pkt) > 0 && pkt[0] == byte(socketio.EIOClose) {
			sess.closeSeen()
		}
		sess.fromUpstream(websocket.MessageText, pkt)
	}
}

// binaryLeft is how many attachments of a binary packet are still to come
// after a poll answer's packets, pending of them being owed before it.
func binaryLeft(pending int, body []byte) int {
	for _, pkt := range socketio.SplitPayload(body) {
		switch {
		case len(pkt) == 0:
		case pkt[0] == 'b': // a binary attachment, base64
			pending = max(pending-1, 0)
		case pkt[0] == byte(socketio.EIOMessage): // a packet of its own: a binary one begins, any other ends one
			pending = socketio.BinaryAttachments(pkt)
		}
	}
	return pending
}

// inspectPost takes over-limit events (and their attachments) out of a
// POST body. It reports false when it answered the request itself: every
// packet was taken out, so there is nothing to send upstream.
func (h *wsHub) inspectPost(sess *sioSession, w *responseWriter, r *http.Request, info *reqInfo) bool {
	limit := h.postLimit(sess)
	var body []byte
	var err error
	if r.ContentLength <= limit { // a declared length over it is refused unread
		body, err = io.ReadAll(io.LimitReader(r.Body, limit+1))
	}
	_ = r.Body.Close()
	if info.bodyTimedOut.Load() {
		h.s.bodyTimedOut(w, r, info)
		return false
	}
	if r.ContentLength > limit || err != nil || int64(len(body)) > limit {
		// Too big (or unreadable) to inspect: refused, as a WebSocket
		// message over the limit is (1009), and as engine.io refuses a
		// POST over its maxHttpBufferSize, which also ends the session.
		// Passing it on would let the events in it skip their limits.
		e := apierrors.New(apierrors.CodePayloadTooLarge, "")
		e.Details = map[string]any{"limitBytes": limit}
		e.Header = http.Header{"Connection": {"close"}}
		h.s.writeError(w, r, info, e, sourceProxy)
		if err == nil && !info.closed {
			sess.ended() // the client opens a new session, as after engine.io's 413
		}
		return false
	}
	packets := socketio.SplitPayload(body)
	kept := packets[:0:0]
	var replies [][]byte
	kill, closing, rewritten := false, false, false
	why := "" // the first kill's reason
	for _, pkt := range packets {
		t, data, binary, err := socketio.ParseEIO(pkt)
		switch {
		case err == nil && (binary || t == socketio.EIOMessage) && (kill || sess.ending.Load()):
			// The session ends (a packet of this POST ended it, or a kick,
			// a block): the rest of its Socket.IO packets are dropped
			// unread, and make no log line each (QA: 40,000 of them in one
			// POST wrote 9.8 MB). Engine.IO's own (a close) still pass.
		case err != nil:
			kept = append(kept, pkt)
		case binary:
			forward, v := sess.attachment()
			if forward {
				kept = append(kept, pkt)
			}
			if v.kill && !kill {
				why = v.why
			}
			kill = kill || v.kill
		case t == socketio.EIOClose: // the client closes the session
			closing = true
			kept = append(kept, pkt)
		case t == socketio.EIOMessage:
			v := sess.clientPacket(data)
			switch {
			case v.upstream != nil:
				kept = append(kept, append([]byte{byte(socketio.EIOMessage)}, v.upstream...))
				rewritten = true
			case v.forward:
				kept = append(kept, pkt)
			}
			replies = append(replies, v.replies...)
			if v.kill && !kill {
				why = v.why
			}
			kill = kill || v.kill
		default:
			kept = append(kept, pkt)
		}
	}
	if len(replies) > 0 || kill {
		sess.deliver(verdict{replies: replies, kill: kill, why: why})
	}
	if closing {
		info.pollClose = true // the session ends once the upstream heard it (closedByClient)
	}
	if len(kept) == len(packets) && !rewritten {
		setRequestBody(r, body)
		return true
	}
	if len(kept) == 0 {
		h.s.writeAccepted(w, r)
		return false
	}
	setRequestBody(r, socketio.JoinPayload(kept))
	return true
}

func readSmall(resp *http.Response, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil || int64(len(body)) > limit {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		return nil, false
	}
	_ = resp.Body.Close()
	setBody(resp, body)
	return body, true
}

func setBody(resp *http.Response, body []byte) {
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	resp.Header.Del("Transfer-Encoding")
	resp.TransferEncoding = nil
}

func setRequestBody(r *http.Request, body []byte) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

// writeAccepted answers a polling POST as Engine.IO answers one it accepted.
func (s *Server) writeAccepted(w http.ResponseWriter, r *http.Request) {
	s.cors.grant(r, w.Header())
	w.Header().Set("Content-Type", "text/html")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("ok"))
}
