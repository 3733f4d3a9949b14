package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Minimum lengths of the secrets chatguard is given. The stats token is
// chatguard's own, a bearer credential for the stats, sessions, blocks and
// remote drain endpoints: 16 characters of anything random are out of reach
// of guessing. The JWT secret is shared with the app, and an HMAC key is
// tested offline against any one token a user holds: RFC 7518 §3.2 requires
// a key at least as long as the hash, 32 bytes for HS256.
const (
	MinStatsTokenLen = 16
	MinJWTSecretLen  = 32
)

// placeholder starts the sample Secrets' values (deploy/kubernetes/*/secret.example.yaml).
const placeholder = "replace-me"

// validateSecrets refuses the sample Secrets' placeholders and a stats token
// too short to be one (a short JWT secret is a warning: see Warnings).
// Problems never quote a secret, placeholders included.
func validateSecrets(c *Config, add func(key, format string, args ...any)) {
	isPlaceholder := func(s Secret) bool {
		return strings.HasPrefix(strings.ToLower(strings.TrimSpace(s.Reveal())), placeholder)
	}
	const makeOne = "openssl rand -hex 32 makes one"
	switch t := c.StatsToken.Reveal(); {
	case t == "":
	case isPlaceholder(c.StatsToken):
		add("stats_token", "is the sample Secret's placeholder (it starts with %q): set a real secret (%s)", placeholder, makeOne)
	case len(t) < MinStatsTokenLen:
		add("stats_token", "is shorter than %d characters: set a real secret (%s)", MinStatsTokenLen, makeOne)
	}
	const sameInApp = "the same one the app signs its tokens with"
	if isPlaceholder(c.Auth.JWTSecret) {
		add("auth.jwt_secret", "is the sample Secret's placeholder (it starts with %q): set a real secret, %s", placeholder, sameInApp)
	}
	if u, err := url.Parse(strings.TrimSpace(c.Redis.URL.Reveal())); err == nil && u.User != nil {
		if pw, _ := u.User.Password(); isPlaceholder(Secret(pw)) || isPlaceholder(Secret(u.User.Username())) {
			add("redis.url", "holds the sample Secret's placeholder password (it starts with %q): set Redis's real one", placeholder)
		}
	}
}

// hostBits reports a CIDR written with bits past its prefix ("10.1.2.3/8"),
// whatever the spelling of its address (upper case, leading zeros, an
// IPv4-mapped form: review).
func hostBits(cidr string) bool {
	p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	if err != nil {
		return false
	}
	a, bits := p.Addr(), p.Bits()
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits).Masked().Addr() != a
}

// RouteWarnings are the warnings of what a reload changes: routes an
// earlier one shadows, event limits that never apply.
func RouteWarnings(c *Config) []string {
	return append(shadowedRoutes(c.Routes), eventNameWarnings(c.WebSocket.Events)...)
}

// Warnings are weaknesses chatguard runs with but reports: check-config
// prints them and serve logs them at start. A short JWT secret is one, not
// a refusal: the secret is the app's, and changing it logs every user out,
// which a sidecar must not force on the app by refusing to start.
func Warnings(c *Config) []string {
	var out []string
	if k := c.Auth.JWTSecret.Reveal(); k != strings.TrimSpace(k) {
		out = append(out, "auth.jwt_secret has leading or trailing whitespace (a newline from a file?): "+
			"tokens signed with it and without it are both accepted; check which one the app uses")
	}
	if k := strings.TrimSpace(c.Auth.JWTSecret.Reveal()); k != "" && len(k) < MinJWTSecretLen {
		out = append(out, fmt.Sprintf("auth.jwt_secret is shorter than %d bytes, the least RFC 7518 allows for HS256: "+
			"tokens signed with it can be brute-forced offline; give the app and chatguard a longer one "+
			"(openssl rand -hex 32 makes one)", MinJWTSecretLen))
	}
	if u, err := url.Parse(strings.TrimSpace(c.Redis.URL.Reveal())); err == nil && u.Scheme == "rediss" {
		if skip, _ := strconv.ParseBool(u.Query().Get("skip_verify")); skip {
			out = append(out, "redis.url has skip_verify=true: the Redis server's certificate is not checked, "+
				"so TLS hides the traffic but anyone on the path can pretend to be Redis and decide the rate limits; "+
				"trust its CA with SSL_CERT_FILE instead")
		}
	}
	out = append(out, RouteWarnings(c)...)
	for _, tp := range c.Proxy.TrustedProxies {
		p, err := ParsePrefix(tp)
		switch {
		case err != nil:
		case p.Bits() == 0:
			// Every peer believed: any client picks its own address for
			// the login limits and the abuse blocks (QA: no word of it).
			out = append(out, fmt.Sprintf("proxy.trusted_proxies holds %q, every address: any client can choose the address "+
				"chatguard counts it by (X-Forwarded-For), for the rate limits and the abuse blocks; list your load balancers' ranges", tp))
		case hostBits(tp):
			out = append(out, fmt.Sprintf("proxy.trusted_proxies holds %q, which is the range %s: check it is the one meant", tp, p))
		}
	}
	if c.Redis.Replicas > 1 && strings.TrimSpace(c.Redis.URL.Reveal()) == "" {
		// inject writes CHATGUARD_REPLICAS from the workload and REDIS_URL
		// from an optional Secret key: without the key, N pods admitted N
		// times every limit with nothing said (QA).
		out = append(out, fmt.Sprintf("redis.replicas is %d but no redis.url is set: each replica keeps its own counts "+
			"and enforces the whole of every limit, so %d replicas together admit up to %d times each limit "+
			"(redis.replicas only divides the limits while a configured Redis is down); set redis.url to share them",
			c.Redis.Replicas, c.Redis.Replicas, c.Redis.Replicas))
	}
	if c.WebSocket.Polling && c.WebSocket.SocketIOPath != "" && c.Proxy.ResponseHeaderTimeout > 0 &&
		c.Proxy.ResponseHeaderTimeout <= SocketIOPingInterval {
		// engine.io holds a long-poll for its pingInterval: every one got
		// 504 and every polling client was disconnected (accounting QA).
		out = append(out, fmt.Sprintf("proxy.response_header_timeout is %s, not above Socket.IO's default pingInterval (%s), "+
			"for which engine.io holds each long-poll: polling clients would get 504 and be disconnected; "+
			"keep it above the app's pingInterval (chatguard's default timeout is 1m30s)", c.Proxy.ResponseHeaderTimeout, SocketIOPingInterval))
	}
	return out
}

// SocketIOPingInterval is engine.io's default pingInterval: how long it
// holds a long-poll with nothing to say.
const SocketIOPingInterval = 25 * time.Second
