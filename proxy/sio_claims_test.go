package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/identity"
)

// Socket.IO event limits by role take the role as Auth0, Okta and
// jsonwebtoken apps sign it: a list of roles, the app's own names through
// the role map, a numeric user id (QA: a list counted as basic on sockets
// as on HTTP routes, and {uid: 12345} was refused at CONNECT).
func TestSIOEventLimitsByRoleClaims(t *testing.T) {
	t.Parallel()
	const ns = "https://example.com/roles"
	fake := &fakeSIO{}
	env := startSIOOpts(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) {
		c.WebSocket.Auth = authRequired
		c.WebSocket.Events = []config.EventLimit{{Name: "send-message",
			Limit: config.RouteLimit{Rate: 1, Period: time.Minute, Roles: map[string]int{"admin": 3, "agent": 2}}}}
	}, func(o *Options) {
		v, err := identity.New(identity.Options{Secret: []byte(testJWTSecret), UserClaims: []string{"uid", "email"},
			RoleClaim: ns, RoleMap: map[string]string{"owner": "admin"}})
		if err != nil {
			t.Fatal(err)
		}
		o.Verifier = v
	})
	exp := time.Now().Add(time.Hour).Unix()
	for i, tc := range []struct {
		name   string
		claims jwt.MapClaims
		passed int // send-message events that pass before the first refusal
	}{
		{"list with admin", jwt.MapClaims{"email": "a@example.com", ns: []string{"member", "admin"}}, 3},
		{"list with agent", jwt.MapClaims{"email": "b@example.com", ns: []string{"agent"}}, 2},
		{"mapped", jwt.MapClaims{"email": "c@example.com", ns: "Owner"}, 3},
		{"unknown", jwt.MapClaims{"email": "d@example.com", ns: []string{"member"}}, 1},
		{"numeric uid", jwt.MapClaims{"uid": 12345, ns: []string{"admin"}}, 3},
	} {
		tc.claims["exp"] = exp
		cl := dialSIO(t, env.harness, nil)
		if got := cl.connect(`{"token":"` + token(t, tc.claims) + `"}`); !strings.HasPrefix(got, "40{") {
			t.Fatalf("%s: connect: %q", tc.name, got)
		}
		passed := 0
		for n := 1; n <= 5; n++ {
			id := fmt.Sprint(10*i + n)
			cl.send("42" + id + `["send-message",{}]`)
			got := cl.next()
			if got == "43"+id+`["ok"]` {
				passed++
				continue
			}
			if !strings.HasPrefix(got, "43"+id+`[{"success":false`) {
				t.Fatalf("%s: event %s answered %q", tc.name, id, got)
			}
			break
		}
		if passed != tc.passed {
			t.Errorf("%s: %d events passed, want %d", tc.name, passed, tc.passed)
		}
		cl.close()
	}
	if role, ok := env.std.UserRoles.Get("12345"); !ok || role != identity.RoleAdmin {
		t.Errorf("userRoles[12345] = %q %v, want admin", role, ok)
	}
}
