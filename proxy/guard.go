package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	apierrors "github.com/chatguard/chatguard/errors"
	"github.com/chatguard/chatguard/internal/identity"
	"github.com/chatguard/chatguard/internal/identity/userkey"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/limiter"
)

// Auth modes of a route.
const (
	authNone     = "none"
	authOptional = "optional"
	authRequired = "required"
)

// guard authenticates and rate-limits a request on a configured route. It
// reports false when it has answered the request itself (401, 429).
func (s *Server) guard(w *responseWriter, r *http.Request, info *reqInfo) bool {
	if s.abuse != nil {
		if left, blocked := s.abuse.Blocked(info.client); blocked && !s.owedPoll(r) {
			retry := ceilSeconds(left)
			e := apierrors.New(apierrors.CodeIPBlocked, "")
			e.Details = map[string]any{"retryAfterSeconds": retry}
			e.Header = http.Header{"Retry-After": {strconv.Itoa(retry)}}
			s.writeError(w, r, info, e, sourceProxy)
			return false
		}
	}
	if corsPreflight(r) {
		// A browser's own question before a cross-origin request, never
		// with credentials (Fetch standard): on a route with auth required
		// it got 401, and on a limited one it spent the anonymous IP
		// bucket (QA: 30 a minute, then 429 without CORS headers, then
		// the office's IP blocked for an hour). The app's cors() answers
		// them ahead of its auth and limits, as in the seed.
		return true
	}
	rt := info.rt
	if info.route >= len(rt.policies) {
		return true // "other" and chatguard's own endpoints
	}
	mode, policy := rt.authModes[info.route], rt.policies[info.route]
	if mode == authNone && policy == nil {
		return true
	}
	var id identity.Identity
	if mode != authNone {
		var e *apierrors.Error
		var why error
		if id, e, why = s.identify(r, mode); e != nil {
			f := logrus.Fields{"code": string(e.Code)}
			if why != nil {
				// Why the token was refused (a user claim that is a number,
				// a bad signature, an audience): the envelope says only
				// TOKEN_INVALID, and the log said no more (QA). The text is
				// the library's and chatguard's, never the token's.
				f["reason"] = why.Error()
			}
			s.securityLog(info, "authentication failed", f)
			s.writeError(w, r, info, e, sourceProxy)
			return false
		}
	}
	info.user = id.User
	if policy == nil || s.limiter == nil {
		return true
	}
	d, err := s.limiter.Decide(r.Context(), policy, limiter.Request{
		IP: info.client, User: id.User, Role: id.Role,
		Header:    headerAsNode(r.Header),
		BodyField: s.bodyFields(r),
	})
	if err != nil {
		if r.Context().Err() == nil { // else the client left while the store decided
			s.log.WithError(err).WithFields(logrus.Fields{"requestId": info.id, logging.FieldCategory: logging.CategorySecurity}).
				Warn("rate-limit store failed; request let through")
		}
		return true // no headers: there is no count to report
	}
	setRateLimitHeaders(w, d)
	if d.Shadow {
		// What enforcing would have refused, said as nginx's
		// limit_req_dry_run does: who, on which route, and the access line.
		info.shadowLimited = true
		s.securityLog(info, "rate limit exceeded (shadow mode: let through)", logrus.Fields{"policy": policy.Name, "retryAfterSeconds": ceilSeconds(d.RetryAfter)})
	}
	if !d.Limited() {
		return true
	}
	retry := ceilSeconds(d.RetryAfter)
	e := apierrors.New(apierrors.CodeRateLimitExceeded, "")
	e.Details = map[string]any{
		"policy":            policy.Name,
		"limit":             d.Limit.Quota(),
		"windowSeconds":     d.Limit.Window().Seconds(),
		"retryAfterSeconds": retry,
	}
	e.Header = http.Header{"Retry-After": {strconv.Itoa(retry)}}
	s.securityLog(info, "rate limit exceeded", logrus.Fields{"policy": policy.Name, "retryAfterSeconds": retry})
	if s.abuse != nil {
		s.abuse.Rejected(info.client, info.id)
	}
	s.writeError(w, r, info, e, sourceProxy)
	return false
}

// owedPoll reports whether r is a GET poll of a Socket.IO session that
// chatguard ended with packets still owed to it: the DISCONNECT a block
// sent to every socket of the IP. Refused with 403 like the rest, a
// polling client that was between two polls never heard it, took the 403
// for a transport error and reconnected, again and again for the whole
// block (browser QA); a WebSocket client got its DISCONNECT at once.
func (s *Server) owedPoll(r *http.Request) bool {
	if r.Method != http.MethodGet || s.ws == nil || !s.ws.isSocketIO(r) || isWebSocketUpgrade(r) ||
		r.URL.Query().Get("transport") != "polling" {
		return false // only the poll itself: not an upgrade of the session (review)
	}
	return s.ws.owesPoll(r.URL.Query().Get("sid"))
}

// identify verifies the request's token. On an optional route a missing or
// bad token is an anonymous caller; on a required one it is a 401.
func (s *Server) identify(r *http.Request, mode string) (identity.Identity, *apierrors.Error, error) {
	v := s.verifier.Load()
	if v == nil {
		if mode == authRequired { // refused by config validation; kept as a guard
			return identity.Identity{}, apierrors.New(apierrors.CodeAuthRequired, ""), nil
		}
		return identity.Identity{}, nil, nil
	}
	id, err := v.VerifyRequest(r, s.cfg.Auth.Cookie)
	if errors.Is(err, identity.ErrConflict) {
		// Valid tokens of two users: whichever the backend reads, it is
		// not the one chatguard would count. Refused on every route.
		return identity.Identity{}, challenge(apierrors.New(apierrors.CodeTokenInvalid, "The request carries tokens of different users.")), err
	}
	if err == nil {
		if s.userRoles != nil {
			s.userRoles.Set(userkey.Normalise(id.User), id.Role) // keyed as every table keys users
		}
		return id, nil, nil
	}
	if mode != authRequired {
		return identity.Identity{}, nil, nil
	}
	switch {
	case errors.Is(err, identity.ErrMissing):
		return id, challenge(apierrors.New(apierrors.CodeAuthRequired, "")), nil
	case errors.Is(err, identity.ErrExpired):
		return id, challenge(apierrors.New(apierrors.CodeTokenExpired, "")), err
	}
	return id, challenge(apierrors.New(apierrors.CodeTokenInvalid, "")), err
}

// challenge adds the WWW-Authenticate header every 401 must carry (RFC 9110
// §15.5.2), in RFC 6750's Bearer form: the realm alone when no token came,
// error="invalid_token" for a bad or expired one, so that clients and SDKs
// that read the header (to refresh a token) see it as from the app.
func challenge(e *apierrors.Error) *apierrors.Error {
	v := `Bearer realm="chatguard"`
	switch e.Code {
	case apierrors.CodeTokenExpired:
		v += `, error="invalid_token", error_description="The access token expired"`
	case apierrors.CodeTokenInvalid:
		v += `, error="invalid_token", error_description="The access token is invalid"`
	}
	if e.Header == nil {
		e.Header = http.Header{}
	}
	e.Header.Set("WWW-Authenticate", v)
	return e
}

func (s *Server) securityLog(info *reqInfo, msg string, f logrus.Fields) {
	f["requestId"] = info.id
	f[logging.FieldCategory] = logging.CategorySecurity
	f["remoteIp"] = info.client.String()
	f["route"] = info.rt.names[info.route]
	if info.user != "" {
		f["user"] = logUser(info.user)
	}
	s.log.WithFields(f).Warn(msg)
}

// maxUserLogBytes bounds the user key on a log line: it is a token's claim,
// and a log line is no place for a page of it.
const maxUserLogBytes = 256

// logUser is the user key as log lines carry it (the seed's enriched
// context: the user, beside the endpoint and the request id).
func logUser(u string) string { return capText(userkey.Normalise(u), maxUserLogBytes) }

// setRateLimitHeaders writes the IETF draft's RateLimit-Policy and RateLimit fields.
func setRateLimitHeaders(w *responseWriter, d limiter.Decision) {
	name := strconv.Quote(d.Policy.Name)
	w.setList("RateLimit-Policy", fmt.Sprintf("%s;q=%d;w=%d", name, d.Limit.Quota(), ceilSeconds(d.Limit.Window())))
	w.setList("RateLimit", fmt.Sprintf("%s;r=%d;t=%d", name, d.Remaining, ceilSeconds(d.ResetAfter)))
}

func ceilSeconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}

// bodyFields returns a lookup of the request body's top-level fields, read
// on first use: at most rate_limit.body_key_bytes of a JSON or form body.
// The exact bytes read are put back in front of the rest of the body, so the
// upstream receives the request unchanged. nil when there is no body.
func (s *Server) bodyFields(r *http.Request) func(string) (string, bool) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	var fields map[string]string
	read := false
	return func(field string) (string, bool) {
		if !read {
			read = true
			fields = s.readBodyFields(r)
		}
		v, ok := fields[field]
		return v, ok
	}
}

func (s *Server) readBodyFields(r *http.Request) map[string]string {
	limit := s.cfg.Limits.BodyKeyBytes
	buf, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	r.Body = replayBody{Reader: io.MultiReader(bytes.NewReader(buf), r.Body), Closer: r.Body}
	if err != nil || len(buf) > limit {
		return nil // too large or broken: the key falls back to the IP
	}
	// body-parser inflates gzip and deflate for the backend: compressing a
	// login body must not move it from its IP+email bucket to the IP's.
	// Not br, which body-parser refuses too: a 19-byte brotli stream can
	// make its decoder allocate 16 MB, and anyone can send one.
	enc := r.Header.Get("Content-Encoding")
	if strings.EqualFold(strings.TrimSpace(enc), "br") {
		return nil
	}
	if buf, err = decodeBody(buf, enc, int64(limit)); err != nil {
		return nil
	}
	buf = bytes.TrimPrefix(buf, []byte("\xef\xbb\xbf")) // a BOM, which body-parser skips too
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	out := map[string]string{}
	switch mt {
	case "application/json":
		// Numbers as text: 1e400 in another field is a number to
		// JSON.parse, and failed the whole body in Go's float64, so the
		// login fell back to its IP's bucket (QA).
		var doc map[string]any
		dec := json.NewDecoder(bytes.NewReader(buf))
		dec.UseNumber()
		if dec.Decode(&doc) != nil {
			return nil
		}
		if _, err := dec.Token(); err != io.EOF { // something after the object
			return nil
		}
		for k, v := range doc {
			if str, ok := v.(string); ok {
				out[k] = str
			}
		}
	case "application/x-www-form-urlencoded":
		// A bad escape in one field (x=%zz, which qs keeps as it is)
		// does not fail the others: ParseQuery returns every pair it
		// could read (QA: the login fell back to its IP's bucket). The
		// pairs it skipped still count for ambiguity below.
		q, err := url.ParseQuery(string(buf))
		ambiguous := map[string]bool{}
		if err != nil {
			seen := map[string]bool{}
			for _, k := range rawFormKeys(string(buf)) {
				ambiguous[k] = ambiguous[k] || seen[k] // given twice, once in a pair Go skipped: an array to qs
				seen[k] = true
			}
		}
		// A field given twice, or also in qs's bracket form (email[]=,
		// email[0]=), is an array to Express, and to an ORM "any of
		// these": keyed on its first value, email=decoy<n>&email=victim
		// had a new bucket each guess (QA). It is no key: the request
		// falls back to its IP's.
		for k, vs := range q {
			if i := strings.IndexByte(k, '['); i > 0 {
				ambiguous[k[:i]] = true
			}
			if len(vs) > 1 {
				ambiguous[k] = true
			}
		}
		for k, vs := range q {
			if !ambiguous[k] {
				out[k] = vs[0]
			}
		}
	default:
		return nil
	}
	return out
}

// rawFormKeys lists the key of every pair of a form body, unescaped where
// the escapes are good, as written where not.
func rawFormKeys(body string) []string {
	var keys []string
	for _, pair := range strings.Split(body, "&") {
		k, _, _ := strings.Cut(pair, "=")
		k = strings.ReplaceAll(k, "+", " ")
		if u, err := url.QueryUnescape(k); err == nil {
			k = u
		}
		keys = append(keys, k)
	}
	return keys
}

// replayBody is a request body whose start was read and put back.
type replayBody struct {
	io.Reader
	io.Closer
}

// headerAsNode reads a header as Node gives it to the app: the values of a
// repeated header joined with ", " (a key on the first alone would let a
// client pick its bucket while the app reads both).
func headerAsNode(h http.Header) func(string) string {
	return func(name string) string {
		vs := h.Values(name)
		if len(vs) == 1 {
			return vs[0]
		}
		return strings.Join(vs, ", ")
	}
}

// corsPreflight reports whether r is a CORS preflight: OPTIONS with Origin
// and Access-Control-Request-Method.
func corsPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}
