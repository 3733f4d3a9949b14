package limiter

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"
	"unicode"

	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/identity/userkey"
	"github.com/chatguard/chatguard/internal/redact"
)

// maxPartBytes bounds a key part's length; longer values are hashed.
const maxPartBytes = 64

// Anonymous is the role label of a caller without a verified token.
const Anonymous = "anonymous"

// Policy is one route's limit.
type Policy struct {
	Name   string // the route's name: the policy name in headers, envelopes and metrics
	Limit  Limit
	Roles  map[string]Limit // admin, agent, basic
	Key    []KeyPart
	Shadow bool
}

// KeyPart is one component of a rate-limit key.
type KeyPart struct {
	Kind string // ip, user, header, body
	Arg  string // header name or body field
	// label is the part's name in a key, "|kind:arg=", made once: arg in
	// ASCII lower case (header names are case-insensitive), so that the
	// key's length never exceeds the configured spelling's.
	label string
	// secret: a header or body field whose name holds credentials
	// (Authorization, Cookie, X-Api-Key, refresh_token…): its value is
	// hashed in the key.
	secret bool
}

// free reports a part any value a client sends can fill: a header or a
// body field.
func (k KeyPart) free() bool { return k.Kind == "header" || k.Kind == "body" }

// Request is what a key is built from.
type Request struct {
	IP   netip.Addr
	User string // empty when anonymous
	Role string
	// Header returns a request header's value.
	Header func(name string) string
	// BodyField returns a top-level field of the request body, read lazily
	// (JSON or form); ok false when there is none. nil means no body.
	BodyField func(field string) (string, bool)
}

// NewPolicy builds a route's policy, scaled by multiplier.
func NewPolicy(name string, l config.RouteLimit, multiplier float64) *Policy {
	p := &Policy{Name: name, Limit: scale(Limit{Rate: l.Rate, Period: l.Period, Burst: l.Burst}, multiplier), Shadow: l.Shadow}
	if len(l.Roles) > 0 {
		p.Roles = map[string]Limit{}
		for role, rate := range l.Roles {
			p.Roles[role] = scale(Limit{Rate: rate, Period: l.Period, Burst: l.Burst}, multiplier)
		}
	}
	for _, part := range l.Key {
		kind, arg, _ := strings.Cut(part, ":")
		label := "|" + kind
		if arg != "" {
			label += ":" + userkey.ASCIILower(arg)
		}
		part := KeyPart{Kind: kind, Arg: arg, label: label + "="}
		part.secret = part.free() && redact.IsSensitiveKey(arg)
		p.Key = append(p.Key, part)
	}
	return p
}

// scale applies RATE_LIMIT_MULTIPLIER to a limit (see config.ScaleLimit).
func scale(l Limit, m float64) Limit {
	l.Rate, l.Period, l.Burst = config.ScaleLimit(l.Rate, l.Period, l.Burst, m)
	return l
}

// LimitFor is the limit for a caller of role.
func (p *Policy) LimitFor(role string) Limit {
	if l, ok := p.Roles[role]; ok {
		return l
	}
	return p.Limit
}

// KeyFor builds the request's key: the policy name and each part. A part
// that cannot be built (no verified user, no such header or body field)
// makes the whole key fall back to the client IP, so that such requests
// never share one bucket.
func (p *Policy) KeyFor(r Request) string {
	var b strings.Builder
	b.WriteString(p.Name)
	for _, part := range p.Key {
		v, ok := "", true
		switch part.Kind {
		case "ip":
			v = ipKey(r.IP)
		case "user":
			v, ok = r.User, r.User != ""
		case "header":
			if r.Header != nil {
				v = r.Header(part.Arg)
			}
			ok = v != ""
		case "body":
			ok = false
			if r.BodyField != nil {
				v, ok = r.BodyField(part.Arg)
				ok = ok && v != ""
			}
		}
		if !ok {
			return p.Name + "|ip=" + ipKey(r.IP)
		}
		b.WriteString(part.label)
		// Judged as sent: lower-cased, AKIA…, AIza… and eyJ… no longer
		// look like what they are (review).
		secret := part.secret || part.free() && redact.String(v) != v
		switch part.Kind {
		case "user":
			// Ana@X.com and ana@x.com are one user; a sub claim is
			// case-sensitive (RFC 7519): Carol and carol are two. The rule
			// presence, socket caps and kicks key users by too.
			v = userkey.Normalise(v)
		case "body":
			// JavaScript's trim() also takes U+FEFF, which TrimSpace
			// keeps: an app that trims before looking the account up
			// took "kate@x.com\uFEFF" as kate, and each number of BOMs
			// had a bucket of its own (QA). Unicode lower case: merging
			// more values only makes the limit stricter.
			v = strings.ToLower(strings.TrimFunc(v, isTrimmed))
		}
		// A client-chosen value: keep the key small. A credential (a
		// header:X-Api-Key or header:Authorization key, a body
		// refresh_token) is never written in clear: keys are in Redis,
		// readable by SCAN, MONITOR and its dumps (QA: sk_live_… and a
		// session cookie in clear), and in an admin's logs.
		if len(v) > maxPartBytes || secret {
			sum := sha256.Sum256([]byte(v))
			v = "sha256:" + hex.EncodeToString(sum[:16])
		}
		b.WriteString(v)
	}
	return b.String()
}

// isTrimmed reports the characters trimmed from a body value for its key:
// Go's white space (Unicode's White_Space) and U+FEFF, the union of what
// Go's TrimSpace and JavaScript's String.prototype.trim take.
func isTrimmed(r rune) bool { return unicode.IsSpace(r) || r == '\uFEFF' }

// AddrGroup is what one client counts as: its IPv4 address, or the /64 of
// its IPv6 one (one client commonly owns a whole /64 and could otherwise
// rotate through it).
func AddrGroup(a netip.Addr) netip.Prefix {
	if a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

// GroupString names a group as keys and logs do: an IPv4 address alone,
// an IPv6 group as its /64.
func GroupString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// ipKey is the key part of a's group.
func ipKey(a netip.Addr) string { return GroupString(AddrGroup(a)) }
