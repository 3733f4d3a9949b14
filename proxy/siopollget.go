package proxy

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	apierrors "github.com/chatguard/chatguard/errors"
	"github.com/chatguard/chatguard/internal/requestid"
	"github.com/chatguard/chatguard/internal/socketio"
)

// A client's GET poll is not proxied one for one. chatguard keeps at most
// one GET in flight upstream per session and lets the client's GET wait
// for whichever comes first: that answer, or packets chatguard owes the
// client itself (a rejected event's envelope, CONNECT_ERROR, DISCONNECT).
// In the second case the upstream's answer, when it comes, is kept for the
// client's next GET. So the client hears of a rejection at once, not after
// the upstream's long-poll (up to pingInterval, 25 s) ends, and nothing the
// upstream sent is lost or reordered.

// upstreamPoll is a GET in flight upstream, or its answer not yet claimed.
type upstreamPoll struct {
	done    chan struct{}
	waiters int // client GETs waiting for it; under the session's mu
	status  int
	header  http.Header
	body    []byte
	// code and reason of chatguard's own failure to get the answer (the
	// app refused, reset, died mid-poll), for the access line of the
	// client's GET that hears it (QA: 1,605 lines of 502 with neither).
	code   apierrors.Code
	reason string
}

// pollGet answers a client's GET poll of a followed session.
func (h *wsHub) pollGet(sess *sioSession, w *responseWriter, r *http.Request, info *reqInfo) {
	for first := true; ; first = false {
		sess.mu.Lock()
		p := sess.poll
		if first && p != nil && p.waiters > 0 && !p.finished() {
			// Another GET of the client's waits already: engine.io answers
			// such an overlap 400 at once (and ends the session). Held, it
			// waited until the session ended (QA: 45 s, then an empty
			// 200). The waiting GET and the session carry on.
			sess.mu.Unlock()
			e := apierrors.New(apierrors.CodeValidation, "a GET poll is already waiting on this Engine.IO session")
			e.Details = map[string]any{"transport": "polling"}
			h.s.writeError(w, r, info, e, sourceProxy)
			return
		}
		sess.getCut = false // the client is here
		if sess.killed && len(sess.notices) == 0 {
			// Ended by chatguard with nothing more to say (a malformed
			// packet, a token a required route refuses): Engine.IO's close,
			// now, not when the upstream's long-poll ends (pingInterval).
			sess.mu.Unlock()
			h.answerPoll(sess, w, r, http.StatusOK, nil, []byte{byte(socketio.EIOClose)}, nil)
			return
		}
		if len(sess.notices) > 0 && (p == nil || !p.finished()) && sess.downBinary == 0 {
			owed := sess.takeNotices()
			sess.mu.Unlock()
			h.answerPoll(sess, w, r, http.StatusOK, nil, nil, owed)
			return
		}
		if p == nil {
			p = h.startPoll(sess, r, info)
			sess.poll = p
		}
		p.waiters++
		wake := sess.wake
		sess.mu.Unlock()

		select {
		case <-p.done:
			sess.mu.Lock()
			p.waiters--
			if sess.poll != p {
				sess.mu.Unlock()
				continue // another GET claimed it
			}
			sess.poll = nil
			var owed [][]byte
			if p.status == http.StatusOK && sess.downBinary == 0 {
				// Not inside a binary packet the upstream's answer began:
				// socket.io-client drops the connection on anything between
				// its text and its attachments ("parse error"; QA).
				owed = sess.takeNotices()
			}
			sess.mu.Unlock()
			if p.status != http.StatusOK && info.code == "" {
				info.code, info.reason = p.code, p.reason
			}
			h.answerPoll(sess, w, r, p.status, p.header, p.body, owed)
			return
		case <-wake:
			sess.mu.Lock()
			p.waiters--
			sess.mu.Unlock()
			continue
		case <-r.Context().Done():
			info.closed = true
			sess.mu.Lock()
			p.waiters--
			// A WebSocket that holds the session (upgraded, or probing)
			// is the client, still there: its old GET does not count.
			alone := p.waiters == 0 && sess.poll == p && !p.finished() && !sess.upgraded
			left := alone && !sess.wsBusy
			// Unless the probe completes the upgrade, or the client polls
			// again, the probe's end ends the session (see detach).
			sess.getCut = alone && sess.wsBusy
			sess.mu.Unlock()
			if left {
				// The client's connection closed while it waited, and no
				// other GET waits: the client is gone. Directly, the upstream
				// would see its long-poll cut and close the session at once
				// ("transport error"); kept open, it noticed only by its ping
				// timeout, 45 s later, and the socket lingered in the stats.
				// The session ends, which cuts the upstream's long-poll.
				sess.ended()
			}
			return
		}
	}
}

func (p *upstreamPoll) finished() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startPoll sends the client's GET upstream on the session's behalf; the
// caller holds sess.mu. The request lives as long as the session, not as
// the client's request: its answer must not be lost when chatguard answers
// the client's GET itself first. A client that leaves while it waits ends
// the session (see pollGet), and with it this request.
func (h *wsHub) startPoll(sess *sioSession, r *http.Request, info *reqInfo) *upstreamPoll {
	p := &upstreamPoll{done: make(chan struct{})}
	own := &reqInfo{id: info.id, rt: info.rt, route: info.route, peer: info.peer, client: info.client, internal: true}
	own.onResponse = func(resp *http.Response) { h.pollAnswered(sess, resp) }
	ctx := context.WithValue(sess.pollCtx, infoKey{}, own)
	out := r.Clone(ctx)
	out.Body, out.ContentLength = http.NoBody, 0
	out.Header.Del("Accept-Encoding") // a plain body can be read and extended
	h.background(func() {
		failed := false
		defer func() {
			if failed {
				// The client's GET gets this answer, and socket.io-client
				// takes any status but 200 as the transport's end: it opens
				// a new session. Kept for the 60 s grace, this one held a
				// slot of the user's socket cap after an app crash, and a
				// reconnecting client was refused for good (QA). Ended
				// before the client hears it, so that its new session
				// finds the slot free (review).
				sess.ended()
			}
			close(p.done)
		}()
		rec := &recorder{header: http.Header{}}
		h.s.proxy.ServeHTTP(rec, out)
		p.status, p.header, p.body = rec.status, rec.header, rec.body.Bytes()
		p.code, p.reason = own.code, own.reason
		failed = p.status != 0 && p.status != http.StatusOK
		if p.status == http.StatusOK {
			// Read whole here, whatever its size (pollAnswered reads only
			// a small one): a binary packet it began and did not finish
			// holds back what chatguard owes the client.
			sess.mu.Lock()
			sess.downBinary = binaryLeft(sess.downBinary, p.body)
			sess.mu.Unlock()
		}
		if p.status == 0 {
			// No answer: the session ended and cut the request. A client
			// GET still waiting hears Engine.IO's close from chatguard
			// itself (its headers: the CORS grant), not an empty 200 with
			// none, which a browser reports as a CORS failure.
			p.status, p.header, p.body = http.StatusOK, nil, []byte{byte(socketio.EIOClose)}
		}
	})
	return p
}

// tellUpstream POSTs packets to the upstream on a polling session's behalf.
func (h *wsHub) tellUpstream(sess *sioSession, packets [][]byte) {
	sess.mu.Lock()
	path, host, sid := sess.path, sess.host, sess.sid
	sess.mu.Unlock()
	if sid == "" || path == "" {
		return
	}
	u := url.URL{Path: path, RawQuery: url.Values{"EIO": {"4"}, "transport": {"polling"}, "sid": {sid}}.Encode()}
	own := &reqInfo{id: sess.reqID, rt: h.s.routing.Load(), peer: sess.ip, client: sess.ip, internal: true}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), infoKey{}, own), 5*time.Second)
	defer cancel()
	body := socketio.JoinPayload(packets)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Host = host
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	req.Header.Set(requestid.Header, sess.reqID)
	h.s.proxy.ServeHTTP(&recorder{header: http.Header{}}, req)
}

// answerPoll writes a poll's answer: the upstream's (status, header, body;
// nil when there is none) followed by what chatguard owes the client.
func (h *wsHub) answerPoll(sess *sioSession, w *responseWriter, r *http.Request, status int, header http.Header, body []byte, owed [][]byte) {
	if len(owed) > 0 {
		switch {
		case len(body) == 1 && body[0] == byte(socketio.EIOClose):
			// Engine.IO's close last: the client reads no further (review:
			// a DISCONNECT behind it was lost, and the client reconnected).
			body = socketio.JoinPayload(append(owed, body))
		case len(body) > 0 && !(len(body) == 1 && body[0] == byte(socketio.EIONoop)):
			body = socketio.JoinPayload(append([][]byte{body}, owed...))
		default:
			body = socketio.JoinPayload(owed)
		}
	}
	for k, v := range header {
		w.Header()[k] = v
	}
	if header == nil { // chatguard's own answer
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		h.s.cors.grant(r, w.Header())
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Del("Transfer-Encoding")
	w.WriteHeader(status)
	if _, err := w.Write(body); err != nil {
		// The client took none of it (server.send_timeout) or left: what
		// the answer carried is lost to it, so the session cannot go on.
		// Ended, and the request aborted as a proxied one is, so that its
		// access line says 499 with its reason, not 200 (QA).
		sess.ended()
		panic(http.ErrAbortHandler)
	}
	sess.mu.Lock()
	done := sess.killed && len(sess.notices) == 0 || sess.closed
	sess.mu.Unlock()
	if done {
		sess.ended()
	}
}

// takeNotices hands over what the client is owed; the caller holds s.mu.
func (s *sioSession) takeNotices() [][]byte {
	owed := s.notices
	s.notices = nil
	return owed
}

func (s *sioSession) closeSeen() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// recorder is the ResponseWriter of a poll chatguard sends upstream itself.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
		// engine.io sends its poll answers with their length: one
		// allocation of that size, not a buffer doubled up to it (QA: a
		// stalled reader's 18 MB answer held 2.5 times over).
		if n, err := strconv.Atoi(r.header.Get("Content-Length")); err == nil && n > 0 && n <= 64<<20 {
			r.body.Grow(n)
		}
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
