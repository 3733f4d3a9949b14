package proxy

import (
	"net/http"
	"strings"
	"time"

	"github.com/chatguard/chatguard/sessions"
)

// A cross-origin page reads an answer only when it carries
// Access-Control-Allow-Origin for the page's origin. The app's own answers
// carry what its CORS middleware decided; the answers chatguard makes
// itself (its 401, 413, 429, 502, 503, the polling answers it owes a
// client) carried nothing, so the page saw "Failed to fetch" where the app's
// own 401 or 413 would have been readable (QA, Chromium): a token refresh
// on 401 never ran, and a 429's Retry-After was out of reach. chatguard
// does not know the app's CORS policy, so it repeats what the app last
// answered the same Origin on the same route: an Origin the app never
// allowed there gets nothing. Per route, because apps grant per route
// (a public widget route that reflects any Origin must not open the login
// route's answers: review).

// corsTTL and corsGrants bound what is remembered: an hour, 4,096 grants
// (route and Origin).
const (
	corsTTL    = time.Hour
	corsGrants = 4096
)

// corsExposed are chatguard's own headers a page needs on its answers.
const corsExposed = "Retry-After, RateLimit, RateLimit-Policy, X-Request-ID"

// corsGrant is what the upstream last answered an Origin on a route.
type corsGrant struct {
	allowOrigin string // the Origin itself, or "*"
	credentials bool
	expose      string
}

// corsMemory remembers the upstream's CORS answers by route and Origin; nil when
// proxy.cors_from_upstream is off.
type corsMemory struct {
	grants *sessions.Table[string, corsGrant]
}

func newCORSMemory(on bool) (*corsMemory, error) {
	if !on {
		return nil, nil
	}
	t, err := sessions.NewTable(sessions.Options[string, corsGrant]{
		MaxEntries: corsGrants,
		TTL:        corsTTL,
		Size:       func(k string, g corsGrant) int { return len(k) + len(g.allowOrigin) + len(g.expose) },
	})
	if err != nil {
		return nil, err
	}
	return &corsMemory{grants: t}, nil
}

// corsKey is what a grant is remembered by: r's route and Origin; "" when
// r has no Origin (or an implausibly long one). A preflight counts for the
// route of the request it asks about (Access-Control-Request-Method): the
// login route takes POST only, and its preflight would otherwise teach the
// route every other path falls in.
func corsKey(r *http.Request) (key, origin string) {
	origin = r.Header.Get("Origin")
	if origin == "" || len(origin) > 256 {
		return "", ""
	}
	route := ""
	if info := infoFrom(r.Context()); info.rt != nil {
		i := info.route
		if info.preflightRoute > 0 {
			i = info.preflightRoute - 1
		}
		route = info.rt.names[i]
	}
	return route + "\x00" + origin, origin
}

// learn records what the upstream answered a request with an Origin.
func (m *corsMemory) learn(r *http.Request, h http.Header) {
	if m == nil {
		return
	}
	key, origin := corsKey(r)
	if key == "" {
		return
	}
	allow := h.Get("Access-Control-Allow-Origin")
	if allow != origin && allow != "*" {
		return // not a grant for this origin (or none at all): nothing learned
	}
	g := corsGrant{
		allowOrigin: allow,
		credentials: allow != "*" && strings.EqualFold(h.Get("Access-Control-Allow-Credentials"), "true"),
		expose:      strings.Join(h.Values("Access-Control-Expose-Headers"), ", "),
	}
	if old, ok := m.grants.Get(key); ok && old == g {
		m.grants.Touch(key)
		return
	}
	m.grants.Set(key, g)
}

// grant adds to h, an answer chatguard makes itself for r (never one of
// the upstream's: the app's decision stands there), the CORS headers the
// upstream last answered r's Origin on r's route, unless h has its own.
func (m *corsMemory) grant(r *http.Request, h http.Header) {
	if m == nil || r == nil || h.Get("Access-Control-Allow-Origin") != "" {
		return
	}
	key, _ := corsKey(r)
	if key == "" {
		return
	}
	g, ok := m.grants.Get(key)
	if !ok {
		return
	}
	h.Set("Access-Control-Allow-Origin", g.allowOrigin)
	if g.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if g.expose != "" {
		h.Set("Access-Control-Expose-Headers", g.expose)
	}
	// Only the names the app's own list lacks (QA: each was listed twice).
	appendExposed(h)
	if g.allowOrigin != "*" && !headerHasToken(h, "Vary", "Origin") {
		h.Add("Vary", "Origin")
	}
}

// expose adds chatguard's own headers to the Access-Control-Expose-Headers
// of an app's answer that a cross-origin page may read (it carries
// Access-Control-Allow-Origin): the app's CORS middleware lists its own
// headers, and a page could not read the RateLimit or X-Request-ID that
// chatguard adds to the answer (QA). The app's decision of who may read
// stands; a "*" without credentials already exposes every header.
func (m *corsMemory) expose(h http.Header) {
	if m == nil || h.Get("Access-Control-Allow-Origin") == "" {
		return
	}
	if headerHasToken(h, "Access-Control-Expose-Headers", "*") &&
		!strings.EqualFold(h.Get("Access-Control-Allow-Credentials"), "true") {
		return
	}
	appendExposed(h)
}

// appendExposed adds to h's Access-Control-Expose-Headers the names of
// corsExposed it does not list yet.
func appendExposed(h http.Header) {
	var add []string
	for _, name := range strings.Split(corsExposed, ", ") {
		if !headerHasToken(h, "Access-Control-Expose-Headers", name) {
			add = append(add, name)
		}
	}
	if len(add) == 0 {
		return
	}
	if listed := h.Values("Access-Control-Expose-Headers"); len(listed) > 0 {
		add = append(listed, add...)
	}
	h.Set("Access-Control-Expose-Headers", strings.Join(add, ", "))
}
