package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	secret = []byte("a-test-secret-of-decent-length-0123")
	now    = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
)

func clock() time.Time { return now }

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pemOf(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func claims(extra map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"email": "ana@example.com", "sub": "u1", "role": "agent", "name": "Ana", "exp": now.Add(time.Hour).Unix(), "iat": now.Add(-time.Minute).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func TestVerify(t *testing.T) {
	t.Parallel()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	hs, err := New(Options{Secret: secret, Now: clock, Issuer: "chat", Audience: "chat-api"})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := New(Options{PublicKeyPEM: pemOf(t, &rsaKey.PublicKey), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	es, err := New(Options{PublicKeyPEM: pemOf(t, &ecKey.PublicKey), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	withIssAud := claims(map[string]any{"iss": "chat", "aud": "chat-api"})

	noneToken := func() string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		p := base64.RawURLEncoding.EncodeToString([]byte(`{"email":"ana@example.com","exp":9999999999}`))
		return h + "." + p + "."
	}()

	tests := []struct {
		name  string
		v     *Verifier
		token string
		want  Identity
		err   error
	}{
		{"HS256 valid", hs, sign(t, jwt.SigningMethodHS256, secret, withIssAud), Identity{"ana@example.com", "agent", "Ana"}, nil},
		{"RS256 valid", rs, sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil)), Identity{"ana@example.com", "agent", "Ana"}, nil},
		{"ES256 valid", es, sign(t, jwt.SigningMethodES256, ecKey, claims(nil)), Identity{"ana@example.com", "agent", "Ana"}, nil},
		{"sub when no email", rs, sign(t, jwt.SigningMethodRS256, rsaKey, claims(map[string]any{"email": nil, "role": "ADMIN"})), Identity{"u1", "admin", "Ana"}, nil},
		{"unknown role is basic", rs, sign(t, jwt.SigningMethodRS256, rsaKey, claims(map[string]any{"role": "supervisor"})), Identity{"ana@example.com", "basic", "Ana"}, nil},
		{"expired", rs, sign(t, jwt.SigningMethodRS256, rsaKey, claims(map[string]any{"exp": now.Add(-time.Minute).Unix()})), Identity{}, ErrExpired},
		{"expired within leeway", rs, sign(t, jwt.SigningMethodRS256, rsaKey, claims(map[string]any{"exp": now.Add(-10 * time.Second).Unix()})), Identity{"ana@example.com", "agent", "Ana"}, nil},
		{"not yet valid", rs, sign(t, jwt.SigningMethodRS256, rsaKey, claims(map[string]any{"nbf": now.Add(time.Hour).Unix()})), Identity{}, ErrInvalid},
		// iat is information (RFC 7519), as jsonwebtoken reads it: an
		// issuer's fast clock must not fail tokens the app takes (QA).
		{"issued in the future", rs, sign(t, jwt.SigningMethodRS256, rsaKey, claims(map[string]any{"iat": now.Add(time.Hour).Unix()})), Identity{"ana@example.com", "agent", "Ana"}, nil},
		{"iat not a number", rs, sign(t, jwt.SigningMethodRS256, rsaKey, claims(map[string]any{"iat": "yesterday"})), Identity{"ana@example.com", "agent", "Ana"}, nil},
		{"wrong secret", hs, sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-000"), withIssAud), Identity{}, ErrInvalid},
		{"wrong RSA key", rs, sign(t, jwt.SigningMethodRS256, otherRSA, claims(nil)), Identity{}, ErrInvalid},
		{"wrong issuer", hs, sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"iss": "evil", "aud": "chat-api"})), Identity{}, ErrInvalid},
		{"wrong audience", hs, sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"iss": "chat", "aud": "other"})), Identity{}, ErrInvalid},
		{"alg none", rs, noneToken, Identity{}, ErrInvalid},
		// The classic confusion: HS256 signed with the RSA public key's PEM as the HMAC secret.
		{"HS256 with the public key", rs, sign(t, jwt.SigningMethodHS256, pemOf(t, &rsaKey.PublicKey), claims(nil)), Identity{}, ErrInvalid},
		{"RS256 to an HS verifier", hs, sign(t, jwt.SigningMethodRS256, rsaKey, withIssAud), Identity{}, ErrInvalid},
		{"ES256 to an RSA verifier", rs, sign(t, jwt.SigningMethodES256, ecKey, claims(nil)), Identity{}, ErrInvalid},
		{"no user claim", rs, sign(t, jwt.SigningMethodRS256, rsaKey, claims(map[string]any{"email": nil, "sub": nil})), Identity{}, ErrInvalid},
		{"garbage", rs, "not.a.token", Identity{}, ErrInvalid},
		{"empty", rs, "", Identity{}, ErrMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.v.Verify(tc.token)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Verify = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestRequireExpiryAndOptions(t *testing.T) {
	t.Parallel()
	v, err := New(Options{Secret: secret, Now: clock, RequireExpiry: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"exp": nil}))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("token without exp: %v", err)
	}
	if _, err := New(Options{}); err == nil {
		t.Fatal("no key accepted")
	}
	if _, err := New(Options{PublicKeyPEM: []byte("nope")}); err == nil {
		t.Fatal("garbage key accepted")
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := New(Options{PublicKeyPEM: pemOf(t, &small.PublicKey)}); err == nil {
		t.Fatal("1024-bit RSA key accepted")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := New(Options{PublicKeyPEM: pemOf(t, &p384.PublicKey)}); err == nil {
		t.Fatal("P-384 key accepted for ES256")
	}
	custom, _ := New(Options{Secret: secret, Now: clock, UserClaims: []string{"uid"}, RoleClaim: "r", NameClaim: "n"})
	id, err := custom.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"uid": "x1", "r": "admin", "n": "X"})))
	if err != nil || id != (Identity{"x1", "admin", "X"}) {
		t.Fatalf("custom claims: %+v %v", id, err)
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest("GET", "/socket.io/?EIO=4&token=q1", nil)
	check := func(what, cookie string, want ...string) {
		t.Helper()
		if got := Tokens(r, cookie); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s: %q, want %q", what, got, want)
		}
	}
	check("query", "jwt", "q1")
	r.Header.Set("Cookie", "jwt=c1; other=x")
	check("cookie and query", "jwt", "c1", "q1")
	check("no cookie configured", "", "q1")
	r.Header.Set("Authorization", "Bearer h1")
	check("header first", "jwt", "h1", "c1", "q1")
	r.Header.Set("Authorization", "Basic dTpw")
	check("basic auth is no token", "", "q1")
	r.Header.Set("Authorization", "Bearer   ")
	check("empty bearer", "", "q1")
	// Every Authorization field and every cookie of the name: the app may
	// read another than the first (QA: header order picked the user).
	r.Header["Authorization"] = []string{"Bearer h1", "Bearer h2"}
	r.Header["Cookie"] = []string{"jwt=c1; jwt=c2", "jwt=c3"}
	check("repeated header and cookie", "jwt", "h1", "h2", "c1", "c2", "c3", "q1")
	// Cookies as Express reads them: percent-decoded, unless that fails.
	r.Header.Del("Authorization")
	r.Header["Cookie"] = []string{"jwt=a%2Eb%2ec", "jwt=bad%zz", "jwt=%ff"}
	check("percent-encoded cookies", "jwt", "a.b.c", "bad%zz", "%ff", "q1")
	if got := Tokens(httptest.NewRequest("GET", "/", nil), "jwt"); len(got) != 0 {
		t.Fatalf("none: %q", got)
	}
}

// Every token a request carries is verified: the identity is the user all
// valid ones name, a valid one beside an invalid one wins (a stale cookie
// beside a fresh header), and valid tokens of two users are a conflict.
func TestVerifyRequest(t *testing.T) {
	t.Parallel()
	v, err := New(Options{Secret: secret, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ana := sign(t, jwt.SigningMethodHS256, secret, claims(nil))
	bob := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"email": "bob@example.com"}))
	expired := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"exp": clock().Add(-time.Hour).Unix()}))
	tests := []struct {
		name                  string
		header, cookie, query string
		user                  string
		err                   error
	}{
		{"none", "", "", "", "", ErrMissing},
		{"header only", ana, "", "", "ana@example.com", nil},
		{"garbage header, valid query", "garbage", "", ana, "ana@example.com", nil},
		{"stale cookie, valid header", ana, expired, "", "ana@example.com", nil},
		{"two users", ana, "", bob, "", ErrConflict},
		{"two users, header and cookie", bob, ana, "", "", ErrConflict},
		{"the same user twice", ana, "", ana, "ana@example.com", nil},
		// Express percent-decodes a cookie: the app reads bob (review).
		{"two users, the cookie percent-encoded", ana, strings.Replace(bob, ".", "%2E", 2), "", "", ErrConflict},
		{"percent-encoded cookie alone", "", strings.Replace(bob, ".", "%2e", 1), "", "bob@example.com", nil},
		{"only invalid: the first's error", "", expired, "garbage", "", ErrExpired},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/socket.io/?EIO=4", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", "Bearer "+tt.header)
		}
		if tt.cookie != "" {
			r.AddCookie(&http.Cookie{Name: "jwt", Value: tt.cookie})
		}
		if tt.query != "" {
			r.URL.RawQuery += "&token=" + tt.query
		}
		id, err := v.VerifyRequest(r, "jwt")
		if id.User != tt.user || (tt.err == nil) != (err == nil) || tt.err != nil && !errors.Is(err, tt.err) {
			t.Errorf("%s: %q %v, want %q %v", tt.name, id.User, err, tt.user, tt.err)
		}
	}
	// A blank email claim is no user: the next claim (sub) is.
	blank := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"email": " ", "sub": "u-1"}))
	if id, err := v.Verify(blank); err != nil || id.User != "u-1" {
		t.Errorf("blank email: %q %v, want u-1", id.User, err)
	}
}

// FuzzVerify: arbitrary tokens never panic and never verify.
func FuzzVerify(f *testing.F) {
	v, err := New(Options{Secret: secret, Now: clock})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil)).SignedString(secret)
	for _, s := range []string{good, "", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", strings.Repeat("a.", 1000), good[:len(good)-2]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.Verify(tok)
		// Only the signed token verifies (a spelling of it that decodes to the
		// same bytes may too); the fuzzer cannot forge other claims.
		if err == nil && id != (Identity{"ana@example.com", "agent", "Ana"}) {
			t.Fatalf("forged token verified: %q → %+v", tok, id)
		}
	})
}

// FuzzTokens: any header, cookie or query never panics, and every token
// found is non-empty, at most one per place.
func FuzzTokens(f *testing.F) {
	f.Add("Bearer abc", "jwt=x", "token=y")
	f.Add("", "", "")
	f.Add("bearer ", "=;;", "token=%zz")
	f.Fuzz(func(t *testing.T, auth, cookie, query string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.URL.RawQuery = query
		r.Header.Set("Authorization", auth)
		r.Header.Set("Cookie", cookie)
		toks := Tokens(r, "jwt")
		if len(toks) > 3 {
			t.Fatalf("%d tokens", len(toks))
		}
		for _, tok := range toks {
			if tok == "" {
				t.Fatalf("an empty token among %q", toks)
			}
		}
	})
}

// A secret that came from a file with its newline verifies tokens signed
// with the newline (an app reading the same Secret key) and without it (an
// app given the value typed); any other key still fails.
func TestSecretWithSurroundingWhitespace(t *testing.T) {
	t.Parallel()
	v, err := New(Options{Secret: append(append([]byte(nil), secret...), '\n'), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string][]byte{"with the newline": append(append([]byte(nil), secret...), '\n'), "without": secret} {
		if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, key, claims(nil))); err != nil {
			t.Errorf("signed %s: %v", name, err)
		}
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef!!"), claims(nil))); !errors.Is(err, ErrInvalid) {
		t.Errorf("another key: %v, want ErrInvalid", err)
	}
}

// A token whose "crit" header lists an extension is refused even though its
// signature is good (RFC 7515 §4.1.11): the verifier understands none, and
// one such extension (b64=false, RFC 7797) changes what the signature covers.
func TestCritHeaderRefused(t *testing.T) {
	t.Parallel()
	v, err := New(Options{Secret: secret, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	signWith := func(header map[string]any) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil))
		for k, val := range header {
			tok.Header[k] = val
		}
		s, err := tok.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if _, err := v.Verify(signWith(map[string]any{"kid": "k1"})); err != nil {
		t.Fatalf("a well-signed token with an ordinary extra header: %v", err)
	}
	for name, h := range map[string]map[string]any{
		"unknown extension": {"crit": []string{"exp-ext"}, "exp-ext": 1},
		"b64 false":         {"crit": []string{"b64"}, "b64": false},
		"empty list":        {"crit": []string{}},
	} {
		if _, err := v.Verify(signWith(h)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "crit") {
			t.Errorf("%s: err = %v, want ErrInvalid naming crit", name, err)
		}
	}
}
