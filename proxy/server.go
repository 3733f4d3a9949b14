// Package proxy is chatguard's HTTP side: the public listener's middleware
// chain and reverse proxy, the admin endpoints, and the drain that ends both.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	apierrors "github.com/chatguard/chatguard/errors"
	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/identity"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/limiter"
	"github.com/chatguard/chatguard/sessions"
)

// Options configure New.
type Options struct {
	Config *config.Config
	Logger *logrus.Logger
	// Registry receives the proxy's metrics and is served on /metrics.
	Registry *prometheus.Registry
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Transport carries requests upstream; nil means one built from Config.Proxy.
	Transport http.RoundTripper
	// Limiter applies the routes' rate limits; nil means none.
	Limiter *limiter.Limiter
	// Verifier checks users' tokens; nil means no user is identified.
	Verifier *identity.Verifier
	// UserRoles records the role of each verified user (the stats show it;
	// nothing reads it back: every token is verified); nil means no record.
	UserRoles *sessions.Table[string, string]
	// Abuse blocks IPs with too many rejections; nil means none.
	Abuse *limiter.Abuse
	// Sockets is the registry of live sockets (presence, per-user and
	// per-IP socket limits, forced disconnects); nil means WebSockets are
	// relayed and inspected without presence tracking.
	Sockets *sessions.Registry
}

// Server is chatguard's HTTP side. It is safe for concurrent use.
type Server struct {
	cfg        *config.Config
	log        *logrus.Logger
	now        func() time.Time
	gatherer   prometheus.Gatherer
	metricsReg prometheus.Registerer
	metrics    *serverMetrics
	ws         *wsHub
	routing    atomic.Pointer[routing]
	trust      trustedProxies
	proxy      *httputil.ReverseProxy
	idle       interface{ CloseIdleConnections() }
	classify   apierrors.ClassifyOptions
	started    time.Time

	limiter   *limiter.Limiter
	verifier  atomic.Pointer[identity.Verifier] // swapped by Reload: a rotated key applies at once
	userRoles *sessions.Table[string, string]
	abuse     *limiter.Abuse

	ready    atomic.Bool
	upCheck  *upstreamCheck // proxy.ready_on_upstream; nil: /readyz does not look
	draining atomic.Bool    // set when a drain starts
	refusing atomic.Bool    // set when the drain delay is over
	cut      atomic.Bool    // set when requests past the shutdown timeout are cut
	inFlight atomic.Int64
	unserved *unservedRequests // requests net/http ended before the handler ran

	pub          atomic.Pointer[http.Server] // the public listener's server, once Serve runs
	streams      streamSet                   // event streams, ended by the drain
	cors         *corsMemory                 // the upstream's CORS answers; nil: not repeated
	connsMu      sync.Mutex
	conns        map[*trackedConn]struct{}
	closingConns bool // set by drain: a connection upgraded later is closed at once

	drainOnce   sync.Once
	drainDone   chan struct{}
	drainResult DrainResult

	statsMu sync.Mutex
	stats   map[string]func() any
}

// New builds a Server from a validated configuration.
func New(o Options) (*Server, error) {
	if o.Config == nil || o.Logger == nil || o.Registry == nil {
		return nil, errors.New("proxy: Config, Logger and Registry are required")
	}
	target, err := url.Parse(o.Config.Upstream)
	if err != nil {
		return nil, fmt.Errorf("proxy: upstream: %w", err)
	}
	s := &Server{
		cfg:        o.Config,
		log:        o.Logger,
		now:        o.Now,
		gatherer:   o.Registry,
		metricsReg: o.Registry,
		trust:      newTrustedProxies(o.Config.Proxy.TrustedProxies),
		classify:   apierrors.ClassifyOptions{Development: o.Config.Development()},
		conns:      map[*trackedConn]struct{}{},
		drainDone:  make(chan struct{}),
		stats:      map[string]func() any{},
		limiter:    o.Limiter,
		userRoles:  o.UserRoles,
		abuse:      o.Abuse,
	}
	s.verifier.Store(o.Verifier)
	if o.Config.Proxy.ReadyOnUpstream {
		s.upCheck = newUpstreamCheck(target)
		s.upCheck.told = func(err error, first bool) {
			l := s.log.WithFields(logrus.Fields{logging.FieldCategory: logging.CategorySystem, "upstream": target.Host})
			switch {
			case err != nil:
				l.WithField("reason", upstreamReason(err)).Warn("not ready: the app does not accept connections (proxy.ready_on_upstream)")
			case !first:
				l.Info("ready again: the app accepts connections")
			}
		}
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.started = s.now()
	if s.metrics, err = newServerMetrics(o.Registry, func() bool { return s.readyNow() == nil }); err != nil {
		return nil, err
	}
	if s.unserved, err = newUnservedRequests(o.Registry, logrus.NewEntry(o.Logger)); err != nil {
		return nil, fmt.Errorf("proxy: register metrics: %w", err)
	}
	s.setRouting(o.Config)
	transport := o.Transport
	if transport == nil {
		transport = defaultTransport(target, o.Config.Proxy)
	}
	if t, ok := transport.(interface{ CloseIdleConnections() }); ok {
		s.idle = t
	}
	if s.cors, err = newCORSMemory(o.Config.Proxy.CORSFromUpstream); err != nil {
		return nil, err
	}
	s.proxy = s.newReverseProxy(target, transport)
	if s.ws, err = newWSHub(s, target, o.Sockets); err != nil {
		return nil, err
	}
	if o.Sockets != nil {
		s.AddStats("socket", func() any { return o.Sockets.StatsBlock() })
	}
	return s, nil
}

// setRouting puts cfg's routes in force; each limited route's decision
// counters exist from then on (at 0), so that a rate of rejections is 0, not
// "no data", until the first request.
func (s *Server) setRouting(cfg *config.Config) {
	rt := newRouting(cfg, s.metrics)
	if s.limiter != nil {
		for _, p := range rt.policies {
			if p != nil {
				s.limiter.Prime(p, roleLabels...)
			}
		}
	}
	s.routing.Store(rt)
}

// roleLabels are the role label values of a verified caller.
var roleLabels = []string{identity.RoleBasic, identity.RoleAgent, identity.RoleAdmin}

// setEvents puts the per-event limits of e in force, their counters
// existing at 0 from then on (see setRouting).
func (h *wsHub) setEvents(e *eventPolicies) {
	if h.s.limiter != nil {
		for _, p := range e.byName {
			h.s.limiter.Prime(p, roleLabels...)
		}
	}
	for name := range e.labels {
		h.metrics.rejections.WithLabelValues(name, "rate_limited")
		h.metrics.events.WithLabelValues(name)
	}
	h.events.Store(e)
}

// reloadable are the configuration keys Reload applies; any other key that
// differs from the running configuration waits for a restart, and Reload
// names it.
var reloadable = map[string]bool{
	"routes": true, "rate_limit.multiplier": true, "rate_limit.shadow": true, "websocket.events": true,
	// The token checks: the caller builds Reload's verifier from them.
	"auth.jwt_secret": true, "auth.jwt_public_key_file": true, "auth.issuer": true, "auth.audience": true,
	"auth.require_expiry": true, "auth.user_claims": true, "auth.role_claim": true, "auth.name_claim": true,
	"auth.role_map": true,
}

// Reload takes the routes of cfg — paths, auth modes, limits, the
// multiplier, shadow mode — without dropping a connection or a counter
// (limits are kept per route name and key in the store), and v, built from
// cfg.Auth, checks tokens from then on (a rotated key, another audience;
// nil: no user is identified). cfg must be valid; the other settings need a
// restart, and Reload reports which of them differ. It refuses routes that
// require authentication without a verifier.
func (s *Server) Reload(cfg *config.Config, v *identity.Verifier) (ignored []string, err error) {
	if v == nil {
		for _, r := range cfg.Routes {
			if r.Auth == authRequired {
				return nil, fmt.Errorf("proxy: route %s requires auth, but no JWT secret or public key is configured", r.Name)
			}
		}
		if s.cfg.WebSocket.Auth == authRequired {
			// websocket.auth waits for a restart: the running one would
			// refuse every Socket.IO CONNECT without a verifier (review).
			return nil, fmt.Errorf("proxy: websocket.auth is required until a restart, but no JWT secret or public key is configured")
		}
	}
	s.verifier.Store(v)
	s.setRouting(cfg)
	s.ws.setEvents(newEventPolicies(cfg))
	for _, key := range config.Diff(s.cfg, cfg) {
		if !reloadable[key] {
			ignored = append(ignored, key)
		}
	}
	return ignored, nil
}

// AddStats adds a block to /api/internal/stats's data, computed on each request.
func (s *Server) AddStats(name string, fn func() any) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.stats[name] = fn
}

// Ready reports whether /readyz answers 200.
func (s *Server) Ready() bool { return s.ready.Load() }

func (s *Server) setReady(v bool) { s.ready.Store(v) }

// notReady is why /readyz answers 503.
type notReady struct {
	status   string // starting, draining, upstream_unreachable
	upstream error  // the failed connection, for upstream_unreachable
}

// readyNow is what /readyz answers, chatguard_ready and the stats' ready
// say: nil when ready, else why not. With proxy.ready_on_upstream it dials
// the upstream (at most once a second).
func (s *Server) readyNow() *notReady {
	if !s.Ready() {
		if s.draining.Load() {
			return &notReady{status: "draining"}
		}
		return &notReady{status: "starting"}
	}
	if s.upCheck != nil {
		if err := s.upCheck.check(); err != nil {
			return &notReady{status: "upstream_unreachable", upstream: err}
		}
	}
	return nil
}

// Serve answers on the two listeners until ctx is done, then drains (see
// Drain) and shuts both down. It returns nil after a graceful stop, or the
// error that made a listener fail. The listeners are closed on return.
func (s *Server) Serve(ctx context.Context, public, admin net.Listener) error {
	pub := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.Server.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.Server.IdleTimeout,
		// net/http allows MaxHeaderBytes+4 KiB and answers a plain 431 above
		// it; the middleware answers an envelope from the configured size on.
		MaxHeaderBytes: 2 * s.cfg.Server.MaxHeaderBytes,
		ErrorLog:       newServerErrorLog(s.log, "public", s.metrics.acceptErrors.WithLabelValues("public")),
		// OPTIONS * reaches the handler (request id, access line), as every
		// other request does.
		DisableGeneralOptionsHandler: true,
		// Connections, not requests: an idle or slow-header flood
		// (slowloris) makes no request and no log line, only this (QA).
		ConnState: func(c net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.metrics.conns.Inc()
			case http.StateClosed, http.StateHijacked:
				s.metrics.conns.Dec()
			}
			s.unserved.connState(c, st)
		},
		ConnContext: s.unserved.connContext,
	}
	adm := &http.Server{
		Handler:           s.AdminHandler(),
		ReadHeaderTimeout: s.cfg.Server.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.Server.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          newServerErrorLog(s.log, "admin", s.metrics.acceptErrors.WithLabelValues("admin")),
	}
	s.pub.Store(pub)
	s.ws.start()
	defer s.ws.stop()
	errc := make(chan error, 2)
	go func() { errc <- pub.Serve(public) }()
	go func() { errc <- adm.Serve(admin) }()
	s.setReady(true)
	s.log.WithFields(logrus.Fields{
		logging.FieldCategory: logging.CategorySystem,
		"listen":              public.Addr().String(),
		"adminListen":         admin.Addr().String(),
		"upstream":            s.cfg.Upstream,
	}).Info("chatguard is serving")

	var failed error
	pending := 2
	select {
	case <-ctx.Done():
	case err := <-errc:
		pending--
		failed = fmt.Errorf("proxy: listener stopped: %w", err)
		s.log.WithError(err).WithField(logging.FieldCategory, logging.CategorySystem).Error("a listener failed; shutting down")
	}

	res := s.Drain(context.Background())
	// The drain waited for in-flight requests up to the shutdown timeout:
	// what is left is a response being flushed after its handler returned
	// (to a client reading slowly, that takes the rest of the budget), a
	// connection that never sent a request (net/http waits 5 s for those),
	// or a request past its time. They get what is left of the shutdown
	// timeout, and at least shutdownGrace; then they are cut.
	end := res.Deadline
	if grace := time.Now().Add(shutdownGrace); end.Before(grace) {
		end = grace
	}
	shutdownCtx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	if err := pub.Shutdown(shutdownCtx); err != nil {
		s.cut.Store(true)
		_ = pub.Close()
	}
	if err := adm.Shutdown(shutdownCtx); err != nil {
		_ = adm.Close()
	}
	for ; pending > 0; pending-- {
		<-errc
	}
	if s.idle != nil {
		s.idle.CloseIdleConnections()
	}
	s.log.WithFields(logrus.Fields{
		logging.FieldCategory: logging.CategorySystem,
		"inFlightLeft":        s.inFlight.Load(), // now: a drain's deadline may be long past
	}).Info("chatguard stopped")
	return failed
}

// shutdownGrace is the least time connections get after the drain to flush
// what their handlers wrote before they are closed.
const shutdownGrace = 100 * time.Millisecond

// DrainResult says how a drain went.
type DrainResult struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Deadline is when in-flight work stopped being waited for.
	Deadline time.Time `json:"deadline"`
	// InFlight is the number of requests still running at the end (0 unless
	// the shutdown timeout ran out).
	InFlight int64 `json:"inFlight"`
	// UpgradedClosed counts upgraded (WebSocket) connections closed.
	UpgradedClosed int `json:"upgradedClosed"`
	// StreamsEnded counts event streams (text/event-stream) ended.
	StreamsEnded int `json:"streamsEnded"`
}

// Drain turns the server not-ready at once, keeps serving for the drain
// delay, then answers new requests with 503 SERVICE_UNAVAILABLE, closes
// upgraded connections and waits for in-flight requests up to the shutdown
// timeout. It runs once; later and concurrent calls wait for that one and
// return its result (or ctx's end, with the result so far).
func (s *Server) Drain(ctx context.Context) DrainResult {
	s.drainOnce.Do(func() { go s.drain() })
	select {
	case <-s.drainDone:
		return s.drainResult
	case <-ctx.Done():
		return DrainResult{InFlight: s.inFlight.Load()}
	}
}

func (s *Server) drain() {
	defer close(s.drainDone)
	start := time.Now()
	s.draining.Store(true)
	s.setReady(false)
	if pub := s.pub.Load(); pub != nil {
		// Not ready: idle keep-alive connections close now and every
		// answer closes its own (net/http writes Connection: close on those
		// whose head is still to go, and closes after an event stream the
		// drain ends too), so that a client with a warm connection — a
		// browser tab — opens its next one through the load balancer, to a
		// ready instance, instead of meeting this one's 503 after the drain
		// delay (QA, Chromium; Envoy's drain does the same).
		pub.SetKeepAlivesEnabled(false)
	}
	log := s.log.WithField(logging.FieldCategory, logging.CategorySystem)
	log.WithField("drainDelay", s.cfg.Server.DrainDelay.String()).Info("draining: not ready; still serving during the drain delay")
	time.Sleep(s.cfg.Server.DrainDelay)

	s.refusing.Store(true)
	deadline := time.Now().Add(s.cfg.Server.ShutdownTimeout)
	wsCtx, cancel := context.WithDeadline(context.Background(), deadline)
	closed := s.ws.closeAll(wsCtx, websocket.StatusCode(s.cfg.WebSocket.DrainCloseCode))
	cancel()
	closed += s.closeUpgraded()
	streams := s.streams.endAll()
	for s.inFlight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	s.drainResult = DrainResult{
		Started: start, Finished: time.Now(), Deadline: deadline,
		InFlight: s.inFlight.Load(), UpgradedClosed: closed, StreamsEnded: streams,
	}
	log.WithFields(logrus.Fields{
		"inFlightLeft":   s.drainResult.InFlight,
		"upgradedClosed": closed,
		"streamsEnded":   streams,
		"duration":       float64(time.Since(start).Microseconds()) / 1000,
	}).Info("drained")
}

// trackConn registers a hijacked connection so that drain can close it.
func (s *Server) trackConn(c net.Conn) net.Conn {
	s.inFlight.Add(-1)
	s.metrics.inFlight.Dec()
	s.metrics.upgraded.Inc()
	tc := &trackedConn{Conn: c}
	tc.release = func() {
		s.connsMu.Lock()
		delete(s.conns, tc)
		s.connsMu.Unlock()
		s.metrics.upgraded.Dec()
	}
	s.connsMu.Lock()
	closing := s.closingConns
	if !closing {
		s.conns[tc] = struct{}{}
	}
	s.connsMu.Unlock()
	if closing { // upgraded while draining: the answer goes nowhere
		_ = tc.Close()
	}
	return tc
}

func (s *Server) closeUpgraded() int {
	return closeSet(&s.connsMu, s.conns, &s.closingConns, func(c *trackedConn) { _ = c.Close() })
}

// closeSet sets closing (what adds to set checks it, under mu) and closes
// every member, outside the lock; it returns how many there were.
func closeSet[K comparable](mu *sync.Mutex, set map[K]struct{}, closing *bool, close func(K)) int {
	mu.Lock()
	*closing = true
	list := make([]K, 0, len(set))
	for k := range set {
		list = append(list, k)
	}
	mu.Unlock()
	for _, k := range list {
		close(k)
	}
	return len(list)
}
