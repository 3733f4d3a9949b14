// Package identity verifies the users' JWTs (HS256 with a shared secret,
// RS256 or ES256 with a public key) and reads who they are: the user key,
// the role and the display name.
package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatguard/chatguard/internal/identity/pubkey"
	"github.com/chatguard/chatguard/internal/identity/userkey"
)

// Roles as the seed names them; every other role is RoleBasic.
const (
	RoleAdmin = "admin"
	RoleAgent = "agent"
	RoleBasic = "basic"
)

// Errors of Verify.
var (
	ErrMissing = errors.New("identity: no token")
	ErrExpired = errors.New("identity: token expired")
	ErrInvalid = errors.New("identity: token invalid")
)

// Identity is who a verified token says the caller is.
type Identity struct {
	User string // the user key: the first non-empty of the user claims, as userkey.Normalise gives it
	Role string // admin, agent or basic
	Name string // display name, may be empty
}

// Options configure a Verifier. At least one of Secret and PublicKeyPEM is required.
type Options struct {
	// Secret verifies HS256 tokens.
	Secret []byte
	// PublicKeyPEM verifies RS256 (an RSA key) or ES256 (a P-256 key)
	// tokens: a PKIX public key or a certificate.
	PublicKeyPEM []byte
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer, Audience string
	// Leeway for exp and nbf; 0 means 30 seconds.
	Leeway time.Duration
	// RequireExpiry rejects tokens without exp.
	RequireExpiry bool
	// UserClaims are tried in order for the user key; nil means email, sub.
	UserClaims []string
	// RoleClaim and NameClaim name the role and display name claims; empty
	// means role and name. A name is the token's top-level claim of that
	// name if it has one (https://example.com/roles holds dots), else, when
	// it holds dots, the nested path (app_metadata.role).
	RoleClaim, NameClaim string
	// RoleMap maps the app's role names (compared case-insensitively) onto
	// admin, agent or basic before the seed's names are looked for
	// (owner: admin, moderator: agent).
	RoleMap map[string]string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	o       Options
	roleMap map[string]string // RoleMap with its keys trimmed and lower-cased
	parser  *jwt.Parser
	pub     any
	hmac    any // the HS256 key, or a set of two (see New)
}

// New returns a Verifier. Only the algorithms its keys can verify are
// accepted: "none", and a token whose algorithm does not match the kind of
// key (the HS256-signed-with-the-public-key confusion), are rejected.
func New(o Options) (*Verifier, error) {
	v := &Verifier{o: o}
	var algs []string
	if len(o.Secret) > 0 {
		algs = append(algs, "HS256")
		v.hmac = o.Secret
		// A secret read from a file often ends in a newline. The app may
		// sign with it (it read the same Secret key) or without it (its
		// copy was typed): both verify, rather than every token failing
		// without a word.
		if t := bytes.TrimSpace(o.Secret); len(t) > 0 && len(t) != len(o.Secret) {
			v.hmac = jwt.VerificationKeySet{Keys: []jwt.VerificationKey{o.Secret, t}}
		}
	}
	if len(o.PublicKeyPEM) > 0 {
		pub, alg, err := pubkey.Parse(o.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		v.pub = pub
		algs = append(algs, alg)
	}
	if len(algs) == 0 {
		return nil, errors.New("identity: a secret or a public key is required")
	}
	if v.o.Leeway == 0 {
		v.o.Leeway = 30 * time.Second
	}
	if len(v.o.UserClaims) == 0 {
		v.o.UserClaims = []string{"email", "sub"}
	}
	if v.o.RoleClaim == "" {
		v.o.RoleClaim = "role"
	}
	if v.o.NameClaim == "" {
		v.o.NameClaim = "name"
	}
	if v.o.Now == nil {
		v.o.Now = time.Now
	}
	if len(o.RoleMap) > 0 {
		v.roleMap = make(map[string]string, len(o.RoleMap))
		for from, to := range o.RoleMap {
			key := strings.ToLower(strings.TrimSpace(from))
			switch {
			case key == "":
				return nil, errors.New("identity: a role map key is empty")
			case to != RoleAdmin && to != RoleAgent && to != RoleBasic:
				return nil, fmt.Errorf("identity: role map %q: %q is not admin, agent or basic", from, to)
			}
			if _, dup := v.roleMap[key]; dup {
				return nil, fmt.Errorf("identity: role map key %q is given twice (keys are compared case-insensitively)", key)
			}
			v.roleMap[key] = to
		}
	}
	popts := []jwt.ParserOption{
		// Numbers as written, not float64: a numeric user claim above 2^53
		// (a 64-bit id) must not become a neighbour's key. exp, nbf and iat
		// read json.Number as well.
		jwt.WithJSONNumber(),
		jwt.WithValidMethods(algs),
		jwt.WithLeeway(v.o.Leeway),
		jwt.WithTimeFunc(v.o.Now),
		// No iat check: RFC 7519 makes it information, and jsonwebtoken
		// (the app's verifier) reads it only for maxAge, so an issuer whose
		// clock ran 30 s ahead had every fresh token refused by chatguard
		// alone, and clients that refresh on invalid_token looped (QA).
	}
	if o.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		popts = append(popts, jwt.WithAudience(o.Audience))
	}
	if o.RequireExpiry {
		popts = append(popts, jwt.WithExpirationRequired())
	}
	v.parser = jwt.NewParser(popts...)
	return v, nil
}

// Verify checks token and returns the identity in it. Errors are ErrExpired
// or ErrInvalid (wrapping the reason).
func (v *Verifier) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrMissing
	}
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		// RFC 7515 §4.1.11: a recipient must reject a token whose "crit"
		// header names extensions it does not understand. This verifier
		// understands none (b64=false, say, would change what is signed).
		if _, ok := t.Header["crit"]; ok {
			return nil, errors.New(`token header "crit" names extensions this verifier does not support`)
		}
		switch t.Method.Alg() {
		case "HS256":
			return v.hmac, nil
		case "RS256", "ES256":
			return v.pub, nil
		}
		return nil, fmt.Errorf("algorithm %s not allowed", t.Method.Alg())
	})
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Identity{}, fmt.Errorf("%w: %v", ErrExpired, err)
	case err != nil:
		return Identity{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	id := Identity{Role: v.role(claims), Name: stringClaim(claims, v.o.NameClaim)}
	for _, c := range v.o.UserClaims {
		if id.User = userkey.Normalise(userClaim(claims, c)); id.User != "" {
			break
		}
	}
	if id.User == "" {
		return Identity{}, fmt.Errorf("%w: no user claim (%s)", ErrInvalid, strings.Join(v.o.UserClaims, ", "))
	}
	return id, nil
}

// claim is the value of the claim name: the top-level claim of that very
// name when the token has one (namespaced claims such as
// https://example.com/roles hold dots), else, for a name with dots, the
// nested path through JSON objects (app_metadata.role, as Auth0 and Okta
// apps read it).
func claim(c jwt.MapClaims, name string) any {
	if v, ok := c[name]; ok || !strings.Contains(name, ".") {
		return v
	}
	var cur any = map[string]any(c)
	for _, part := range strings.Split(name, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = obj[part]; !ok {
			return nil
		}
	}
	return cur
}

// stringClaim is a string claim without surrounding space: an email of " "
// is no user, and must not make users share a key.
func stringClaim(c jwt.MapClaims, name string) string {
	s, _ := claim(c, name).(string)
	return strings.TrimSpace(s)
}

// userClaim is a user claim: a string as stringClaim gives it, or a number
// that is a whole one (jwt.sign({id: user.id})) as its decimal integer.
// Anything else (a fraction, a boolean, an object) is no user.
func userClaim(c jwt.MapClaims, name string) string {
	switch v := claim(c, name).(type) {
	case string:
		return strings.TrimSpace(v)
	case json.Number:
		s, _ := integerString(string(v))
		return s
	}
	return ""
}

// maxIntegerDigits bounds a numeric user key: 1e999999999 is a whole number
// too, but not one to spell out.
const maxIntegerDigits = 100

// integerString is the whole number a JSON number literal stands for,
// exactly, in decimal without leading zeros (12345.0 and 1.2345e4 are
// 12345, -0 is 0), and false for a fraction or more than maxIntegerDigits
// digits. Exact arithmetic on the digits, not float64: 2^53+1 stays itself
// and 1.0000000000000000001 stays a fraction.
func integerString(lit string) (string, bool) {
	neg := strings.HasPrefix(lit, "-")
	lit = strings.TrimPrefix(lit, "-")
	mant, expPart := lit, ""
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		mant, expPart = lit[:i], lit[i+1:]
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := intPart + frac
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return "", false
	}
	exp := 0
	if expPart != "" {
		e, err := strconv.Atoi(expPart) // takes a sign; overflow is an error
		if err != nil || e > maxIntegerDigits+len(digits) || e < -(maxIntegerDigits+len(digits)) {
			// Either more digits than allowed, or a fraction (when
			// the mantissa is not 0) or 0: 0e-999 is refused, as no
			// issuer writes it.
			return "", false
		}
		exp = e
	}
	point := len(intPart) + exp // digits[:point] is the whole part
	var whole string
	switch {
	case point <= 0:
		if strings.Trim(digits, "0") != "" {
			return "", false
		}
	case point >= len(digits):
		whole = digits + strings.Repeat("0", point-len(digits))
	default:
		if strings.Trim(digits[point:], "0") != "" {
			return "", false
		}
		whole = digits[:point]
	}
	whole = strings.TrimLeft(whole, "0")
	switch {
	case whole == "":
		return "0", true
	case len(whole) > maxIntegerDigits:
		return "", false
	case neg:
		return "-" + whole, true
	}
	return whole, true
}

// role is the token's role: the role claim, a string or an array of them
// (Auth0's and Okta's roles claim), each mapped by RoleMap, then onto the
// seed's names; of an array, the highest (admin > agent > basic).
func (v *Verifier) role(c jwt.MapClaims) string {
	switch r := claim(c, v.o.RoleClaim).(type) {
	case string:
		return v.mapRole(r)
	case []any:
		best := RoleBasic
		for _, e := range r {
			if s, ok := e.(string); ok {
				if got := v.mapRole(s); roleRank[got] > roleRank[best] {
					best = got
				}
			}
		}
		return best
	}
	return RoleBasic
}

// roleRank orders the seed's roles.
var roleRank = map[string]int{RoleBasic: 0, RoleAgent: 1, RoleAdmin: 2}

// mapRole is one role name: RoleMap's role for it, else NormaliseRole's.
func (v *Verifier) mapRole(r string) string {
	if to, ok := v.roleMap[strings.ToLower(strings.TrimSpace(r))]; ok {
		return to
	}
	return NormaliseRole(r)
}

// NormaliseRole maps a role claim onto the seed's three roles.
func NormaliseRole(r string) string {
	switch strings.ToLower(strings.TrimSpace(r)) {
	case RoleAdmin:
		return RoleAdmin
	case RoleAgent:
		return RoleAgent
	}
	return RoleBasic
}

// ErrConflict: a request carries valid tokens of two different users.
var ErrConflict = fmt.Errorf("%w: tokens of different users", ErrInvalid)

// VerifyRequest verifies every token r carries (Authorization bearer, the
// cookie, the token query parameter), not only the first: a backend may
// read another one than chatguard would (Socket.IO apps read the query
// token before the header), so the identity chatguard counts must be the
// one every valid token names. Tokens that do not verify are passed over
// when one does (a stale cookie beside a fresh header), since the backend
// refuses them as well; two valid tokens naming different users are
// ErrConflict. Without a valid token, the error is the first token's
// (ErrMissing without any).
func (v *Verifier) VerifyRequest(r *http.Request, cookie string) (Identity, error) {
	var (
		id    Identity
		first error
	)
	for _, tok := range Tokens(r, cookie) {
		got, err := v.Verify(tok)
		switch {
		case err != nil:
			if first == nil {
				first = err
			}
		case id.User == "":
			id = got
		case got.User != id.User:
			return Identity{}, ErrConflict
		}
	}
	switch {
	case id.User != "":
		return id, nil
	case first != nil:
		return Identity{}, first
	}
	return Identity{}, ErrMissing
}

// cookieValue is a cookie's value as Express reads it (the cookie
// package, under cookie-parser and req.cookies): percent-decoded when it
// holds a '%', as decodeURIComponent does, else (or when that fails) as
// sent. Read raw, a token written with %2E for its dots failed here and
// was passed over while the app read the user it names (review).
func cookieValue(v string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	if d, err := url.PathUnescape(v); err == nil && utf8.ValidString(d) {
		return d
	}
	return v
}

// Tokens lists every token r carries: the Authorization bearer, the cookie
// named cookie (when not empty), the token query parameter, in that order.
func Tokens(r *http.Request, cookie string) []string {
	var out []string
	// Every Authorization field and every cookie of that name: the app may
	// read another one than the first (review of QA: two headers of two
	// users let the client pick which one chatguard counted).
	for _, h := range r.Header.Values("Authorization") {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			if t := strings.TrimSpace(h[7:]); t != "" {
				out = append(out, t)
			}
		}
	}
	if cookie != "" {
		for _, c := range r.CookiesNamed(cookie) {
			if v := cookieValue(c.Value); v != "" {
				out = append(out, v)
			}
		}
	}
	if t := r.URL.Query().Get("token"); t != "" {
		out = append(out, t)
	}
	return out
}
