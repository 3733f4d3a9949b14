package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	apierrors "github.com/chatguard/chatguard/errors"
	"github.com/chatguard/chatguard/internal/buildinfo"
	"github.com/chatguard/chatguard/internal/identity/userkey"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/memstats"
	"github.com/chatguard/chatguard/internal/requestid"
)

// AdminHandler serves the admin listener: /metrics, /healthz, /readyz,
// POST /drain, /api/internal/stats and the other /api/internal endpoints
// (sessions, blocks, memory, profiles). Every error is an envelope.
func (s *Server) AdminHandler() http.Handler {
	metrics := promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{
		ErrorLog:          newStdLogger(s.log, logrus.ErrorLevel),
		EnableOpenMetrics: true,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := &reqInfo{id: requestid.FromRequest(r.Header, s.now()), peer: peerAddr(r)}
		info.client = info.peer
		w.Header().Set(requestid.Header, info.id)
		defer func() {
			if p := recover(); p != nil {
				s.log.WithFields(logrus.Fields{"requestId": info.id, logging.FieldCategory: logging.CategorySystem, "panic": fmt.Sprint(p)}).Error("admin handler panicked")
				s.writeError(w, r, info, apierrors.New(apierrors.CodeInternal, ""), sourceProxy)
			}
		}()
		s.log.WithFields(logrus.Fields{"requestId": info.id, logging.FieldCategory: logging.CategorySystem, "method": r.Method, "path": r.URL.Path}).Debug("admin request")

		switch r.URL.Path {
		case "/metrics":
			if s.allow(w, r, info, http.MethodGet, http.MethodHead) {
				metrics.ServeHTTP(w, r)
			}
		case "/healthz":
			if s.allow(w, r, info, http.MethodGet, http.MethodHead) {
				writeJSON(w, r, http.StatusOK, map[string]any{"status": "ok"})
			}
		case "/readyz":
			if !s.allow(w, r, info, http.MethodGet, http.MethodHead) {
				return
			}
			nr := s.readyNow()
			switch {
			case nr == nil:
				writeJSON(w, r, http.StatusOK, map[string]any{"status": "ready"})
			case nr.upstream != nil:
				e := apierrors.New(apierrors.CodeServiceUnavailable, "chatguard is not ready: the upstream does not accept connections")
				e.Details = map[string]any{"status": nr.status, "reason": upstreamReason(nr.upstream)}
				s.writeError(w, r, info, e, sourceProxy)
			default:
				e := apierrors.New(apierrors.CodeServiceUnavailable, "chatguard is not ready: "+nr.status)
				e.Details = map[string]any{"status": nr.status}
				s.writeError(w, r, info, e, sourceProxy)
			}
		case "/drain":
			if !s.allow(w, r, info, http.MethodPost) {
				return
			}
			if !localCaller(r, info.peer) && !s.authorized(r) {
				s.refuseAdmin(w, r, info)
				return
			}
			s.log.WithFields(logrus.Fields{
				"requestId": info.id, logging.FieldCategory: logging.CategorySystem, "remoteIp": info.peer.String(),
			}).Info("drain requested")
			res := s.Drain(r.Context())
			writeJSON(w, r, http.StatusOK, map[string]any{"success": true, "data": res})
		case StatsPath:
			s.serveStats(w, r, info)
		case MemoryFreePath:
			s.serveMemoryFree(w, r, info)
		case ProfilesPath:
			s.serveProfiles(w, r, info, "")
		default:
			if name, ok := strings.CutPrefix(r.URL.Path, ProfilesPath+"/"); ok {
				s.serveProfiles(w, r, info, name)
				return
			}
			if user, ok := strings.CutPrefix(r.URL.Path, SessionsPath); ok && user != "" {
				s.serveKick(w, r, info, user)
				return
			}
			if ip, ok := strings.CutPrefix(r.URL.Path, BlocksPath); ok && ip != "" {
				s.serveUnblock(w, r, info, ip)
				return
			}
			s.writeError(w, r, info, apierrors.New(apierrors.CodeNotFound, "no such admin endpoint"), sourceProxy)
		}
	})
}

// allowAuthorized is allow, then the stats bearer token (401 without it).
func (s *Server) allowAuthorized(w http.ResponseWriter, r *http.Request, info *reqInfo, methods ...string) bool {
	if !s.allow(w, r, info, methods...) {
		return false
	}
	if !s.authorized(r) {
		s.refuseAdmin(w, r, info)
		return false
	}
	return true
}

// allow answers 405 with Allow when r's method is not one of methods.
func (s *Server) allow(w http.ResponseWriter, r *http.Request, info *reqInfo, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	s.writeError(w, r, info, methodNotAllowed(fmt.Sprintf("%s is not allowed here; use %s", r.Method, strings.Join(methods, " or ")), methods), sourceProxy)
	return false
}

// methodNotAllowed is the 405 envelope (code NOT_FOUND, as the catalogue
// maps 405) with Allow listing methods.
func methodNotAllowed(msg string, methods []string) *apierrors.Error {
	e := apierrors.New(apierrors.CodeNotFound, msg)
	e.Status = http.StatusMethodNotAllowed
	e.Header = http.Header{"Allow": {strings.Join(methods, ", ")}}
	return e
}

// authorized checks the bearer token in constant time (both sides hashed, so
// that not even the length leaks). No configured token authorizes nobody.
func (s *Server) authorized(r *http.Request) bool {
	token := s.cfg.StatsToken.Reveal()
	if token == "" {
		return false
	}
	given, ok := bearer(r)
	if !ok {
		return false
	}
	a, b := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// refuseAdmin answers a request without a valid stats token, and leaves an
// audit trail of who tried what (never the token).
func (s *Server) refuseAdmin(w http.ResponseWriter, r *http.Request, info *reqInfo) {
	e := s.authError(r)
	s.log.WithFields(logrus.Fields{
		"requestId": info.id, logging.FieldCategory: logging.CategorySecurity, "remoteIp": info.client.String(),
		"method": r.Method, "path": r.URL.Path, "code": string(e.Code),
	}).Warn("admin request refused: no valid stats token")
	s.writeError(w, r, info, e, sourceProxy)
}

func (s *Server) authError(r *http.Request) *apierrors.Error {
	e := apierrors.New(apierrors.CodeAuthRequired, "a valid bearer token is required")
	if _, ok := bearer(r); ok {
		e = apierrors.New(apierrors.CodeTokenInvalid, "the bearer token is not valid")
	}
	return challenge(e)
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	t := strings.TrimSpace(h[7:])
	return t, t != ""
}

// SessionsPath + {user} on the admin listener disconnects that user's sockets.
const SessionsPath = "/api/internal/sessions/"

// serveKick answers DELETE /api/internal/sessions/{user}: every socket of
// the user is disconnected (Socket.IO DISCONNECT, then close), as an
// eviction of its connectedUsers entry would. {user} is normalised as every
// user key is (userkey.Normalise): an e-mail finds its user in any case.
func (s *Server) serveKick(w http.ResponseWriter, r *http.Request, info *reqInfo, user string) {
	if !s.allowAuthorized(w, r, info, http.MethodDelete) {
		return
	}
	user = userkey.Normalise(user)
	n := 0
	if s.ws.registry != nil {
		n = s.ws.registry.Kick(user, "admin")
	}
	if n == 0 {
		s.writeError(w, r, info, apierrors.New(apierrors.CodeNotFound, "this user has no open socket"), sourceProxy)
		return
	}
	s.log.WithFields(logrus.Fields{
		// Who: an admin request gets no access line, so this is the only
		// record of the kick (QA).
		"requestId": info.id, logging.FieldCategory: logging.CategorySocket, "sockets": n, "user": user, "remoteIp": info.peer.String(),
	}).Info("user disconnected by an admin request")
	writeJSON(w, r, http.StatusOK, map[string]any{"success": true, "data": map[string]any{"user": user, "disconnected": n}})
}

// BlocksPath + {ip} on the admin listener lifts that IP's abuse block.
const BlocksPath = "/api/internal/blocks/"

// serveUnblock answers DELETE BlocksPath{ip}: the block of ip (and its
// rejections this hour) is lifted in this process.
func (s *Server) serveUnblock(w http.ResponseWriter, r *http.Request, info *reqInfo, raw string) {
	if !s.allowAuthorized(w, r, info, http.MethodDelete) {
		return
	}
	ip, err := netip.ParseAddr(raw)
	if err != nil || ip.Zone() != "" {
		e := apierrors.New(apierrors.CodeValidation, "not an IP address")
		e.Details = map[string]any{"fields": []map[string]any{{"field": "ip", "message": "must be an IPv4 or IPv6 address"}}}
		s.writeError(w, r, info, e, sourceProxy)
		return
	}
	var lifted string
	ok := false
	if s.abuse != nil {
		lifted, ok = s.abuse.Unblock(ip)
	}
	if !ok {
		s.writeError(w, r, info, apierrors.New(apierrors.CodeNotFound, "this IP is not blocked"), sourceProxy)
		return
	}
	s.log.WithFields(logrus.Fields{
		"requestId": info.id, logging.FieldCategory: logging.CategorySecurity, "ip": lifted,
	}).Warn("IP unblocked by an admin request")
	writeJSON(w, r, http.StatusOK, map[string]any{"success": true, "data": map[string]any{"ip": lifted, "unblocked": true}})
}

// serveStats answers /api/internal/stats with the seed's shape.
func (s *Server) serveStats(w http.ResponseWriter, r *http.Request, info *reqInfo) {
	if !s.allowAuthorized(w, r, info, http.MethodGet, http.MethodHead) {
		return
	}
	data := map[string]any{"server": s.serverStats()}
	s.statsMu.Lock()
	providers := make(map[string]func() any, len(s.stats))
	for k, fn := range s.stats {
		providers[k] = fn
	}
	s.statsMu.Unlock()
	for k, fn := range providers {
		data[k] = fn()
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, r, http.StatusOK, map[string]any{"success": true, "data": data})
}

func (s *Server) serverStats() map[string]any {
	bi := buildinfo.Get()
	return map[string]any{
		"uptime":              int64(s.now().Sub(s.started).Seconds()),
		"pid":                 os.Getpid(),
		"version":             bi.Version,
		"goVersion":           bi.GoVersion,
		"memory":              memstats.Read(),
		"goroutines":          runtime.NumGoroutine(),
		"requestsInFlight":    s.inFlight.Load(),
		"upgradedConnections": s.upgradedCount(),
		"ready":               s.readyNow() == nil,
	}
}

func (s *Server) upgradedCount() int {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	return len(s.conns) + s.ws.live()
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"success":false}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// localPeer is a peer on this host's own addresses, 127.0.0.1 and ::1 (the
// preStop hook's): not all of 127.0.0.0/8, since a service mesh's sidecar
// delivers other hosts' connections from 127.0.0.6 (Istio), and they
// must show the token to drain.
// localCaller reports whether r may drain without the token: it comes
// from loopback, and not from a browser on this machine acting for a page
// of another site (QA: a page's form POST, or a DNS-rebound page, drained
// chatguard). A browser names the page's site in Origin; a rebound page's
// requests carry its own host name in Host, where a local client such as
// curl, the preStop hook or kubectl port-forward names localhost or an
// address.
func localCaller(r *http.Request, peer netip.Addr) bool {
	if !localPeer(peer) || r.Header.Get("Origin") != "" {
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "none" {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if _, err := netip.ParseAddr(host); err == nil || host == "" {
		return true
	}
	return strings.EqualFold(host, "localhost") || strings.EqualFold(host, "localhost.")
}

func localPeer(a netip.Addr) bool {
	a = a.Unmap()
	return a == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || a == netip.IPv6Loopback()
}
