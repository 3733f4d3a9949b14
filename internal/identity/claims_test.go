package identity

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// Role claims as Auth0, Okta and jsonwebtoken apps sign them: an array of
// roles (a namespaced claim), a nested path (app_metadata.role), the app's
// own role names mapped by auth.role_map (QA: all of them counted as
// basic).
func TestVerifyRoleClaims(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const ns = "https://example.com/roles"
	tests := []struct {
		name   string
		o      Options
		claims map[string]any
		want   string
	}{
		{"string", Options{RoleClaim: ns}, map[string]any{ns: "admin"}, RoleAdmin},
		{"array of one", Options{RoleClaim: ns}, map[string]any{ns: []any{"admin"}}, RoleAdmin},
		{"array, highest last", Options{RoleClaim: ns}, map[string]any{ns: []any{"member", "admin"}}, RoleAdmin},
		{"array, highest first", Options{RoleClaim: ns}, map[string]any{ns: []any{"admin", "agent"}}, RoleAdmin},
		{"array of agent and basic", Options{RoleClaim: ns}, map[string]any{ns: []any{"basic", "Agent"}}, RoleAgent},
		{"array, case and space", Options{RoleClaim: ns}, map[string]any{ns: []any{" ADMIN "}}, RoleAdmin},
		{"mixed array", Options{RoleClaim: ns}, map[string]any{ns: []any{7, nil, map[string]any{"admin": true}, []any{"admin"}, "agent"}}, RoleAgent},
		{"array of unknown roles", Options{RoleClaim: ns}, map[string]any{ns: []any{"member", "guest"}}, RoleBasic},
		{"empty array", Options{RoleClaim: ns}, map[string]any{ns: []any{}}, RoleBasic},
		{"number", Options{RoleClaim: ns}, map[string]any{ns: 1}, RoleBasic},
		{"absent", Options{RoleClaim: ns}, map[string]any{}, RoleBasic},

		{"nested path", Options{RoleClaim: "app_metadata.role"}, map[string]any{"app_metadata": map[string]any{"role": "admin"}}, RoleAdmin},
		{"nested array", Options{RoleClaim: "app_metadata.roles"}, map[string]any{"app_metadata": map[string]any{"roles": []any{"member", "agent"}}}, RoleAgent},
		{"deeper nested path", Options{RoleClaim: "a.b.c"}, map[string]any{"a": map[string]any{"b": map[string]any{"c": "admin"}}}, RoleAdmin},
		{"literal dotted key wins", Options{RoleClaim: "app_metadata.role"}, map[string]any{"app_metadata.role": "agent", "app_metadata": map[string]any{"role": "admin"}}, RoleAgent},
		{"namespaced key absent", Options{RoleClaim: ns}, map[string]any{"https://example": "admin", "roles": "admin"}, RoleBasic},
		{"nested path through a string", Options{RoleClaim: "app_metadata.role"}, map[string]any{"app_metadata": "admin"}, RoleBasic},
		{"nested path, missing leaf", Options{RoleClaim: "app_metadata.role"}, map[string]any{"app_metadata": map[string]any{"roles": "admin"}}, RoleBasic},

		{"role_map", Options{RoleMap: map[string]string{"owner": "admin", "moderator": "agent"}}, map[string]any{"role": "owner"}, RoleAdmin},
		{"role_map, claim case", Options{RoleMap: map[string]string{"owner": "admin"}}, map[string]any{"role": " Owner"}, RoleAdmin},
		{"role_map, key case", Options{RoleMap: map[string]string{"Moderator": "agent"}}, map[string]any{"role": "moderator"}, RoleAgent},
		{"role_map, unmapped is basic", Options{RoleMap: map[string]string{"owner": "admin"}}, map[string]any{"role": "guest"}, RoleBasic},
		{"role_map, seed names still count", Options{RoleMap: map[string]string{"owner": "admin"}}, map[string]any{"role": "agent"}, RoleAgent},
		{"role_map demotes a seed name", Options{RoleMap: map[string]string{"admin": "basic"}}, map[string]any{"role": "admin"}, RoleBasic},
		{"role_map in an array", Options{RoleClaim: ns, RoleMap: map[string]string{"owner": "admin", "moderator": "agent"}}, map[string]any{ns: []any{"member", "moderator"}}, RoleAgent},
		{"role_map, highest mapped", Options{RoleClaim: ns, RoleMap: map[string]string{"owner": "admin", "moderator": "agent"}}, map[string]any{ns: []any{"moderator", "owner", "guest"}}, RoleAdmin},
		{"role_map nested", Options{RoleClaim: "app_metadata.role", RoleMap: map[string]string{"owner": "admin"}}, map[string]any{"app_metadata": map[string]any{"role": "OWNER"}}, RoleAdmin},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, alg := range []string{"HS256", "RS256"} {
				o := tc.o
				o.Now = clock
				var tok string
				c := claims(map[string]any{"role": nil})
				for k, v := range tc.claims {
					c[k] = v
				}
				if alg == "HS256" {
					o.Secret = secret
					tok = sign(t, jwt.SigningMethodHS256, secret, c)
				} else {
					o.PublicKeyPEM = pemOf(t, &rsaKey.PublicKey)
					tok = sign(t, jwt.SigningMethodRS256, rsaKey, c)
				}
				v, err := New(o)
				if err != nil {
					t.Fatal(err)
				}
				id, err := v.Verify(tok)
				if err != nil || id.Role != tc.want || id.User != "ana@example.com" {
					t.Errorf("%s: Verify = %+v, %v; want role %s", alg, id, err, tc.want)
				}
			}
		})
	}
}

// User claims: a nested path, and a number (jwt.sign({id: user.id})) as
// its decimal integer; a fraction, a boolean, an object stay no user (QA:
// a numeric uid was 401 TOKEN_INVALID on required routes).
func TestVerifyUserClaims(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		user   []string
		claims map[string]any
		want   string // "" = no user claim
	}{
		{"integer", []string{"uid"}, map[string]any{"uid": 12345}, "12345"},
		{"negative integer", []string{"uid"}, map[string]any{"uid": -7}, "-7"},
		{"zero", []string{"uid"}, map[string]any{"uid": 0}, "0"},
		{"minus zero", []string{"uid"}, map[string]any{"uid": json.Number("-0")}, "0"},
		{"2^53", []string{"uid"}, map[string]any{"uid": json.Number("9007199254740992")}, "9007199254740992"},
		// 2^53+1 and 2^64+1: a float64 would make them 2^53 and 2^64,
		// other users' keys.
		{"2^53+1", []string{"uid"}, map[string]any{"uid": json.Number("9007199254740993")}, "9007199254740993"},
		{"beyond uint64", []string{"uid"}, map[string]any{"uid": json.Number("18446744073709551617")}, "18446744073709551617"},
		{"integer written with .0", []string{"uid"}, map[string]any{"uid": json.Number("12345.0")}, "12345"},
		{"integer written with an exponent", []string{"uid"}, map[string]any{"uid": json.Number("1.2345e4")}, "12345"},
		{"integer written with E+", []string{"uid"}, map[string]any{"uid": json.Number("12E+2")}, "1200"},
		{"integer with a negative exponent", []string{"uid"}, map[string]any{"uid": json.Number("123400e-2")}, "1234"},
		{"fraction", []string{"uid"}, map[string]any{"uid": 1.5}, ""},
		{"fraction near 1", []string{"uid"}, map[string]any{"uid": json.Number("1.0000000000000000001")}, ""},
		{"fraction by exponent", []string{"uid"}, map[string]any{"uid": json.Number("12345e-1")}, ""},
		{"small", []string{"uid"}, map[string]any{"uid": json.Number("1e-400")}, ""},
		{"huge exponent", []string{"uid"}, map[string]any{"uid": json.Number("1e999999999")}, ""},
		{"boolean", []string{"uid"}, map[string]any{"uid": true}, ""},
		{"object", []string{"uid"}, map[string]any{"uid": map[string]any{"id": "x"}}, ""},
		{"array", []string{"uid"}, map[string]any{"uid": []any{"x"}}, ""},
		{"null", []string{"uid"}, map[string]any{"uid": nil}, ""},
		{"a number, then the next claim", []string{"uid", "email"}, map[string]any{"uid": 1.5, "email": "ana@example.com"}, "ana@example.com"},
		{"number before email", []string{"uid", "email"}, map[string]any{"uid": 42, "email": "ana@example.com"}, "42"},
		{"nested string", []string{"user.id"}, map[string]any{"user": map[string]any{"id": "u-9"}}, "u-9"},
		{"nested number", []string{"user.id"}, map[string]any{"user": map[string]any{"id": 99}}, "99"},
		{"literal dotted key wins", []string{"user.id"}, map[string]any{"user.id": "lit", "user": map[string]any{"id": "nested"}}, "lit"},
		{"nested, absent", []string{"user.id"}, map[string]any{"user": map[string]any{"uid": "u-9"}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := New(Options{Secret: secret, Now: clock, UserClaims: tc.user})
			if err != nil {
				t.Fatal(err)
			}
			c := claims(map[string]any{"email": nil, "sub": nil})
			for k, val := range tc.claims {
				c[k] = val
			}
			id, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, c))
			if tc.want == "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no user claim ("+strings.Join(tc.user, ", ")+")") {
					t.Fatalf("Verify = %+v, %v; want ErrInvalid, no user claim", id, err)
				}
				return
			}
			if err != nil || id.User != tc.want {
				t.Fatalf("Verify = %+v, %v; want user %q", id, err, tc.want)
			}
		})
	}
}

// Numbers are read exactly, and the registered claims still verify: exp,
// nbf and iat decode as json.Number now.
func TestVerifyNumbersKeepExpiry(t *testing.T) {
	t.Parallel()
	v, err := New(Options{Secret: secret, Now: clock, UserClaims: []string{"uid"}})
	if err != nil {
		t.Fatal(err)
	}
	expired := claims(map[string]any{"uid": 1, "exp": json.Number("1.7e9")})
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, expired)); !errors.Is(err, ErrExpired) {
		t.Errorf("exp 1.7e9: %v, want ErrExpired", err)
	}
	early := claims(map[string]any{"uid": 1, "nbf": now.Unix() + 3600})
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, early)); !errors.Is(err, ErrInvalid) {
		t.Errorf("nbf in an hour: %v, want ErrInvalid", err)
	}
	if id, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"uid": 1}))); err != nil || id.User != "1" {
		t.Errorf("uid 1: %+v %v", id, err)
	}
}

// New refuses a role_map onto another role than the seed's three, and two
// keys that differ only in case.
func TestNewRoleMapRefused(t *testing.T) {
	t.Parallel()
	for name, m := range map[string]map[string]string{
		"unknown role":   {"owner": "root"},
		"upper case":     {"owner": "Admin"},
		"empty key":      {" ": "admin"},
		"duplicate keys": {"Owner": "admin", "owner": "agent"},
	} {
		if _, err := New(Options{Secret: secret, RoleMap: m}); err == nil {
			t.Errorf("%s: New accepted role_map %v", name, m)
		}
	}
}
