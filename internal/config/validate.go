package config

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatguard/chatguard/internal/identity/pubkey"
	"github.com/chatguard/chatguard/internal/redisurl"
)

var routeName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// Validate checks c and returns every problem found; it also normalises route
// methods to upper case.
func Validate(c *Config) []string {
	var p []string
	add := func(key, format string, args ...any) {
		p = append(p, key+": "+fmt.Sprintf(format, args...))
	}

	checkAddr := func(key, addr string) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			add(key, "%q is not host:port (%v)", addr, err)
			return
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			add(key, "%q has no valid port", addr)
		}
		if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
			add(key, "%q has an invalid host", addr)
		}
	}
	checkAddr("listen", c.Listen)
	checkAddr("admin_listen", c.AdminListen)
	if sameListener(c.Listen, c.AdminListen) {
		add("admin_listen", "%q takes the port of listen %q", c.AdminListen, c.Listen)
	}

	shown := hideUserinfo(c.Upstream)
	if i := strings.IndexAny(shown, "?#"); i >= 0 {
		// A query or fragment is refused, and may hold a key
		// (?api_key=…, #access_token=…): the problem, printed in a
		// crash-looping pod's log, names it without its value (QA).
		shown = shown[:i+1] + "…"
	}
	if u, err := url.Parse(c.Upstream); err != nil {
		var ue *url.Error // its message quotes the URL, password and all
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if shown != c.Upstream { // the parser's reason may quote the password too
			add("upstream", "%q is not a URL", shown)
		} else {
			add("upstream", "%q is not a URL: %v", shown, err)
		}
	} else if u.Scheme != "http" && u.Scheme != "https" {
		add("upstream", "%q must start with http:// or https://", shown)
	} else if u.Host == "" {
		add("upstream", "%q has no host", shown)
	} else if u.RawQuery != "" || u.Fragment != "" {
		add("upstream", "%q must not have a query or fragment", shown)
	} else if u.User != nil {
		// As nginx's proxy_pass: credentials in the URL are never sent (the
		// app's own Authorization headers pass through), so they would
		// only be a secret printed wherever the URL is.
		add("upstream", "%q must not carry credentials (user:password@): they are never sent upstream", shown)
	}

	if c.Env != "production" && c.Env != "development" {
		add("env", "%q must be production or development", c.Env)
	}

	for _, tp := range c.Proxy.TrustedProxies {
		if _, err := ParsePrefix(tp); err != nil {
			add("proxy.trusted_proxies", "%q is not a CIDR or IP address", tp)
		}
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			add(key, "must be greater than 0 (got %s)", d)
		}
	}
	notNegative := func(key string, d time.Duration) {
		if d < 0 {
			add(key, "must not be negative (got %s)", d)
		}
	}
	positive("proxy.dial_timeout", c.Proxy.DialTimeout)
	positive("proxy.response_header_timeout", c.Proxy.ResponseHeaderTimeout)
	notNegative("proxy.idle_conn_timeout", c.Proxy.IdleConnTimeout)
	notNegative("proxy.response_body_timeout", c.Proxy.ResponseBodyTimeout)
	positive("server.read_header_timeout", c.Server.ReadHeaderTimeout)
	notNegative("server.body_read_timeout", c.Server.BodyReadTimeout)
	notNegative("server.send_timeout", c.Server.SendTimeout)
	notNegative("server.idle_timeout", c.Server.IdleTimeout)
	notNegative("server.drain_delay", c.Server.DrainDelay)
	positive("server.shutdown_timeout", c.Server.ShutdownTimeout)
	notNegative("log.summary_interval", c.Log.SummaryInterval)
	if c.Log.FlushInterval < 0 || c.Log.FlushInterval > 10*time.Second {
		add("log.flush_interval", "must be between 0 and 10s (got %s)", c.Log.FlushInterval)
	}

	// between says a problem unless lo <= v <= hi, and reports whether v is good.
	between := func(key string, v, lo, hi int64) bool {
		if v < lo || v > hi {
			add(key, "must be between %d and %d (got %d)", lo, hi, v)
			return false
		}
		return true
	}
	between("proxy.max_idle_conns", int64(c.Proxy.MaxIdleConns), 0, 100000)
	between("proxy.error_inspect_bytes", int64(c.Proxy.ErrorInspectBytes), 1024, 16<<20)
	between("server.max_header_bytes", int64(c.Server.MaxHeaderBytes), 4096, 1<<20)
	// Node keeps the first 1,000 or so of a request's header fields and
	// drops the rest without a word: chatguard's own (X-Forwarded-For,
	// X-Request-Id) must never be among them.
	between("server.max_header_count", int64(c.Server.MaxHeaderCount), 16, 500)
	between("server.max_body_bytes", c.Server.MaxBodyBytes, 0, 1<<40)
	between("log.max_size_mb", int64(c.Log.MaxSizeMB), 1, 10240)
	between("log.max_backups", int64(c.Log.MaxBackups), 0, 1000)

	switch strings.ToLower(c.Log.Level) {
	case "error", "warn", "warning", "info", "debug", "trace":
	default:
		add("log.level", "%q must be error, warn, info or debug (or warning, or trace, which logs as debug does)", c.Log.Level)
	}
	if c.Log.File && c.Log.Dir == "" {
		add("log.dir", "must be set when log.file is true")
	}

	for name, t := range c.Tables.ByName() {
		key := "tables." + name
		between(key+".max_entries", int64(t.MaxEntries), 1, 100_000_000)
		if t.TTL < 0 || t.TTL > 24*24*time.Hour {
			add(key+".ttl", "must be between 0 (no expiry) and 576h (got %s)", t.TTL)
		}
	}
	m := c.Memory
	// An order problem only between two good values: -5 is its own
	// problem, not also "104857600 >= -5" (QA).
	goodWarn := between("memory.warning_threshold", m.WarningThreshold, 1, 1<<50)
	goodCrit := between("memory.critical_threshold", m.CriticalThreshold, 1, 1<<50)
	if goodWarn && goodCrit && m.WarningThreshold >= m.CriticalThreshold {
		add("memory.warning_threshold", "must be below memory.critical_threshold (%d >= %d)", m.WarningThreshold, m.CriticalThreshold)
	}
	ratio := func(key string, v float64) bool {
		if !(v > 0 && v <= 1) {
			add(key, "must be in (0, 1] (got %g)", v)
			return false
		}
		return true
	}
	goodWarn = ratio("memory.heap_warning_ratio", m.HeapWarningRatio)
	goodCrit = ratio("memory.heap_critical_ratio", m.HeapCriticalRatio)
	if goodWarn && goodCrit && m.HeapWarningRatio >= m.HeapCriticalRatio {
		add("memory.heap_warning_ratio", "must be below memory.heap_critical_ratio")
	}
	between("memory.limit", m.Limit, 0, 1<<50)
	goodWarn = between("memory.connected_users_warning", int64(m.ConnectedUsersWarning), 1, 100_000_000)
	goodCrit = between("memory.connected_users_critical", int64(m.ConnectedUsersCritical), 1, 100_000_000)
	if goodWarn && goodCrit && m.ConnectedUsersWarning >= m.ConnectedUsersCritical {
		add("memory.connected_users_warning", "must be below memory.connected_users_critical")
	}
	notNegative("memory.check_interval", m.CheckInterval)
	notNegative("memory.sweep_interval", m.SweepInterval)
	notNegative("memory.emergency_cooldown", m.EmergencyCooldown)
	ratio("memory.shed_fraction", m.ShedFraction)
	between("memory.max_profiles", int64(m.MaxProfiles), 1, 1000)
	if m.CPUProfile < 0 || m.CPUProfile > time.Minute {
		add("memory.cpu_profile", "must be between 0 and 1m (got %s)", m.CPUProfile)
	}
	if c.Alerts.File && c.Alerts.Path == "" {
		add("alerts.path", "must be set when alerts.file is true")
	}

	if !(c.Limits.Multiplier > 0 && c.Limits.Multiplier <= maxMultiplier) {
		add("rate_limit.multiplier", "must be in (0, %g] (got %g)", float64(maxMultiplier), c.Limits.Multiplier)
	}
	between("rate_limit.body_key_bytes", int64(c.Limits.BodyKeyBytes), 256, 1<<20)
	notNegative("rate_limit.save_interval", c.Limits.SaveInterval)
	goodWarn = between("rate_limit.abuse_warning", int64(c.Limits.AbuseWarning), 1, 1_000_000_000)
	goodCrit = between("rate_limit.abuse_critical", int64(c.Limits.AbuseCritical), 1, 1_000_000_000)
	if goodWarn && goodCrit && c.Limits.AbuseWarning >= c.Limits.AbuseCritical {
		add("rate_limit.abuse_warning", "must be below rate_limit.abuse_critical")
	}
	positive("rate_limit.block_for", c.Limits.BlockFor)
	validateSecrets(c, add)
	validateRoleMap(c, add)
	if c.Auth.JWTPublicKeyFile != "" {
		// Read and parsed as serve reads it: a file that exists but holds
		// no usable key (garbage, a private key) passed here, and serve
		// then refused to start with another message.
		if data, err := os.ReadFile(c.Auth.JWTPublicKeyFile); err != nil {
			add("auth.jwt_public_key_file", "%v", err)
		} else if _, _, err := pubkey.Parse(data); err != nil {
			add("auth.jwt_public_key_file", "%s: %s", c.Auth.JWTPublicKeyFile, strings.TrimPrefix(err.Error(), "identity: "))
		}
	}

	if u := c.Redis.URL.Reveal(); u != "" {
		// The parser serve uses; its errors never quote the URL (a password).
		if _, err := redisurl.Parse(u); err != nil {
			add("redis.url", "%v", err)
		}
	}
	if c.Redis.Timeout < time.Millisecond || c.Redis.Timeout > 10*time.Second {
		add("redis.timeout", "must be between 1ms and 10s (got %s)", c.Redis.Timeout)
	}
	between("redis.failures", int64(c.Redis.Failures), 1, 1000)
	positive("redis.cooldown", c.Redis.Cooldown)
	between("redis.replicas", int64(c.Redis.Replicas), 1, 10000)

	seen := map[string]bool{}
	for i := range c.Routes {
		r := &c.Routes[i]
		key := fmt.Sprintf("routes[%d]", i)
		if !routeName.MatchString(r.Name) {
			add(key+".name", "%q must be 1-32 of a-z, 0-9, _ starting with a letter", r.Name)
		} else if r.Name == "other" || r.Name == "internal" || r.Name == "abuse" || r.Name == "blocked" {
			add(key+".name", "%q is reserved", r.Name)
		} else if seen[r.Name] {
			add(key+".name", "%q is used twice", r.Name)
		}
		seen[r.Name] = true
		if !strings.HasPrefix(r.Path, "/") {
			add(key+".path", "%q must start with /", r.Path)
		} else if i := strings.IndexByte(r.Path, '*'); i >= 0 && (i != len(r.Path)-1 || !strings.HasSuffix(r.Path, "/*")) {
			add(key+".path", "%q may only end in /* (a segment of any value is written :name, as in Express)", r.Path)
		} else if msg := pathPatternProblem(r.Path); msg != "" {
			add(key+".path", "%q %s", r.Path, msg)
		}
		switch r.Auth {
		case "", "none", "optional":
		case "required":
			if !c.Auth.Configured() {
				add(key+".auth", "required, but neither auth.jwt_secret nor auth.jwt_public_key_file is set")
			}
		default:
			add(key+".auth", "%q must be none, optional or required", r.Auth)
		}
		if r.Limit != nil {
			checkLimit(add, key+".limit", r.Limit, c.Limits.Multiplier, true)
		}
		for j, m := range r.Methods {
			up := strings.ToUpper(m)
			if !slices.Contains(nodeMethods, up) {
				// Node's parser refuses any other method, so a route on one
				// would never match: a typo (POTS) that turned a limit off.
				add(fmt.Sprintf("%s.methods[%d]", key, j), "%q is not an HTTP method Node serves (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, …)", m)
			}
			r.Methods[j] = up
		}
	}
	if len(c.Routes) > 64 {
		add("routes", "at most 64 routes (got %d); each one is a metrics label value", len(c.Routes))
	}
	validateWebSocket(c, add)
	return p
}

// checkLimit validates a route's or an event's limit. Events are keyed by
// ip or user only: they have no headers or body fields of their own.
func checkLimit(add func(string, string, ...any), key string, l *RouteLimit, multiplier float64, httpParts bool) {
	between := func(key string, v, lo, hi int64) {
		if v < lo || v > hi {
			add(key, "must be between %d and %d (got %d)", lo, hi, v)
		}
	}
	between(key+".rate", int64(l.Rate), 1, maxLimitCount)
	if l.Period < time.Millisecond || l.Period > 24*time.Hour {
		add(key+".period", "must be between 1ms and 24h (got %s)", l.Period)
	}
	between(key+".burst", int64(l.Burst), 0, maxLimitCount)
	if len(l.Key) == 0 && httpParts {
		add(key+".key", "must name at least one part (ip, user, header:<name>, body:<field>)")
	}
	for _, part := range l.Key {
		kind, arg, _ := strings.Cut(part, ":")
		switch {
		case part == "ip" || part == "user":
		case httpParts && (kind == "header" || kind == "body") && arg != "":
		case httpParts:
			add(key+".key", "%q is not ip, user, header:<name> or body:<field>", part)
		default:
			add(key+".key", "%q is not ip or user", part)
		}
	}
	for role, rate := range l.Roles {
		if role != "admin" && role != "agent" && role != "basic" {
			add(key+".roles", "%q is not admin, agent or basic", role)
		}
		between(key+".roles."+role, int64(rate), 1, 1_000_000_000)
		checkInterval(add, key+".roles."+role, rate, l.Period, l.Burst, multiplier)
	}
	checkInterval(add, key, l.Rate, l.Period, l.Burst, multiplier)
}

// ScaleLimit is a limit of rate per period (and burst, 0 = rate) scaled by
// RATE_LIMIT_MULTIPLIER: rate and burst rounded to the nearest whole number,
// at least 1. A rate scaled below 1 per period becomes 1 per a longer
// period instead, so that the multiplier keeps its meaning: 3 per 15 min
// ×0.1 is 1 per 50 min (rounded up to 1 per 15 min, every multiplier under
// 0.17 gave ×0.33).
func ScaleLimit(rate int, period time.Duration, burst int, m float64) (int, time.Duration, int) {
	if m == 1 || m <= 0 || rate <= 0 {
		return rate, period, burst
	}
	if burst > 0 {
		burst = max(1, int(math.Round(float64(burst)*m)))
	}
	x := float64(rate) * m
	if x >= 1 {
		r := int(math.Round(x))
		if perMicro := int(period / time.Microsecond); rate <= perMicro && r > perMicro {
			// One per microsecond, the most validation allows: a raised
			// multiplier must not make a valid limit invalid (QA: 600,000
			// per second ×2 was refused, and the reload with it).
			r = perMicro
		}
		return r, period, dayBurst(burst, r, period)
	}
	// At most a day for the whole burst, the most validation allows a limit
	// (and never shorter than the period itself): a multiplier lowered in
	// an attack must not make a day-long limit invalid (review).
	longer := math.Min(float64(period)/x, float64(maxBurstSpan)/float64(max(burst, 1)))
	longer = math.Max(longer, float64(period))
	// To the microsecond: 3 × 0.1 is 0.30000000000000004 in floating point,
	// and 15 min over it 49m59.999999999s.
	p := time.Duration(longer).Round(time.Microsecond)
	return 1, p, dayBurst(burst, 1, p)
}

// dayBurst is burst cut to what a day holds at rate per period. Rate and
// burst scale apart (and a period is never made shorter), so a scaled
// burst may take longer than a day to come back (2 per 12 h, burst 4,
// ×0.7: 1 per 12 h, burst 3), which validation refuses: a multiplier must
// not make a valid limit invalid (review). The same exact arithmetic as
// validation's (burstSpanOver), so that the two never disagree by a
// rounding.
func dayBurst(burst, rate int, period time.Duration) int {
	if burst <= 0 || rate <= 0 || period <= 0 || !burstSpanOver(burst, rate, period) {
		return burst
	}
	// The largest b with b × period ≤ 24 h × rate.
	hi, lo := bits.Mul64(uint64(maxBurstSpan), uint64(rate))
	if hi >= uint64(period) {
		return burst // a day holds more than 2^64 requests
	}
	q, _ := bits.Div64(hi, lo, uint64(period))
	return max(1, int(min(q, uint64(burst))))
}

// burstSpanOver reports whether burst requests at rate per period take
// longer than a day to come back: burst × period > 24 h × rate, in exact
// integers (floating point refused 71 per 24 h, whose 71 intervals came to
// 24 h and a few femtoseconds).
func burstSpanOver(burst, rate int, period time.Duration) bool {
	h1, l1 := bits.Mul64(uint64(burst), uint64(period))
	h2, l2 := bits.Mul64(uint64(maxBurstSpan), uint64(rate))
	return h1 > h2 || h1 == h2 && l1 > l2
}

// maxMultiplier is the largest rate_limit.multiplier; maxLimitCount the
// largest rate or burst.
const (
	maxMultiplier = 1000
	maxLimitCount = 1_000_000_000
)

// maxBurstSpan is the longest a whole burst may take to come back.
const maxBurstSpan = 24 * time.Hour

// checkInterval keeps a limit computable: one request's share of the period
// (after the multiplier) at least 1 µs, and a whole burst at most 24 h.
func checkInterval(add func(string, string, ...any), key string, rate int, period time.Duration, burst int, multiplier float64) {
	if rate <= 0 || rate > maxLimitCount || period < time.Millisecond || period > 24*time.Hour ||
		burst < 0 || burst > maxLimitCount || !(multiplier > 0 && multiplier <= maxMultiplier) {
		return // refused on their own (review: a second, wrong problem followed)
	}
	r, p, bu := ScaleLimit(rate, period, burst, multiplier)
	scaled := float64(r)
	interval := float64(p) / scaled
	if interval < float64(time.Microsecond) {
		add(key, "%g requests per %s (after the multiplier) is more than one per microsecond", scaled, p)
	}
	b := bu
	if bu == 0 {
		b = r
	}
	if burstSpanOver(b, r, p) {
		add(key, "burst %d × %s per request is more than 24h", b, time.Duration(interval))
	}
}

// ParsePrefix parses a CIDR or a single address (as a /32 or /128). IPv4
// written as IPv4-mapped IPv6 (::ffff:10.0.0.0/104) becomes plain IPv4
// (10.0.0.0/8), since peers are compared unmapped.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("%s mixes IPv4-mapped and IPv6 addresses", s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// sameListener reports whether two listen addresses would take the same
// port: the same host however it is spelled ("localhost", "127.0.0.1",
// "::ffff:127.0.0.1"), or either on every address (":8080", "0.0.0.0",
// "[::]"). Port 0 is a new port each time. Other host names are compared as
// written: resolving them here would make validation depend on DNS.
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	if pa != pb || pa == "0" {
		return false
	}
	everywhere := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	if everywhere(ha) || everywhere(hb) || strings.EqualFold(ha, hb) {
		return true
	}
	for _, x := range listenIPs(ha) {
		if slices.Contains(listenIPs(hb), x) {
			return true
		}
	}
	return false
}

// listenIPs are the addresses a listen host stands for: an IP literal's own
// (IPv4-mapped unmapped), 127.0.0.1 for localhost (Go listens on a name's
// first IPv4 address), nothing for another name.
func listenIPs(h string) []netip.Addr {
	if strings.EqualFold(h, "localhost") {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	return nil
}

// hideUserinfo is raw with whatever stands between its scheme and its last
// @ filtered out, as the URL appears in messages: the password of a URL
// that does not even parse must not be printed either, and a password may
// hold an unencoded / ? or # (base64), so the @ is looked for in the whole
// URL. Without "://" (admin:pw@10.0.0.5:3000, http:/admin:pw@host), all
// before the @ but a scheme and its slashes goes.
func hideUserinfo(raw string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	keep := 0
	if scheme := strings.Index(raw, "://"); scheme >= 0 && scheme < at {
		keep = scheme + 3
	} else if m := schemeSlashes.FindStringIndex(raw[:at]); m != nil {
		keep = m[1]
	}
	return raw[:keep] + "[FILTERED]" + raw[at:]
}

var schemeSlashes = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:/+`)

// paramName is an Express route parameter's name.
var paramName = regexp.MustCompile(`^:[A-Za-z_][A-Za-z0-9_]*$`)

// pathPatternProblem says what of an Express route pattern a route's path
// uses that chatguard does not match, or "". A :name segment takes one
// segment, as in Express; an optional parameter, a regular expression or
// a {…} group would have been taken for literal text, and the route, valid
// in appearance, would never have matched: its auth and limit skipped
// without a word (QA).
func pathPatternProblem(p string) string {
	if i := strings.IndexAny(p, "?()+{}"); i >= 0 {
		return fmt.Sprintf("holds %q: chatguard matches :name parameters (one whole segment each) and a final /*, "+
			"not Express's optional parts, regular expressions or {…} groups: write two routes, or end the path in /*", string(p[i]))
	}
	for _, seg := range strings.Split(strings.TrimSuffix(p, "/*"), "/") {
		if strings.Contains(seg, ":") && !paramName.MatchString(seg) {
			return fmt.Sprintf("has the segment %q: a parameter is a whole segment, a colon and a name (:roomId)", seg)
		}
	}
	return ""
}

// nodeMethods are the methods Node's HTTP parser accepts (http.METHODS).
var nodeMethods = []string{
	"ACL", "BIND", "CHECKOUT", "CONNECT", "COPY", "DELETE", "GET", "HEAD", "LINK", "LOCK", "M-SEARCH",
	"MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL", "MOVE", "NOTIFY", "OPTIONS", "PATCH", "POST",
	"PROPFIND", "PROPPATCH", "PURGE", "PUT", "QUERY", "REBIND", "REPORT", "SEARCH", "SOURCE",
	"SUBSCRIBE", "TRACE", "UNBIND", "UNLINK", "UNLOCK", "UNSUBSCRIBE",
}
