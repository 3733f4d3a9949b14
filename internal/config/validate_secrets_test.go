package config_test

import (
	"strings"
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// The sample Secrets' placeholders, and secrets too short to be one, are
// refused, naming the key and never quoting the value.
func TestValidateSecrets(t *testing.T) {
	t.Parallel()
	const (
		statsOK = "0123456789abcdef"                 // 16 characters
		jwtOK   = "0123456789abcdef0123456789abcdef" // 32 bytes
	)
	tests := []struct {
		name, stats, jwt string
		want             []string // one problem each; nil = valid
	}{
		{"none", "", "", nil},
		{"long enough", statsOK, jwtOK, nil},
		{"sample stats token", "replace-me-with-a-long-random-token", jwtOK,
			[]string{`stats_token: is the sample Secret's placeholder (it starts with "replace-me"): set a real secret`}},
		{"sample jwt secret", statsOK, "replace-me-with-the-apps-jwt-secret",
			[]string{`auth.jwt_secret: is the sample Secret's placeholder (it starts with "replace-me"): set a real secret`}},
		{"placeholder in capitals", "REPLACE-ME-0123456789", "Replace-Me-0123456789abcdef0123456789", []string{
			`stats_token: is the sample Secret's placeholder`, `auth.jwt_secret: is the sample Secret's placeholder`}},
		{"one character", "Z", jwtOK, []string{"stats_token: is shorter than 16 characters: set a real secret"}},
		{"15 characters", statsOK[:15], jwtOK, []string{"stats_token: is shorter than 16 characters"}},
		{"31 bytes", statsOK, jwtOK[:31], []string{"auth.jwt_secret: is shorter than 32 bytes, the least RFC 7518 allows for HS256: set a real secret"}},
		{"both short", "sh0rt!", "dev-secret-change-me", []string{"stats_token: is shorter", "auth.jwt_secret: is shorter"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := config.Defaults()
			c.StatsToken, c.Auth.JWTSecret = config.Secret(tt.stats), config.Secret(tt.jwt)
			probs := config.Validate(c)
			if len(probs) != len(tt.want) {
				t.Fatalf("Validate = %q, want %d problem(s)", probs, len(tt.want))
			}
			for _, w := range tt.want {
				if countContaining(probs, w) != 1 {
					t.Errorf("Validate = %q, want one problem containing %q", probs, w)
				}
			}
			for _, p := range probs {
				if (tt.stats != "" && strings.Contains(p, tt.stats)) || (tt.jwt != "" && strings.Contains(p, tt.jwt)) {
					t.Errorf("problem quotes the secret: %s", p)
				}
			}
		})
	}
}
