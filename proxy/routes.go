package proxy

import (
	"path"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/limiter"
)

// Route labels that are not configured routes.
const (
	RouteOther    = "other"    // no configured route matched
	RouteInternal = "internal" // chatguard's own endpoints on the public listener
)

type route struct {
	name    string
	methods []string
	exact   string // matches only this path, when prefix and segs are empty
	prefix  string // "/api/messages" for "/api/messages/*"
	// segs are the segments of a path with Express parameters
	// ("/v2/rooms/:roomId/messages": v2, rooms, ":", messages); tail: it
	// ends in /* and takes everything below too.
	segs  []string
	tail  bool
	index int
}

// routeTable matches requests to configured routes, first match wins. It is
// built once and read concurrently without locks.
type routeTable struct {
	routes []route
	other  int // index of "other"
	intern int // index of "internal"
}

func newRouteTable(cfg []config.Route) *routeTable {
	t := &routeTable{}
	for i, r := range cfg {
		rt := route{name: r.Name, methods: r.Methods, index: i}
		p, tail := strings.CutSuffix(r.Path, "/*")
		switch c := canonicalPath(p); {
		case strings.Contains(c, "/:"):
			rt.segs, rt.tail = strings.Split(c[1:], "/"), tail
			for j, seg := range rt.segs {
				if strings.HasPrefix(seg, ":") {
					rt.segs[j] = ":"
				}
			}
		case tail:
			rt.prefix = c
		default:
			rt.exact = c
		}
		t.routes = append(t.routes, rt)
	}
	t.other = len(cfg)
	t.intern = len(cfg) + 1
	return t
}

// names returns every label value, indexed like match's result.
func (t *routeTable) names() []string {
	out := make([]string, 0, len(t.routes)+2)
	for _, r := range t.routes {
		out = append(out, r.name)
	}
	return append(out, RouteOther, RouteInternal)
}

// canonicalPath is a path as an Express backend routes it: case-insensitive,
// a trailing slash optional — so that no spelling of a limited or
// authenticated route reaches the backend unlimited. A path with dot
// segments, which Express does not resolve, is refused before routing
// (hasDotSegment); Clean here only drops the trailing slash and doubled ones.
func canonicalPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return asciiLower(path.Clean(p)) // Clean drops a trailing slash too; no allocation for a clean path
}

// match returns the index of the route for method and path (URL.Path, the
// decoded path); raw is the path the upstream gets (forwardedPath), "" for
// the decoded one.
// The route is the one Express picks: the first that matches the path as
// sent, undecoded, with its doubled slashes, case-insensitively and with an
// optional trailing slash — Express matches before it decodes, so
// /v2/rooms/a%2Fb/messages is /v2/rooms/:roomId/messages with roomId a/b.
// Matched on the decoded, cleaned path first, an earlier public route
// took /v2/rooms/lobb%79/x, which Express hands a later route with auth and
// a limit (QA). Only when no route matches as Express would does the
// decoded path pick one (/api/m%65ssages still counts as messages: Express
// routes it nowhere of the app's, and a spelling must not dodge a limit).
func (t *routeTable) match(method, p, raw string) int {
	sent := p
	if raw != "" {
		sent = raw
	}
	asSent := expressPath(sent)
	if i, ok := t.first(method, asSent); ok {
		return i
	}
	if clean := canonicalPath(p); clean != asSent {
		if i, ok := t.first(method, clean); ok {
			return i
		}
	}
	return t.other
}

// first is the index of the first route for method and path.
func (t *routeTable) first(method, path string) (int, bool) {
	for i := range t.routes {
		r := &t.routes[i]
		if r.methodMatches(method) && r.pathMatches(path) {
			return r.index, true
		}
	}
	return 0, false
}

// expressPath is a path as Express compares it with a route: ASCII lower
// case, one trailing slash dropped, nothing decoded or merged.
func expressPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if len(p) > 1 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	return asciiLower(p)
}

// asciiLower is s with A-Z in lower case, and nothing else changed: Unicode
// case folding would make a Kelvin sign a k (review). No allocation when s
// has no capital.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b >= 'A' && b <= 'Z' {
			out := []byte(s)
			for j := i; j < len(out); j++ {
				if c := out[j]; c >= 'A' && c <= 'Z' {
					out[j] = c + 'a' - 'A'
				}
			}
			return string(out)
		}
	}
	return s
}

// segsMatch reports whether a canonical path matches a route with
// parameters: each parameter takes one non-empty segment, as Express's.
func (r *route) segsMatch(path string) bool {
	rest := strings.TrimPrefix(path, "/")
	for i, s := range r.segs {
		if rest == "" {
			return false
		}
		seg, after, more := strings.Cut(rest, "/")
		if s != ":" && s != seg || seg == "" { // a parameter takes no empty segment (a doubled slash)
			return false
		}
		if !more {
			return i == len(r.segs)-1
		}
		rest = after
	}
	return r.tail // segments left: only below a /*
}

func (r *route) pathMatches(path string) bool {
	if r.segs != nil {
		return r.segsMatch(path)
	}
	if r.prefix == "" {
		return path == r.exact
	}
	if !strings.HasPrefix(path, r.prefix) {
		return false
	}
	rest := path[len(r.prefix):]
	return rest == "" || rest[0] == '/' || r.prefix == "/" // "/*" takes every path
}

func (r *route) methodMatches(method string) bool {
	if len(r.methods) == 0 {
		return true
	}
	for _, m := range r.methods {
		if m == method || m == "GET" && method == "HEAD" {
			return true
		}
	}
	return false
}

// routing is everything derived from the configured routes: matching,
// labels, policies, auth modes and metric children. Reload swaps it whole;
// a request keeps the routing it started with.
type routing struct {
	table     *routeTable
	names     []string
	policies  []*limiter.Policy // by route index; nil = no limit
	authModes []string          // by route index
	requests  [][]prometheus.Counter
	durations []prometheus.Observer
}

func newRouting(cfg *config.Config, m *serverMetrics) *routing {
	rt := &routing{table: newRouteTable(cfg.Routes)}
	rt.names = rt.table.names()
	for _, r := range cfg.Routes {
		var p *limiter.Policy
		if r.Limit != nil {
			p = limiter.NewPolicy(r.Name, *r.Limit, cfg.Limits.Multiplier)
			p.Shadow = p.Shadow || cfg.Limits.Shadow
		}
		mode := r.Auth
		if mode == "" {
			mode = authNone
		}
		rt.policies = append(rt.policies, p)
		rt.authModes = append(rt.authModes, mode)
	}
	for _, name := range rt.names {
		row := make([]prometheus.Counter, len(statusClasses))
		for i, c := range statusClasses {
			row[i] = m.requests.WithLabelValues(name, c)
		}
		rt.requests = append(rt.requests, row)
		rt.durations = append(rt.durations, m.durations.WithLabelValues(name))
	}
	return rt
}
