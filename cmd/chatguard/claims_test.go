package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Tokens signed as Auth0, Okta and jsonwebtoken apps sign them get their
// role's limit end to end: an array role claim, the app's own role names
// through auth.role_map, a nested role claim, a numeric user claim; and
// role_map reloads with the other token checks (QA: each was the basic
// limit, or 401 TOKEN_INVALID for {uid: 12345}).
func TestRoleClaimsAsAppsSignThem(t *testing.T) {
	t.Parallel()
	const secret = "a-test-secret-of-decent-length-0123456789"
	file, write := configFile(t)
	write(`auth:
  jwt_secret: ` + secret + `
  user_claims: [uid]
  role_claim: "https://example.com/roles"
  role_map: {Owner: admin}
routes:
  - {name: lim, path: /l/*, auth: required, limit: {rate: 1, period: 1m, key: [user], roles: {admin: 3, agent: 2}}}
`)
	a, reload := reloadableApp(t, file)
	uid := 0
	policy := func(claims jwt.MapClaims) string {
		t.Helper()
		uid++ // a user of its own: each request is its user's first
		claims["uid"], claims["exp"] = uid, time.Now().Add(time.Hour).Unix()
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/l/x", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		a.srv.ServeHTTP(rec, req)
		// Past the token check the request meets the absent upstream.
		if rec.Code != http.StatusBadGateway {
			t.Fatalf("%v: status %d, want 502 (the token verified): %s", claims, rec.Code, rec.Body)
		}
		return rec.Header().Get("RateLimit-Policy")
	}
	const ns = "https://example.com/roles"
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		want   string
	}{
		{"string", jwt.MapClaims{ns: "admin"}, `"lim";q=3;w=60`},
		{"array", jwt.MapClaims{ns: []string{"admin"}}, `"lim";q=3;w=60`},
		{"array, admin second", jwt.MapClaims{ns: []string{"member", "admin"}}, `"lim";q=3;w=60`},
		{"array of agent", jwt.MapClaims{ns: []string{"agent", "member"}}, `"lim";q=2;w=60`},
		{"mapped", jwt.MapClaims{ns: []string{"owner"}}, `"lim";q=3;w=60`},
		{"unknown", jwt.MapClaims{ns: []string{"moderator"}}, `"lim";q=1;w=60`},
		{"none", jwt.MapClaims{}, `"lim";q=1;w=60`},
	} {
		if got := policy(tc.claims); got != tc.want {
			t.Errorf("%s: RateLimit-Policy %s, want %s", tc.name, got, tc.want)
		}
	}

	write(`auth:
  jwt_secret: ` + secret + `
  user_claims: [uid]
  role_claim: app_metadata.role
  role_map: {moderator: agent}
routes:
  - {name: lim, path: /l/*, auth: required, limit: {rate: 1, period: 1m, key: [user], roles: {admin: 3, agent: 2}}}
`)
	if out := reload(); !strings.Contains(out, "configuration reloaded") || strings.Contains(out, "restartNeededFor") {
		t.Fatalf("reload of role_claim and role_map:\n%s", out)
	}
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		want   string
	}{
		{"nested, mapped", jwt.MapClaims{"app_metadata": map[string]any{"role": "Moderator"}}, `"lim";q=2;w=60`},
		{"nested admin", jwt.MapClaims{"app_metadata": map[string]any{"role": "admin"}}, `"lim";q=3;w=60`},
		{"the old mapping is gone", jwt.MapClaims{"app_metadata": map[string]any{"role": "owner"}}, `"lim";q=1;w=60`},
	} {
		if got := policy(tc.claims); got != tc.want {
			t.Errorf("after the reload, %s: RateLimit-Policy %s, want %s", tc.name, got, tc.want)
		}
	}

	code, out, errOut := runCmd(t, []string{"check-config", "--config", file}, nil)
	if code != 0 || !strings.Contains(out, "  auth.role_map                    moderator=agent\n") {
		t.Errorf("check-config: exit %d, want auth.role_map moderator=agent among:\n%s%s", code, out, errOut)
	}
}
