package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/config"
)

// The sample Secrets' placeholders, and a stats token too short to be one,
// are refused, naming the key and never quoting the value; a JWT secret
// under 32 bytes is a warning (it is the app's: refusing to start would
// force the app to log everyone out).
func TestValidateSecrets(t *testing.T) {
	t.Parallel()
	const (
		statsOK = "0123456789abcdef"                 // 16 characters
		jwtOK   = "0123456789abcdef0123456789abcdef" // 32 bytes
	)
	tests := []struct {
		name, stats, jwt string
		want             []string // one problem each; nil = valid
		warn             bool     // a warning about the JWT secret's length
	}{
		{"none", "", "", nil, false},
		{"long enough", statsOK, jwtOK, nil, false},
		{"sample stats token", "replace-me-with-a-long-random-token", jwtOK,
			[]string{`stats_token: is the sample Secret's placeholder (it starts with "replace-me"): set a real secret`}, false},
		{"sample jwt secret", statsOK, "replace-me-with-the-apps-jwt-secret",
			[]string{`auth.jwt_secret: is the sample Secret's placeholder (it starts with "replace-me"): set a real secret`}, false},
		{"placeholder in capitals", "REPLACE-ME-0123456789", "Replace-Me-0123456789abcdef0123456789", []string{
			`stats_token: is the sample Secret's placeholder`, `auth.jwt_secret: is the sample Secret's placeholder`}, false},
		{"one character", "Z", jwtOK, []string{"stats_token: is shorter than 16 characters: set a real secret"}, false},
		{"15 characters", statsOK[:15], jwtOK, []string{"stats_token: is shorter than 16 characters"}, false},
		{"31 bytes", statsOK, jwtOK[:31], nil, true},
		{"both short", "sh0rt!", "dev-secret-change-me", []string{"stats_token: is shorter"}, true},
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
			warns := config.Warnings(c)
			if got := len(warns) == 1 && strings.Contains(warns[0], "auth.jwt_secret is shorter than 32 bytes"); got != tt.warn || !tt.warn && len(warns) != 0 {
				t.Errorf("Warnings = %q, want a JWT-length warning: %v", warns, tt.warn)
			}
			for _, p := range append(probs, warns...) {
				if (tt.stats != "" && strings.Contains(p, tt.stats)) || (tt.jwt != "" && strings.Contains(p, tt.jwt)) {
					t.Errorf("problem quotes the secret: %s", p)
				}
			}
		})
	}
}

// The sample Secret's Redis URL, whose password is the placeholder, is
// refused like the other placeholders; it was accepted, and serve ran on
// its fallback logging WRONGPASS.
func TestRedisURLPlaceholderRefused(t *testing.T) {
	t.Parallel()
	for url, refused := range map[string]bool{
		"redis://:replace-me@redis-master.chat.svc.cluster.local:6379/0": true,
		"redis://default:Replace-Me-too@127.0.0.1:6379":                  true,
		"redis://:s3cret-Pa55word@127.0.0.1:6379/0":                      false,
		"redis://127.0.0.1:6379":                                         false,
	} {
		c := config.Defaults()
		c.Redis.URL = config.Secret(url)
		probs := config.Validate(c)
		if got := countContaining(probs, "redis.url: holds the sample Secret's placeholder password") == 1; got != refused {
			t.Errorf("%s: problems %q, want refused %v", url, probs, refused)
		}
		for _, p := range probs {
			if strings.Contains(p, "Replace-Me-too") || strings.Contains(p, "s3cret") {
				t.Errorf("problem quotes the password: %s", p)
			}
		}
	}
}

// rediss:// with skip_verify=true runs (a test Redis with a self-signed
// certificate) but is reported, in check-config and at start, without
// quoting the URL's password.
func TestRedisSkipVerifyWarned(t *testing.T) {
	t.Parallel()
	for url, warned := range map[string]bool{
		"rediss://:s3cret-Pa55word@redis.example:6380/0?skip_verify=true": true,
		"rediss://redis.example:6380?skip_verify=1":                       true,
		"rediss://redis.example:6380?skip_verify=false":                   false,
		"rediss://redis.example:6380":                                     false,
		"redis://127.0.0.1:6379?skip_verify=true":                         false, // no TLS to verify
	} {
		c := config.Defaults()
		c.Redis.URL = config.Secret(url)
		warns := config.Warnings(c)
		if got := countContaining(warns, "redis.url has skip_verify=true") == 1; got != warned {
			t.Errorf("%s: warnings %q, want warned %v", url, warns, warned)
		}
		for _, w := range warns {
			if strings.Contains(w, "s3cret") {
				t.Errorf("warning quotes the password: %s", w)
			}
		}
	}
}

// Replicas divide the limits only while a configured Redis is down: with no
// Redis at all, several replicas each enforce the whole limit, which
// check-config and the start log say.
func TestReplicasWithoutRedisWarned(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		replicas int
		url      string
		warned   bool
	}{
		{3, "", true},
		{3, "   ", true},
		{3, "redis://127.0.0.1:6379", false},
		{1, "", false},
	} {
		c := config.Defaults()
		c.Redis.Replicas = tt.replicas
		c.Redis.URL = config.Secret(tt.url)
		warns := config.Warnings(c)
		if got := countContaining(warns, "redis.replicas is 3 but no redis.url is set") == 1; got != tt.warned {
			t.Errorf("replicas %d, url %q: warnings %q, want warned %v", tt.replicas, tt.url, warns, tt.warned)
		}
	}
}

// A response_header_timeout at or below engine.io's pingInterval cuts every
// long-poll (504) and disconnects every polling client: a warning, unless
// polling is off (accounting QA).
func TestWarningShortResponseHeaderTimeoutWithPolling(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		timeout time.Duration
		polling bool
		warned  bool
	}{
		{2 * time.Second, true, true},
		{25 * time.Second, true, true},
		{26 * time.Second, true, false},
		{2 * time.Second, false, false},
	} {
		c := config.Defaults()
		c.Proxy.ResponseHeaderTimeout = tt.timeout
		c.WebSocket.Polling = tt.polling
		warns := config.Warnings(c)
		if got := countContaining(warns, "proxy.response_header_timeout is") == 1; got != tt.warned {
			t.Errorf("timeout %v, polling %v: warnings %q, want warned %v", tt.timeout, tt.polling, warns, tt.warned)
		}
	}
}
