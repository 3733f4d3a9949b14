package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/sirupsen/logrus"

	apierrors "github.com/chatguard/chatguard/errors"
	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/identity"
	"github.com/chatguard/chatguard/internal/identity/userkey"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/socketio"
	"github.com/chatguard/chatguard/limiter"
	"github.com/chatguard/chatguard/sessions"
)

// sioSession is one Engine.IO session as chatguard follows it, whichever
// transport carries it (long-polling, then usually a WebSocket): who the
// client is, which namespaces it joined, and what is owed to it. It is the
// sessions.Socket the registry disconnects.
type sioSession struct {
	hub    *wsHub
	reqID  string
	ip     netip.Addr
	reqTok identity.Identity // from the handshake request's token, when it verified
	reqErr error             // why the handshake token did not verify (ErrMissing: none)
	adm    *sessions.Admission
	path   string // the handshake's path and Host, to reach the upstream on the session's behalf
	host   string

	connectMu  sync.Mutex // serialises CONNECT handling
	mu         sync.Mutex
	sid        string            // Engine.IO session id, from the open packet
	maxPayload int64             // the open packet's maxPayload: the app's maxHttpBufferSize
	pair       *wsPair           // the WebSocket transport; nil while polling
	wsBusy     bool              // a WebSocket holds (or is being opened for) the session
	id         identity.Identity // who CONNECT said the client is
	socketID   string            // the registry's id: the first Socket.IO socket id
	registered bool
	namespaces []string          // namespaces the upstream accepted
	nsUser     map[string]string // namespace → the user its last CONNECT was admitted as
	pids       []string          // recovery pids the upstream gave this session's sockets
	skip       int               // binary attachments of a taken-out packet still to drop
	expect     int               // binary attachments of a forwarded packet still to come
	notices    [][]byte          // packets for the client's next poll
	// downBinary: attachments of a binary packet the upstream's last poll
	// answer began but did not finish; the notices wait until they came.
	downBinary int
	lastSeen   time.Time
	followed   bool // polling: a request came after the handshake
	upgraded   bool // the client finished the upgrade to WebSocket
	killed     bool // polling: end the session once the next poll carried the notices
	kicked     bool // Disconnect was called (eviction, admin, block): once is enough
	// convsRefreshed: when a client event last refreshed the socket's
	// conversations (see Registry.RefreshConversations)
	convsRefreshed time.Time
	// ending: chatguard is ending the session (a kill, a kick): what the
	// client sends from now on is dropped unread, not inspected, so that
	// it makes no more log lines (QA: one polling POST of 40,000 packets
	// wrote a line for each, 9.8 MB, after the first had ended the session).
	ending atomic.Bool
	// getCut: the client's connection closed while its GET waited and a
	// WebSocket (a probe) held the session, so the GET did not end it. If
	// the probe ends without the upgrade and no GET came since, the client
	// is gone (a page reload: the browser drops both).
	getCut   bool
	closed   bool // polling: the upstream sent the close packet
	poll     *upstreamPoll
	wake     chan struct{}   // a notice arrived for a waiting GET
	pollCtx  context.Context // the life of polls sent on the session's behalf
	pollStop context.CancelFunc
	telling  sync.WaitGroup // a kick's DISCONNECT on its way upstream (see disconnect)
	over     bool
	polled   bool // the session began on long-polling
	overOnce sync.Once
}

// sessionFor finds the session a Socket.IO request belongs to (by its sid)
// or starts one, admitted against the per-user and per-IP socket limits.
func (h *wsHub) sessionFor(r *http.Request, info *reqInfo) (*sioSession, *apierrors.Error) {
	sid := r.URL.Query().Get("sid")
	if sid != "" {
		// An upgrade of a polling session chatguard follows. Any other sid
		// is refused, as a poll of it is: a session chatguard ended (the
		// backend may still have it) resumed on a WebSocket carried on
		// with the backend's socket, outside presence, the per-user
		// socket cap, kicks and evictions (review); one chatguard never
		// saw would run uninspected.
		if sess := h.polling(sid); sess != nil {
			return sess, nil
		}
		return nil, h.unfollowedSession(sid, "websocket")
	}
	sess := &sioSession{hub: h, reqID: info.id, ip: info.client, sid: sid, lastSeen: time.Now(), wake: make(chan struct{}, 1),
		path: r.URL.Path, host: r.Host}
	sess.pollCtx, sess.pollStop = context.WithCancel(context.Background())
	sess.reqErr = identity.ErrMissing
	if h.cfg.Auth != authNone {
		sess.reqTok, sess.reqErr = h.identify(r)
		if errors.Is(sess.reqErr, identity.ErrConflict) {
			// Valid tokens of two users: the backend reads the query's
			// before the header's, so whichever chatguard counted, the
			// backend could serve the other. Refused in every auth mode.
			return nil, challenge(apierrors.New(apierrors.CodeTokenInvalid, "The request carries tokens of different users."))
		}
	}
	if h.registry != nil {
		adm, err := h.registry.Admit(sess.reqTok.User, info.client)
		if err != nil {
			return nil, socketLimitError(err)
		}
		sess.adm = adm
	}
	return sess, nil
}

// refusalOutcome is the connections_total outcome of a session refused at
// its handshake: over a socket limit, or tokens of two users.
func refusalOutcome(e *apierrors.Error) string {
	if e.Code == apierrors.CodeRateLimitExceeded {
		return outcomeLimited
	}
	return outcomeHandshake
}

func socketLimitError(err error) *apierrors.Error {
	e := apierrors.New(apierrors.CodeRateLimitExceeded, "too many open sockets")
	switch {
	case errors.Is(err, sessions.ErrTooManyUserSockets):
		e.Details = map[string]any{"policy": "sockets_per_user"}
	default:
		e.Details = map[string]any{"policy": "sockets_per_ip"}
	}
	e.Header = http.Header{"Retry-After": {"1"}}
	return e
}

// claimWS reserves the session for one WebSocket. A second one (while the
// first is open) is refused: it would replace the first as the session's
// transport, and the session would then never end when the first does.
func (s *sioSession) claimWS() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wsBusy || s.killed || s.over { // a session chatguard ended is not upgraded either
		return false
	}
	s.wsBusy = true
	return true
}

// attach makes p the session's WebSocket (a probe until the upgrade); false
// when the session already ended, and p must end too.
func (s *sioSession) attach(p *wsPair) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pair = p
	return !s.over
}

// detach is told that p ended. A WebSocket that carried the session ends
// it; a probe that never completed the upgrade leaves polling going.
func (s *sioSession) detach(p *wsPair) {
	s.mu.Lock()
	mine := s.pair == p
	if mine {
		s.pair, s.wsBusy = nil, false
	}
	upgraded, sid, gone := s.upgraded, s.sid, s.clientGoneLocked()
	s.mu.Unlock()
	polling := !upgraded && s.hub.followsPoll(sid)
	if mine && (!polling || gone) {
		s.ended()
	}
}

// clientGoneLocked: the client's last GET was cut while a probe held the
// session, and no GET came or waits since; the caller holds s.mu.
func (s *sioSession) clientGoneLocked() bool {
	return s.getCut && !s.upgraded && (s.poll == nil || s.poll.waiters == 0)
}

// release frees what an unused session holds (its handshake failed).
func (s *sioSession) release() {
	s.mu.Lock()
	sid, gone := s.sid, s.clientGoneLocked()
	s.wsBusy = false
	s.mu.Unlock()
	polling := s.hub.followsPoll(sid)
	if !polling || gone {
		s.ended()
	}
}

// ended unregisters the session: the socket is gone.
func (s *sioSession) ended() {
	s.overOnce.Do(func() {
		s.mu.Lock()
		s.over = true
		id, registered, sid, polled, pids, pair := s.socketID, s.registered, s.sid, s.polled, s.pids, s.pair
		s.mu.Unlock()
		if pair != nil {
			// A probe still open when the polling session ended (a kill,
			// a 413): left, it could complete the upgrade and relay the
			// backend's socket past presence and kicks (review). A
			// WebSocket that carried the session is ending already.
			h := s.hub
			h.background(func() { pair.end(sideChatguard, websocket.StatusNormalClosure, "session ended", "") })
		}
		s.telling.Wait() // at most tellUpstream's 5 s
		s.pollStop()
		h := s.hub
		if len(pids) > 0 {
			h.pids.ended(s, pids, time.Now())
		}
		if sid != "" {
			h.mu.Lock()
			if h.polls[sid] == s {
				delete(h.polls, sid)
			}
			if polled && h.gone != nil {
				// The upstream may still have the session: its sid must not
				// pass later as one chatguard never saw, uninspected.
				h.gone[sid] = time.Now()
			}
			h.mu.Unlock()
		}
		if registered {
			h.registry.DisconnectSocket(id, s)
		}
		if s.adm != nil {
			s.adm.Release()
		}
	})
}

// fromClient inspects one message from the client on the WebSocket and
// reports whether to forward it; what it takes out it answers itself.
func (s *sioSession) fromClient(typ websocket.MessageType, msg []byte) bool {
	if typ == websocket.MessageBinary {
		if s.ending.Load() {
			return false
		}
		forward, v := s.attachment()
		s.deliver(v)
		return forward
	}
	t, data, _, err := socketio.ParseEIO(msg)
	if err != nil {
		return true // not ours to judge: the upstream answers malformed input
	}
	switch t {
	case socketio.EIOUpgrade:
		s.mu.Lock()
		s.upgraded = true
		sid := s.sid
		owed, told, midBinary := s.notices, s.killed, s.downBinary > 0
		s.notices = nil
		p := s.pair
		s.mu.Unlock()
		s.hub.unfollowPoll(sid, s)
		if p != nil && (told || len(owed) > 0 && !midBinary) {
			// Owed while it upgraded, with no GET to carry them (a kick's
			// DISCONNECT, an event's rejection): a WebSocket reads no
			// notices, so it carries them now, and a session told to end
			// then closes (review: a kicked client stayed connected,
			// unseen by the registry). Not in the middle of a binary
			// packet whose attachments come next on the WebSocket, which
			// the relay cannot hold them behind (socket.io-client fails
			// on anything in between): a rejection is dropped then, as it
			// was before; a session told to end ends anyway.
			s.hub.background(func() {
				for _, n := range owed {
					if p.send(n) != nil {
						break
					}
				}
				if told {
					p.end(sideChatguard, websocket.StatusNormalClosure, "disconnected", "")
				}
			})
		}
	case socketio.EIOMessage:
		if s.ending.Load() {
			return false // see ending; Engine.IO's own packets (an upgrade under way) still pass
		}
		v := s.clientPacket(data)
		s.deliver(v)
		if v.upstream != nil {
			s.mu.Lock()
			p := s.pair
			s.mu.Unlock()
			if p != nil {
				_ = p.sendUp(append([]byte{byte(socketio.EIOMessage)}, v.upstream...))
			}
			return false
		}
		return v.forward
	}
	return true
}

// attachment decides one binary message from the client: an attachment of
// a packet that was taken out is dropped, one of a forwarded packet goes
// on. A binary message outside a binary packet is nothing Socket.IO's
// default parser sends (a custom one, such as the msgpack parser, sends
// every packet so): see foreign.
func (s *sioSession) attachment() (forward bool, v verdict) {
	s.mu.Lock()
	switch {
	case s.skip > 0:
		s.skip--
		s.mu.Unlock()
		return false, verdict{}
	case s.expect > 0:
		s.expect--
		s.mu.Unlock()
		return true, verdict{}
	}
	s.mu.Unlock()
	v = s.foreign("socket.io binary message outside a binary packet refused: not the default parser, cannot be inspected")
	return v.forward, v
}

// foreign decides a packet of a parser other than Socket.IO's default one
// (a binary message outside a binary packet, or a text packet whose type
// the default parser does not know): chatguard cannot read it, and it could
// carry a CONNECT past the token check, so with websocket.auth required it
// ends the session (reason malformed, msg logged); otherwise it goes on
// and the upstream judges it (the default parser closes the connection).
func (s *sioSession) foreign(msg string) verdict {
	h := s.hub
	if h.cfg.Auth != authRequired {
		return verdict{forward: true}
	}
	h.s.log.WithFields(logrus.Fields{
		"requestId": s.reqID, logging.FieldCategory: logging.CategorySecurity,
	}).Warn(msg)
	return verdict{kill: true, why: "malformed"}
}

// verdict is what to do with one client packet.
type verdict struct {
	forward bool
	replies [][]byte // Engine.IO packets for the client
	kill    bool     // close the session after the replies
	// why is the forced-disconnect reason of a kill: "auth" when empty.
	why string
	// upstream replaces the packet (a Socket.IO packet, not forwarded
	// itself): a CONNECT without its recovery fields.
	upstream []byte
}

// clientPacket applies identity, presence and per-event limits to one
// Socket.IO packet from the client (the data of an Engine.IO message).
func (s *sioSession) clientPacket(data []byte) verdict {
	pkt, err := socketio.Parse(data)
	if err != nil && socketio.ForeignText(data) {
		// Not the default parser's: a text parser of the app's own
		// (socket.io-json-parser writes `{"type":0,…}`). As a binary
		// message outside a binary packet, it cannot be inspected.
		return s.foreign("socket.io text packet of another parser refused: not the default parser, cannot be inspected")
	}
	if err != nil {
		// Never forwarded unchecked: the backend's decoder is laxer than
		// this parser ("40 {}", "42 6[…]" pass there), so a packet only it
		// understands would skip the auth and event-limit checks. Socket.IO
		// itself closes the connection on a packet it cannot decode.
		h := s.hub
		h.s.log.WithFields(logrus.Fields{
			"requestId": s.reqID, logging.FieldCategory: logging.CategorySecurity, "error": err.Error(),
		}).Warn("socket.io packet refused: malformed")
		return verdict{kill: true, why: "malformed"}
	}
	v := verdict{forward: true}
	switch pkt.Type {
	case socketio.PacketConnect:
		v = s.connect(pkt)
	case socketio.PacketEvent, socketio.PacketBinaryEvent:
		v = s.event(pkt)
	case socketio.PacketAck, socketio.PacketBinaryAck:
		s.activity()
	case socketio.PacketDisconnect:
		// The client leaves the namespace (the app sends nothing back):
		// its admission is over, and it no longer counts toward the cap.
		s.mu.Lock()
		s.forget(pkt.Namespace)
		s.mu.Unlock()
	}
	if v.forward && pkt.Attachments > 0 {
		s.mu.Lock()
		s.expect += pkt.Attachments
		s.mu.Unlock()
	}
	return v
}

// connect resolves who the client is: the handshake request's token, else
// the CONNECT auth payload's. With websocket.auth required and no valid
// token, the client gets CONNECT_ERROR carrying the 401 envelope.
//
// A token in a CONNECT payload is checked whenever one comes, on every
// namespace: the backend reads socket.handshake.auth per namespace, so a
// payload chatguard let through unchecked would reach it as if verified.
// With auth required it must verify, and every token of a session must name
// the same user: a handshake for one user and a payload for another would
// split who chatguard counts from who the backend serves.
func (s *sioSession) connect(pkt socketio.Packet) verdict {
	h := s.hub
	// One CONNECT at a time per session: two POSTs racing would otherwise
	// both resolve an identity and move the per-user admission between them.
	s.connectMu.Lock()
	defer s.connectMu.Unlock()
	s.mu.Lock()
	known := s.id
	s.mu.Unlock()
	id, err := s.reqTok, s.reqErr
	if known.User != "" {
		id, err = known, nil // settled by an earlier CONNECT
	}
	if v := h.s.verifier.Load(); h.cfg.Auth != authNone && v != nil && len(pkt.Data) > 0 {
		if tok, ok := socketio.StringField(pkt.Data, "token"); ok && tok != "" {
			pid, perr := v.Verify(tok)
			switch {
			case perr != nil && id.User == "":
				id, err = pid, perr
			case perr != nil && h.cfg.Auth == authRequired:
				return s.refuseConnect(pkt, authError(perr), "socket.io connect refused: the payload's token does not verify", perr)
			case perr == nil && id.User != "" && pid.User != id.User:
				e := apierrors.New(apierrors.CodeTokenInvalid, "The token names another user than this connection's.")
				return s.refuseConnect(pkt, e, "socket.io connect refused: the payload's token names another user", nil)
			case perr == nil && id.User == "":
				id, err = pid, nil
			}
		}
	}
	if known.User != "" {
		return s.admitConnect(pkt, known.User)
	}
	if id.User == "" && h.cfg.Auth == authRequired {
		return s.refuseConnect(pkt, authError(err), "socket.io connect refused", err)
	}
	if h.cfg.Auth == authNone {
		id = identity.Identity{}
	}
	if id.User != "" && s.adm != nil {
		if err := s.adm.SetUser(id.User); err != nil {
			e := socketLimitError(err)
			h.metrics.rejections.WithLabelValues("connect", "rate_limited").Inc()
			h.s.log.WithFields(logrus.Fields{
				"requestId": s.reqID, logging.FieldCategory: logging.CategorySocket, "code": string(e.Code),
				"namespace": pkt.Namespace, "policy": e.Details["policy"], "remoteIp": s.ip.String(),
			}).Warn("socket.io connect refused: too many open sockets")
			v := s.connectError(pkt, e)
			v.why = "socket_limit" // not an auth failure (QA: counted as one, and not logged)
			return v
		}
	}
	if id.User != "" && h.s.userRoles != nil {
		h.s.userRoles.Set(userkey.Normalise(id.User), id.Role)
	}
	s.mu.Lock()
	learned := s.id.User == "" && id.User != ""
	if s.id.User == "" {
		s.id = id
	}
	registered, sockID := s.registered, s.socketID
	s.mu.Unlock()
	if learned && registered && h.registry != nil {
		// An earlier namespace registered the socket anonymously.
		h.registry.Identify(sockID, s, id.User, id.Role, id.Name)
	}
	return s.admitConnect(pkt, id.User)
}

// maxSessionPIDs bounds the recovery pids one session has remembered (one
// per namespace it connects, reconnects included).
const maxSessionPIDs = 64

// unknownOwner owns a recovery pid whose CONNECT's user chatguard no
// longer knows: it is no user's, so every recovery of it is taken out.
const unknownOwner = "\x00unknown"

// maxSessionNamespaces bounds the namespaces one session may have asked
// for and not been refused or left: a CONNECT to one more ends the
// session with CONNECT_ERROR.
const maxSessionNamespaces = 64

// admitConnect forwards a CONNECT admitted as user (empty: anonymous),
// noting that user for the namespace; a connection-state-recovery pid in
// its payload that chatguard gave to another user or namespace is taken
// out (see pidOwners).
func (s *sioSession) admitConnect(pkt socketio.Packet, user string) verdict {
	s.mu.Lock()
	if _, seen := s.nsUser[pkt.Namespace]; !seen && len(s.nsUser) >= maxSessionNamespaces {
		// QA: one socket sent 50,000 CONNECTs to namespaces the app
		// refused, and this map held 207 MB; no app serves that many.
		s.mu.Unlock()
		h := s.hub
		h.metrics.rejections.WithLabelValues("connect", "namespaces").Inc()
		h.s.log.WithFields(logrus.Fields{
			"requestId": s.reqID, logging.FieldCategory: logging.CategorySecurity, "remoteIp": s.ip.String(),
			"limit": maxSessionNamespaces,
		}).Warn("socket.io connection ended: a CONNECT to more namespaces than one connection may have")
		v := s.connectError(pkt, apierrors.New(apierrors.CodeValidation,
			"More than "+strconv.Itoa(maxSessionNamespaces)+" namespaces on one connection."))
		v.why = "namespaces" // not an auth failure
		return v
	}
	if s.nsUser == nil {
		s.nsUser = map[string]string{}
	}
	s.nsUser[pkt.Namespace] = user
	s.mu.Unlock()
	pid, ok := socketio.StringField(pkt.Data, "pid")
	if !ok || pid == "" || !s.hub.pids.mismatch(pid, pkt.Namespace, user) {
		return verdict{forward: true}
	}
	fresh, ok := withoutRecovery(pkt.Namespace, pkt.Data)
	if !ok {
		return verdict{forward: true}
	}
	s.hub.s.log.WithFields(logrus.Fields{
		"requestId": s.reqID, logging.FieldCategory: logging.CategoryAuth, "namespace": pkt.Namespace,
	}).Info("socket.io recovery of another user's socket refused: connecting a new one")
	s.hub.metrics.recoveryRefused.Inc()
	return verdict{upstream: fresh}
}

// refuseConnect answers a CONNECT with CONNECT_ERROR carrying e and closes
// the session; the CONNECT never reaches the backend.
func (s *sioSession) refuseConnect(pkt socketio.Packet, e *apierrors.Error, msg string, why error) verdict {
	h := s.hub
	h.metrics.rejections.WithLabelValues("connect", "auth").Inc()
	f := logrus.Fields{
		"requestId": s.reqID, logging.FieldCategory: logging.CategoryAuth, "code": string(e.Code), "namespace": pkt.Namespace,
		"remoteIp": s.ip.String(),
	}
	if why != nil && !errors.Is(why, identity.ErrMissing) {
		f["reason"] = why.Error() // as the HTTP line's: never the token
	}
	h.s.log.WithFields(f).Warn(msg)
	return s.connectError(pkt, e)
}

// connectError is CONNECT_ERROR carrying e on the packet's namespace, then
// the end of the session.
func (s *sioSession) connectError(pkt socketio.Packet, e *apierrors.Error) verdict {
	// An envelope sent, as an HTTP 401's or a rejected event's is counted
	// (accounting QA: a storm of refused sockets showed on no envelope
	// dashboard).
	s.hub.s.metrics.envelopes.WithLabelValues(envelopeCode(e.Code), sourceProxy).Inc()
	return verdict{replies: [][]byte{socketio.EncodeConnectError(pkt.Namespace, string(e.Code), e.Marshal(s.reqID, s.hub.s.now()))}, kill: true}
}

func authError(err error) *apierrors.Error {
	switch {
	case errors.Is(err, identity.ErrExpired):
		return apierrors.New(apierrors.CodeTokenExpired, "")
	case err == nil || errors.Is(err, identity.ErrMissing):
		return apierrors.New(apierrors.CodeAuthRequired, "")
	}
	return apierrors.New(apierrors.CodeTokenInvalid, "")
}

// event counts a client event, extends the user's TTL, follows joins and
// leaves, and applies the event's limit.
func (s *sioSession) event(pkt socketio.Packet) verdict {
	h := s.hub
	name, _ := socketio.EventName(pkt.Data)
	pol := h.events.Load()
	h.metrics.events.WithLabelValues(pol.label(name)).Inc()
	s.activity()
	s.mu.Lock()
	user, role, socketID := s.id.User, s.id.Role, s.socketID
	s.mu.Unlock()

	if p := pol.byName[name]; p != nil && h.s.limiter != nil {
		d, err := h.s.limiter.Decide(context.Background(), p, limiter.Request{IP: s.ip, User: user, Role: role})
		if err != nil {
			h.s.log.WithError(err).WithFields(logrus.Fields{"requestId": s.reqID, logging.FieldCategory: logging.CategorySecurity}).
				Warn("rate-limit store failed; event let through")
		} else if d.Limited() {
			return s.rejectEvent(pkt, name, user, d)
		} else if d.Shadow {
			f := logrus.Fields{
				"requestId": s.reqID, logging.FieldCategory: logging.CategorySecurity,
				"event": name, "retryAfterSeconds": ceilSeconds(d.RetryAfter),
			}
			if user != "" {
				f["user"] = logUser(user)
			}
			h.s.log.WithFields(f).Warn("socket.io event over its limit (shadow mode: let through)")
		}
	}
	if h.registry != nil && socketID != "" {
		if name == h.cfg.JoinEvent || name == h.cfg.LeaveEvent {
			if arg, ok := socketio.EventArg(pkt.Data, 0); ok {
				conv, ok := socketio.StringField(arg, h.cfg.ConversationField)
				if !ok {
					conv, ok = socketio.Scalar(arg) // join(roomId): the id itself (QA: such apps had no conversations)
				}
				if ok && conv != "" && len(conv) <= 256 {
					if name == h.cfg.JoinEvent {
						h.registry.Join(socketID, conv)
					} else {
						h.registry.Leave(socketID, conv)
					}
				}
			}
		}
	}
	return verdict{forward: true}
}

// rejectEvent takes an over-limit event out: its attachments too, and the
// client hears of it on the ack it asked for, else on the error event.
func (s *sioSession) rejectEvent(pkt socketio.Packet, name, user string, d limiter.Decision) verdict {
	h := s.hub
	retry := ceilSeconds(d.RetryAfter)
	e := apierrors.New(apierrors.CodeRateLimitExceeded, "")
	e.Details = map[string]any{
		"event":             name,
		"limit":             d.Limit.Quota(),
		"windowSeconds":     d.Limit.Window().Seconds(),
		"retryAfterSeconds": retry,
	}
	env := json.RawMessage(e.Marshal(s.reqID, h.s.now()))
	h.metrics.rejections.WithLabelValues(h.events.Load().label(name), "rate_limited").Inc()
	h.s.metrics.envelopes.WithLabelValues(envelopeCode(e.Code), sourceProxy).Inc()
	if h.s.abuse != nil {
		h.s.abuse.Rejected(s.ip, s.reqID)
	}
	f := logrus.Fields{
		"requestId": s.reqID, logging.FieldCategory: logging.CategorySecurity,
		"event": name, "retryAfterSeconds": retry,
	}
	if user != "" {
		f["user"] = logUser(user)
	}
	h.s.log.WithFields(f).Warn("socket.io event over its limit") // as an HTTP 429's line is (log QA)
	if pkt.Type == socketio.PacketBinaryEvent {
		s.mu.Lock()
		s.skip += pkt.Attachments
		s.mu.Unlock()
	}
	var reply []byte
	if pkt.ID >= 0 {
		reply = socketio.EncodeAck(pkt.Namespace, pkt.ID, env)
	} else {
		reply = socketio.EncodeEvent(pkt.Namespace, -1, h.cfg.ErrorEvent, env)
	}
	return verdict{replies: [][]byte{reply}}
}

// activity extends the user's connectedUsers entry (client events only;
// heartbeats never come here).
func (s *sioSession) activity() {
	h := s.hub
	if h.registry == nil {
		return
	}
	now := time.Now()
	s.mu.Lock()
	user, id, ok := s.id.User, s.socketID, s.registered
	every := h.registry.ConversationRefreshEvery()
	refresh := ok && every > 0 && now.Sub(s.convsRefreshed) >= every // ttl 0: nothing expires (review)
	if refresh {
		s.convsRefreshed = now
	}
	s.mu.Unlock()
	if ok {
		h.registry.Activity(user, id)
	}
	if refresh {
		h.registry.RefreshConversations(id)
	}
}

// deliver sends a verdict's replies to the client over the WebSocket.
func (s *sioSession) deliver(v verdict) {
	if len(v.replies) == 0 && !v.kill {
		return
	}
	if v.kill {
		s.ending.Store(true)
	}
	s.mu.Lock()
	kickedBefore := s.kicked
	if v.kill {
		// Ended by chatguard already: a kick or eviction now counts
		// nothing more (review). In the same locked section as the
		// decision below, so that a drain in between cannot leave it
		// counted under no reason (second review).
		s.kicked = true
	}
	p := s.pair
	if p == nil || s.polled && !s.upgraded { // polling (or probing): the next poll carries them
		// A client that POSTs and never polls must not make chatguard
		// hold a reply per rejected packet: past the bound they are dropped.
		room := max(maxOwedNotices-len(s.notices), 0)
		s.notices = append(s.notices, v.replies[:min(len(v.replies), room)]...)
		newlyKilled := v.kill && !s.killed && !kickedBefore
		s.killed = s.killed || v.kill
		// Claimed before mu is free, as the drain does: the client's next
		// GET, which carries the kill, may end the session at once, and
		// ended must wait for the POST rather than skip it.
		tell := newlyKilled && s.beginTellLocked()
		s.mu.Unlock()
		if newlyKilled { // as the WebSocket side counts its end
			why := v.why
			if why == "" {
				why = "auth"
			}
			s.hub.metrics.forced.WithLabelValues(why).Inc()
			// The app hears the session end now, as a WebSocket's upstream
			// side is closed: with no long-poll of its own waiting, it
			// kept the socket until its ping timeout, 45 s, while the
			// client, told the session was over, was back on a new one
			// (e2e QA).
			if tell {
				s.postClose()
			}
		}
		s.notify()
		return
	}
	s.mu.Unlock()
	for _, r := range v.replies {
		if err := p.send(r); err != nil {
			break
		}
	}
	if v.kill {
		why, text := "auth", "connection refused"
		switch v.why {
		case "":
		case "socket_limit":
			why, text = v.why, "too many open sockets"
		case "namespaces":
			why, text = v.why, "too many namespaces"
		default:
			why, text = v.why, v.why+" packet"
		}
		// Counted here, not by end: the session is marked kicked above, and
		// end counts no forced disconnect of a kicked session.
		if !kickedBefore {
			s.hub.metrics.forced.WithLabelValues(why).Inc()
		}
		s.hub.background(func() { p.end(sideChatguard, websocket.StatusPolicyViolation, text, "") })
	}
}

// fromUpstream follows what the upstream tells the client: the open packet
// (the session id, maxPayload) and which namespaces it accepted. Every
// message is forwarded.
func (s *sioSession) fromUpstream(typ websocket.MessageType, msg []byte) bool {
	if typ != websocket.MessageText || len(msg) < 2 {
		return true
	}
	switch msg[0] {
	case byte(socketio.EIOOpen):
		s.opened(msg[1:])
	case byte(socketio.EIOMessage):
		if msg[1] == '0' || msg[1] == '1' || msg[1] == '4' { // CONNECT, DISCONNECT, CONNECT_ERROR
			s.upstreamPacket(msg[1:])
		}
	}
	return true
}

// opened reads the open packet: the session id and Engine.IO's maxPayload,
// which lowers the client's read limit (never above the configured ceiling).
func (s *sioSession) opened(data []byte) {
	o, err := socketio.ParseOpen(data)
	if err != nil {
		return
	}
	s.mu.Lock()
	if s.sid == "" {
		s.sid = o.SID
	}
	if o.MaxPayload > 0 {
		s.maxPayload = o.MaxPayload
	}
	p := s.pair
	s.mu.Unlock()
	if p != nil && o.MaxPayload > 0 {
		p.setClientLimit(min(max(o.MaxPayload, 1024), s.hub.cfg.MaxMessageBytes))
	}
	if o.MaxPayload > s.hub.cfg.MaxMessageBytes && s.hub.warnedPayload.CompareAndSwap(false, true) {
		// The app accepts messages chatguard refuses: say so once, not
		// per socket, with what to change.
		s.hub.s.log.WithFields(logrus.Fields{
			logging.FieldCategory: logging.CategorySocket,
			"maxPayload":          o.MaxPayload, "maxMessageBytes": s.hub.cfg.MaxMessageBytes,
		}).Warn("the backend accepts bigger Socket.IO messages (maxHttpBufferSize) than websocket.max_message_bytes: " +
			"a client's WebSocket message above it closes the socket (1009), a polling POST above twice it (or above server.max_body_bytes) gets 413; raise websocket.max_message_bytes")
	}
}

// upstreamPacket follows CONNECT (accepted: the socket is registered) and
// DISCONNECT from the upstream.
func (s *sioSession) upstreamPacket(data []byte) {
	pkt, err := socketio.Parse(data)
	if err != nil {
		return
	}
	h := s.hub
	s.mu.Lock()
	switch pkt.Type {
	case socketio.PacketConnect:
		if !slices.Contains(s.namespaces, pkt.Namespace) {
			s.namespaces = append(s.namespaces, pkt.Namespace)
		}
		if pid, ok := socketio.StringField(pkt.Data, "pid"); ok && pid != "" && len(s.pids) < maxSessionPIDs {
			owner, known := s.nsUser[pkt.Namespace]
			if !known {
				// Forgotten meanwhile (a CONNECT refused while another was
				// on its way, or left): nobody may recover this pid, rather
				// than anyone anonymous (review).
				owner = unknownOwner
			}
			h.pids.record(pid, pkt.Namespace, owner, s)
			s.pids = append(s.pids, pid)
		}
		if s.registered || h.registry == nil || s.over {
			s.mu.Unlock()
			return
		}
		id, _ := socketio.StringField(pkt.Data, "sid")
		if id == "" || len(id) > 64 {
			id = h.newSocketID()
		}
		s.socketID, s.registered = id, true
		info := sessions.SocketInfo{ID: id, User: s.id.User, Role: s.id.Role, DisplayName: s.id.Name, IP: s.ip}
		s.mu.Unlock()
		h.registry.Connect(info, s)
		s.mu.Lock()
		over, now := s.over, s.id
		s.mu.Unlock()
		if over { // the session ended while it was being registered
			h.registry.DisconnectSocket(id, s)
		} else if info.User == "" && now.User != "" {
			// A later namespace proved a user while this registered (its
			// Identify found no entry yet).
			h.registry.Identify(id, s, now.User, now.Role, now.Name)
		}
		return
	case socketio.PacketConnectError:
		delete(s.nsUser, pkt.Namespace) // refused: nothing to remember
		s.mu.Unlock()
		return
	case socketio.PacketDisconnect:
		s.forget(pkt.Namespace)
	}
	s.mu.Unlock()
}

// forget drops a namespace the client left or was sent away from: its
// admission and its place among the accepted ones. Called with mu held.
func (s *sioSession) forget(ns string) {
	delete(s.nsUser, ns)
	s.namespaces = slices.DeleteFunc(s.namespaces, func(n string) bool { return n == ns })
}

// Disconnect is the registry's way to end the socket (eviction, admin):
// the client gets DISCONNECT for each namespace, so that it does not
// reconnect blindly; the upstream hears the client leave; then both close.
func (s *sioSession) Disconnect(reason string) {
	s.mu.Lock()
	first := !s.kicked && !s.killed && !s.over
	s.kicked = true
	s.mu.Unlock()
	s.ending.Store(true)
	if !first {
		// Disconnected already (an eviction's socket is still listed
		// while it closes, and a kick finds it again): one socket is one
		// forced disconnect (review: an emergency shed then an admin kick
		// counted two).
		return
	}
	s.hub.metrics.forced.WithLabelValues(reason).Inc()
	s.hub.background(func() { s.disconnect(reason) })
}

func (s *sioSession) disconnect(reason string) {
	s.mu.Lock()
	nss := append([]string(nil), s.namespaces...)
	if len(nss) == 0 {
		nss = []string{"/"}
	}
	p := s.pair
	user := s.id.User
	if p == nil || s.polled && !s.upgraded {
		if s.over || s.killed { // ended, or already told to end: once is enough
			s.mu.Unlock()
			return
		}
		var bye [][]byte
		for _, ns := range nss {
			bye = append(bye, socketio.EncodeDisconnect(ns))
		}
		s.notices = append(s.notices, bye...)
		s.killed = true
		// ended waits for the POST below before it cuts the long-poll
		// chatguard holds upstream: engine.io takes a cut long-poll for a
		// transport error and ends the session, and a DISCONNECT POSTed
		// after it found none (QA: the app saw "transport error" for an
		// admin kick). Added under mu while not over: ended sets over
		// under mu before it waits.
		s.telling.Add(1)
		s.mu.Unlock()
		s.logKick(reason, user) // before, a polling socket's kick was not logged
		s.notify()
		s.hub.tellUpstream(s, bye) // the upstream hears the client leave, as on a WebSocket
		s.telling.Done()
		return
	}
	s.mu.Unlock()
	toClient, toUp := true, true // a side that failed once (or made one wait for a binary packet) gets no more
	for _, ns := range nss {
		bye := socketio.EncodeDisconnect(ns)
		toClient = toClient && p.send(bye) == nil
		toUp = toUp && p.sendUp(bye) == nil
	}
	s.logKick(reason, user)
	p.end(sideChatguard, websocket.StatusNormalClosure, "disconnected: "+reason, "")
}

// logKick says which user's socket chatguard disconnected, and why: after an
// eviction (TTL, capacity, emergency) the log named no one (QA).
func (s *sioSession) logKick(reason, user string) {
	f := logrus.Fields{"requestId": s.reqID, logging.FieldCategory: logging.CategorySocket, "reason": reason}
	if user != "" {
		f["user"] = logUser(user)
	}
	s.hub.s.log.WithFields(f).Info("socket disconnected by chatguard")
}

// closeForDrain tells a polling client the session is over (the Engine.IO
// close packet) on its waiting or next GET; socket.io-client then
// reconnects, to another instance. The session ends once that is delivered.
//
// The app hears it too: chatguard POSTs Engine.IO's close on the session's
// behalf, as a client closing it does. Without it, the app kept every
// polling session of a drained chatguard until its ping timeout (up to 45 s
// with Socket.IO's defaults): the clients, back on a new session, were on
// the app twice meanwhile, and their connection state recovery failed,
// since the old socket had not disconnected yet (QA; WebSocket clients,
// whose upstream side the drain closes, recovered).
func (s *sioSession) closeForDrain() {
	s.mu.Lock()
	polling := s.pair == nil || !s.upgraded
	if polling && !s.over && !s.killed && !s.kicked {
		// A forced disconnect, as a WebSocket's drain is (accounting QA:
		// a rollout's count left out every polling client).
		s.kicked = true
		s.hub.metrics.forced.WithLabelValues("drain").Inc()
	}
	if polling {
		s.notices = append(s.notices, []byte{byte(socketio.EIOClose)})
		s.killed = true
	}
	// In the same locked section as the close owed to the client: its GET
	// may end the session as soon as mu is free, and ended must then wait
	// for the POST.
	tell := polling && s.beginTellLocked()
	s.mu.Unlock()
	s.notify()
	if tell {
		s.postClose()
	}
}

// beginTellLocked reports whether the app is to be told that a polling
// session chatguard ends itself closed (Engine.IO's close, POSTed by
// postClose): not when it is over or the app closed it. If so it adds to
// s.telling, which ended waits for before it cuts the long-poll it holds
// upstream (see disconnect); the caller holds mu, and ended sets over under
// mu before it waits. postClose releases it.
func (s *sioSession) beginTellLocked() bool {
	tell := !s.over && !s.closed && s.sid != ""
	if tell {
		s.telling.Add(1)
	}
	return tell
}

// postClose sends the close in the background and releases s.telling.
func (s *sioSession) postClose() {
	if !s.hub.background(func() {
		defer s.telling.Done()
		s.hub.tellUpstream(s, [][]byte{{byte(socketio.EIOClose)}})
	}) {
		s.telling.Done()
	}
}

// maxOwedNotices bounds the replies a polling session queues for the client.
const maxOwedNotices = 256

// notify wakes a GET poll waiting for the upstream: the client is owed packets.
func (s *sioSession) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// background runs fn in a goroutine the hub waits for on Close and reports
// true. After stop nothing new starts and it reports false (the process is
// ending; a forced disconnect then has nothing left to disconnect).
func (h *wsHub) background(fn func()) bool {
	h.bgMu.Lock() // never mu: see its lock order
	defer h.bgMu.Unlock()
	if h.stopped {
		return false
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		fn()
	}()
	return true
}

// eventPolicies are the per-event limits, swapped whole on reload.
type eventPolicies struct {
	byName map[string]*limiter.Policy
	labels map[string]bool // event names that are metrics label values
}

func newEventPolicies(cfg *config.Config) *eventPolicies {
	w := cfg.WebSocket
	e := &eventPolicies{byName: map[string]*limiter.Policy{}, labels: map[string]bool{}}
	for _, name := range []string{w.JoinEvent, w.LeaveEvent} {
		e.labels[name] = true
	}
	for _, ev := range w.Events {
		l := ev.Limit
		if len(l.Key) == 0 {
			l.Key = []string{"user"} // an anonymous socket falls back to its IP
		}
		e.byName[ev.Name] = limiter.NewPolicy("event:"+ev.Name, l, cfg.Limits.Multiplier)
		e.labels[ev.Name] = true
	}
	if cfg.Limits.Shadow {
		for _, p := range e.byName {
			p.Shadow = true
		}
	}
	return e
}

// label bounds the event label: configured names, else "other".
func (e *eventPolicies) label(name string) string {
	if e.labels[name] {
		return name
	}
	return "other"
}

// wasKicked: chatguard already disconnected the session (a kick, an
// eviction, a kill), and counted it.
func (s *sioSession) wasKicked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kicked || s.killed
}
