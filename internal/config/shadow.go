package config

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// routePattern is a route's path as matched: canonical segments (":" for a
// parameter) and whether it ends in /*.
type routePattern struct {
	segs []string
	tail bool
}

func patternOf(p string) routePattern {
	p, tail := strings.CutSuffix(p, "/*")
	c := strings.ToLower(path.Clean("/" + strings.TrimPrefix(p, "/")))
	var segs []string
	if c != "/" {
		segs = strings.Split(c[1:], "/")
	}
	for i, s := range segs {
		if strings.HasPrefix(s, ":") {
			segs[i] = ":"
		}
	}
	return routePattern{segs: segs, tail: tail}
}

// covers reports whether every path b matches, a matches too.
func (a routePattern) covers(b routePattern) bool {
	switch {
	case len(a.segs) > len(b.segs), len(a.segs) < len(b.segs) && !a.tail, b.tail && !a.tail:
		return false
	}
	for i, s := range a.segs {
		if s != ":" && s != b.segs[i] {
			return false
		}
	}
	return true
}

// methodsCover reports whether every method b matches, a matches too (no
// methods: all; GET takes HEAD).
func methodsCover(a, b []string) bool {
	if len(a) == 0 {
		return true
	}
	if len(b) == 0 {
		return false
	}
	for _, m := range b {
		if !slices.Contains(a, m) && !(m == "HEAD" && slices.Contains(a, "GET")) {
			return false
		}
	}
	return true
}

// shadowedRoutes warns of each route an earlier one takes every request
// of: the first match wins, so it never matches, and its auth and limit
// never apply (QA: a required-auth kick route after a catch-all of the
// same rooms let anonymous kicks through, and check-config said valid).
func shadowedRoutes(routes []Route) []string {
	var out []string
	for j, b := range routes {
		pb := patternOf(b.Path)
		for i, a := range routes[:j] {
			if methodsCover(a.Methods, b.Methods) && patternOf(a.Path).covers(pb) {
				out = append(out, fmt.Sprintf("routes[%d] (%s %s) never matches: routes[%d] (%s %s), before it, takes all its requests "+
					"(the first match wins): put it before routes[%d]", j, b.Name, b.Path, i, a.Name, a.Path, i))
				break
			}
		}
	}
	return out
}
