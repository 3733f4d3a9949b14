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
// answered the same Origin: an Origin the app never allowed gets nothing.

// corsTTL and corsOrigins bound what is remembered: an hour, 1,024 origins.
const (
	corsTTL     = time.Hour
	corsOrigins = 1024
)

// corsExposed are chatguard's own headers a page needs on its answers.
const corsExposed = "Retry-After, RateLimit, RateLimit-Policy, X-Request-ID"

// corsGrant is what the upstream last answered an Origin.
type corsGrant struct {
	allowOrigin string // the Origin itself, or "*"
	credentials bool
	expose      string
}

// corsMemory remembers the upstream's CORS answers by Origin; nil when
// proxy.cors_from_upstream is off.
type corsMemory struct {
	grants *sessions.Table[string, corsGrant]
}

func newCORSMemory(on bool) (*corsMemory, error) {
	if !on {
		return nil, nil
	}
	t, err := sessions.NewTable(sessions.Options[string, corsGrant]{
		MaxEntries: corsOrigins,
		TTL:        corsTTL,
		Size:       func(k string, g corsGrant) int { return len(k) + len(g.allowOrigin) + len(g.expose) },
	})
	if err != nil {
		return nil, err
	}
	return &corsMemory{grants: t}, nil
}

// learn records what the upstream answered a request with an Origin.
func (m *corsMemory) learn(r *http.Request, h http.Header) {
	if m == nil {
		return
	}
	origin := r.Header.Get("Origin")
	if origin == "" || len(origin) > 256 {
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
	if old, ok := m.grants.Get(origin); ok && old == g {
		m.grants.Touch(origin)
		return
	}
	m.grants.Set(origin, g)
}

// grant adds to h (an answer chatguard makes itself for r) the CORS
// headers the upstream last answered r's Origin, unless h has its own.
func (m *corsMemory) grant(r *http.Request, h http.Header) {
	if m == nil || r == nil || h.Get("Access-Control-Allow-Origin") != "" {
		return
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	g, ok := m.grants.Get(origin)
	if !ok {
		return
	}
	h.Set("Access-Control-Allow-Origin", g.allowOrigin)
	if g.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	expose := corsExposed
	if g.expose != "" {
		expose = g.expose + ", " + corsExposed
	}
	h.Set("Access-Control-Expose-Headers", expose)
	if g.allowOrigin != "*" {
		h.Add("Vary", "Origin")
	}
}
