package config_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/config"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	manyRoutes := func(n int) []config.Route {
		r := make([]config.Route, n)
		for i := range r {
			r[i] = config.Route{Name: fmt.Sprintf("r%d", i), Path: fmt.Sprintf("/r%d", i)}
		}
		return r
	}
	tests := []struct {
		name string
		edit func(c *config.Config)
		want []string // substrings, one problem each; nil = valid
	}{
		{"defaults", func(*config.Config) {}, nil},
		{"both listeners on :0", func(c *config.Config) { c.Listen, c.AdminListen = ":0", ":0" }, nil},
		{"same listener twice", func(c *config.Config) { c.AdminListen = c.Listen }, []string{`admin_listen: ":8080" takes the port of listen ":8080"`}},
		{"same port, every address", func(c *config.Config) { c.Listen, c.AdminListen = ":8182", "0.0.0.0:8182" }, []string{`admin_listen: "0.0.0.0:8182" takes the port of listen ":8182"`}},
		{"same port, localhost spelled two ways", func(c *config.Config) { c.Listen, c.AdminListen = "127.0.0.1:8182", "LocalHost:8182" }, []string{`admin_listen: "LocalHost:8182" takes the port of listen "127.0.0.1:8182"`}},
		{"same port, IPv4-mapped", func(c *config.Config) { c.Listen, c.AdminListen = "[::ffff:127.0.0.1]:8182", "127.0.0.1:8182" }, []string{`admin_listen: "127.0.0.1:8182" takes the port`}},
		{"same port, IPv6 everywhere", func(c *config.Config) { c.Listen, c.AdminListen = "127.0.0.1:8182", "[::]:8182" }, []string{`admin_listen: "[::]:8182" takes the port`}},
		{"ipv6 listener", func(c *config.Config) { c.Listen = "[::1]:8080" }, nil},
		{"same port, two loopbacks", func(c *config.Config) { c.Listen, c.AdminListen = "[::1]:8182", "localhost:8182" }, nil},
		{"hostname listener", func(c *config.Config) { c.Listen = "localhost:8080" }, nil},
		{"no port", func(c *config.Config) { c.Listen = "localhost" }, []string{`listen: "localhost" is not host:port`}},
		{"empty port", func(c *config.Config) { c.Listen = "localhost:" }, []string{`listen: "localhost:" has no valid port`}},
		{"port too big", func(c *config.Config) { c.AdminListen = ":65536" }, []string{`admin_listen: ":65536" has no valid port`}},
		{"negative port", func(c *config.Config) { c.AdminListen = ":-1" }, []string{`admin_listen: ":-1" has no valid port`}},
		{"named port", func(c *config.Config) { c.Listen = ":http" }, []string{`listen: ":http" has no valid port`}},
		{"host with space", func(c *config.Config) { c.Listen = "a b:80" }, []string{`listen: "a b:80" has an invalid host`}},
		{"https upstream with path", func(c *config.Config) { c.Upstream = "https://chat.example.com/base" }, nil},
		{"upstream without host", func(c *config.Config) { c.Upstream = "http://" }, []string{`upstream: "http://" has no host`}},
		{"upstream without scheme", func(c *config.Config) { c.Upstream = "127.0.0.1:3000" }, []string{"upstream: "}},
		{"upstream ws scheme", func(c *config.Config) { c.Upstream = "ws://x" }, []string{"must start with http:// or https://"}},
		{"upstream query", func(c *config.Config) { c.Upstream = "http://x/?a=1" }, []string{"must not have a query or fragment"}},
		{"upstream fragment", func(c *config.Config) { c.Upstream = "http://x/#f" }, []string{"must not have a query or fragment"}},
		// The query or fragment is not quoted: it may hold a key (QA).
		{"upstream query shown without it", func(c *config.Config) { c.Upstream = "http://10.0.0.5:3000/?api_key=UpKeySecret123" }, []string{`upstream: "http://10.0.0.5:3000/?…" must not have a query or fragment`}},
		{"upstream fragment shown without it", func(c *config.Config) { c.Upstream = "http://x/#access_token=FragTok" }, []string{`upstream: "http://x/#…" must not have`}},
		{"upstream unparsable", func(c *config.Config) { c.Upstream = "http://x:port" }, []string{"is not a URL"}},
		{"upstream credentials", func(c *config.Config) { c.Upstream = "http://app:s3cretpass@backend:3000" }, []string{`upstream: "http://[FILTERED]@backend:3000" must not carry credentials`}},
		{"upstream bad credentials", func(c *config.Config) { c.Upstream = "http://a b:s3cret%zz@backend" }, []string{`upstream: "http://[FILTERED]@backend" is not a URL`}},
		{"upstream credentials without a scheme", func(c *config.Config) { c.Upstream = "admin:hunter2@10.0.0.5:3000" }, []string{`upstream: "[FILTERED]@10.0.0.5:3000" must start with http://`}},
		{"upstream credentials after a short scheme", func(c *config.Config) { c.Upstream = "http:/admin:hunter2@10.0.0.5:3000" }, []string{`upstream: "http:/[FILTERED]@10.0.0.5:3000" `}},
		{"upstream password with a slash", func(c *config.Config) { c.Upstream = "http://app:s3cr/etpass@backend:3000" }, []string{`upstream: "http://[FILTERED]@backend:3000" `}},
		{"upstream password with a question mark", func(c *config.Config) { c.Upstream = "http://app:s3?cr#et@backend:3000" }, []string{`upstream: "http://[FILTERED]@backend:3000" `}},
		{"development", func(c *config.Config) { c.Env = "development" }, nil},
		// An order problem between two levels only when both are good
		// values: -5 is one problem, not also "104857600 >= -5" (QA).
		{"thresholds out of order", func(c *config.Config) { c.Memory.WarningThreshold, c.Memory.CriticalThreshold = 300, 200 }, []string{"memory.warning_threshold: must be below memory.critical_threshold (300 >= 200)"}},
		{"negative critical threshold", func(c *config.Config) { c.Memory.CriticalThreshold = -5 }, []string{"memory.critical_threshold: "}},
		{"heap ratio over 1", func(c *config.Config) { c.Memory.HeapWarningRatio = 1.2 }, []string{"memory.heap_warning_ratio: must be in (0, 1]"}},
		{"connected users critical 0", func(c *config.Config) { c.Memory.ConnectedUsersCritical = 0 }, []string{"memory.connected_users_critical: "}},
		{"abuse critical 0", func(c *config.Config) { c.Limits.AbuseCritical = 0 }, []string{"rate_limit.abuse_critical: "}},
		{"abuse levels out of order", func(c *config.Config) { c.Limits.AbuseWarning, c.Limits.AbuseCritical = 600, 500 }, []string{"rate_limit.abuse_warning: must be below rate_limit.abuse_critical"}},
		{"env is case sensitive", func(c *config.Config) { c.Env = "Production" }, []string{`env: "Production" must be production or development`}},
		{"trusted proxies", func(c *config.Config) {
			c.Proxy.TrustedProxies = []string{"10.0.0.0/8", "::1", "2001:db8::/32", "192.168.1.1"}
		}, nil},
		{"bad trusted proxies", func(c *config.Config) {
			c.Proxy.TrustedProxies = []string{"10.0.0.0/8", "10.0.0.0/40", "example.com", ""}
		}, []string{`"10.0.0.0/40" is not a CIDR`, `"example.com" is not a CIDR`, `"" is not a CIDR`}},
		{"zero timeouts that must be positive", func(c *config.Config) {
			c.Proxy.DialTimeout, c.Proxy.ResponseHeaderTimeout, c.Server.ReadHeaderTimeout, c.Server.ShutdownTimeout = 0, 0, 0, 0
		}, []string{
			"proxy.dial_timeout: must be greater than 0 (got 0s)",
			"proxy.response_header_timeout: must be greater than 0",
			"server.read_header_timeout: must be greater than 0",
			"server.shutdown_timeout: must be greater than 0",
		}},
		{"zero durations that may be zero", func(c *config.Config) {
			c.Proxy.IdleConnTimeout, c.Server.IdleTimeout, c.Server.DrainDelay, c.Log.SummaryInterval = 0, 0, 0, 0
		}, nil},
		{"negative durations", func(c *config.Config) {
			c.Proxy.IdleConnTimeout, c.Server.IdleTimeout, c.Server.DrainDelay, c.Log.SummaryInterval = -1, -time.Second, -time.Minute, -time.Hour
		}, []string{
			"proxy.idle_conn_timeout: must not be negative (got -1ns)",
			"server.idle_timeout: must not be negative (got -1s)",
			"server.drain_delay: must not be negative (got -1m0s)",
			"log.summary_interval: must not be negative (got -1h0m0s)",
		}},
		{"int bounds inclusive", func(c *config.Config) {
			c.Proxy.MaxIdleConns, c.Proxy.ErrorInspectBytes = 0, 1024
			c.Server.MaxHeaderBytes, c.Server.MaxBodyBytes = 1<<20, 1<<40
			c.Log.MaxSizeMB, c.Log.MaxBackups = 10240, 1000
		}, nil},
		{"ints out of range", func(c *config.Config) {
			c.Proxy.MaxIdleConns, c.Proxy.ErrorInspectBytes = 100001, 16<<20+1
			c.Server.MaxHeaderBytes, c.Server.MaxBodyBytes = 4095, -1
			c.Log.MaxSizeMB, c.Log.MaxBackups = 0, 1001
		}, []string{
			"proxy.max_idle_conns: must be between 0 and 100000 (got 100001)",
			"proxy.error_inspect_bytes: must be between 1024 and 16777216 (got 16777217)",
			"server.max_header_bytes: must be between 4096 and 1048576 (got 4095)",
			"server.max_body_bytes: must be between 0 and 1099511627776 (got -1)",
			"log.max_size_mb: must be between 1 and 10240 (got 0)",
			"log.max_backups: must be between 0 and 1000 (got 1001)",
		}},
		{"log levels", func(c *config.Config) { c.Log.Level = "WARNING" }, nil},
		{"debug level", func(c *config.Config) { c.Log.Level = "debug" }, nil},
		{"bad log level", func(c *config.Config) { c.Log.Level = "verbose" }, []string{`log.level: "verbose" must be error, warn, info or debug`}},
		{"empty log level", func(c *config.Config) { c.Log.Level = "" }, []string{`log.level: "" must be`}},
		{"file logging with dir", func(c *config.Config) { c.Log.File = true }, nil},
		{"file logging without dir", func(c *config.Config) { c.Log.File, c.Log.Dir = true, "" }, []string{"log.dir: must be set when log.file is true"}},
		{"no dir without file logging", func(c *config.Config) { c.Log.Dir = "" }, nil},
		{"no routes", func(c *config.Config) { c.Routes = nil }, nil},
		{"64 routes", func(c *config.Config) { c.Routes = manyRoutes(64) }, nil},
		{"65 routes", func(c *config.Config) { c.Routes = manyRoutes(65) }, []string{"routes: at most 64 routes (got 65)"}},
		{"route names", func(c *config.Config) {
			c.Routes = []config.Route{
				{Name: "", Path: "/a"}, {Name: "Upper", Path: "/b"}, {Name: "1st", Path: "/c"},
				{Name: "with-dash", Path: "/d"}, {Name: strings.Repeat("a", 33), Path: "/e"},
				{Name: "other", Path: "/f"}, {Name: "internal", Path: "/g"}, {Name: "ok_1", Path: "/h"},
				{Name: "ok_1", Path: "/i"}, {Name: strings.Repeat("b", 32), Path: "/j"},
			}
		}, []string{
			`routes[0].name: "" must be 1-32`, `routes[1].name: "Upper" must be`, `routes[2].name: "1st" must be`,
			`routes[3].name: "with-dash" must be`, `routes[4].name: "aaaa`, `routes[5].name: "other" is reserved`,
			`routes[6].name: "internal" is reserved`, `routes[8].name: "ok_1" is used twice`,
		}},
		{"route paths", func(c *config.Config) {
			c.Routes = []config.Route{
				{Name: "a", Path: "api"}, {Name: "b", Path: ""}, {Name: "c", Path: "/api/*/x"},
				{Name: "d", Path: "/api*"}, {Name: "e", Path: "/api/**"}, {Name: "f", Path: "*"},
				{Name: "g", Path: "/*"}, {Name: "h", Path: "/api/*"}, {Name: "i", Path: "/exact"},
			}
		}, []string{
			`routes[0].path: "api" must start with /`, `routes[1].path: "" must start with /`,
			`routes[2].path: "/api/*/x" may only end in /*`, `routes[3].path: "/api*" may only end in /*`,
			`routes[4].path: "/api/**" may only end in /*`, `routes[5].path: "*" must start with /`,
		}},
		{"route methods", func(c *config.Config) {
			c.Routes = []config.Route{{Name: "a", Path: "/a", Methods: []string{"GET", "", "GE T", "a/b", "x:y", "\tget", "POTS", "post", "m-search"}}}
		}, []string{
			`routes[0].methods[1]: "" is not an HTTP method`, `routes[0].methods[2]: "GE T" is not`,
			`routes[0].methods[3]: "a/b" is not`, `routes[0].methods[4]: "x:y" is not`, `routes[0].methods[5]: "\tget" is not`,
			`routes[0].methods[6]: "POTS" is not an HTTP method Node serves`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := config.Defaults()
			tt.edit(c)
			got := config.Validate(c)
			if len(got) != len(tt.want) {
				t.Fatalf("Validate = %d problems %q, want %d %q", len(got), got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestValidateUppercasesMethods(t *testing.T) {
	t.Parallel()
	c := config.Defaults()
	c.Routes = []config.Route{
		{Name: "a", Path: "/a", Methods: []string{"get", "Post", "PATCH", "options"}},
		{Name: "b", Path: "/b"},
	}
	if p := config.Validate(c); len(p) > 0 {
		t.Fatalf("Validate = %q", p)
	}
	if want := []string{"GET", "POST", "PATCH", "OPTIONS"}; !reflect.DeepEqual(c.Routes[0].Methods, want) {
		t.Errorf("methods = %q, want %q", c.Routes[0].Methods, want)
	}
	if c.Routes[1].Methods != nil {
		t.Errorf("empty methods became %q", c.Routes[1].Methods)
	}
	// Twice is the same as once.
	before := append([]string(nil), c.Routes[0].Methods...)
	config.Validate(c)
	if !reflect.DeepEqual(c.Routes[0].Methods, before) {
		t.Errorf("second Validate changed methods to %q", c.Routes[0].Methods)
	}
}

func TestLoadUppercasesMethodsFromEveryLayer(t *testing.T) {
	t.Parallel()
	c := mustLoad(t, config.Source{
		Args:     []string{"--config=r.yaml"},
		ReadFile: files{"r.yaml": "routes:\n  - name: login\n    methods: [post, get]\n    path: /login\n"}.read,
	})
	if want := []string{"POST", "GET"}; !reflect.DeepEqual(c.Routes[0].Methods, want) {
		t.Errorf("methods = %q, want %q", c.Routes[0].Methods, want)
	}
}

func TestParsePrefix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    string // netip.Prefix.String(); "" = error
		wantErr bool
	}{
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.1.2.3/8", want: "10.0.0.0/8"}, // masked
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "192.168.1.1", want: "192.168.1.1/32"},
		{in: "192.168.1.1/32", want: "192.168.1.1/32"},
		{in: "2001:db8::1", want: "2001:db8::1/128"},
		{in: "2001:db8::1/32", want: "2001:db8::/32"},
		{in: "::/0", want: "::/0"},
		{in: "::1", want: "::1/128"},
		{in: "::ffff:10.1.2.3", want: "10.1.2.3/32"}, // IPv4-mapped: unmapped, as peers are
		{in: "", wantErr: true},
		{in: "garbage", wantErr: true},
		{in: "10.0.0.0/33", wantErr: true},
		{in: "2001:db8::/129", wantErr: true},
		{in: "10.0.0.0/-1", wantErr: true},
		{in: "10.0.0.0/", wantErr: true},
		{in: "/8", wantErr: true},
		{in: "256.0.0.1", wantErr: true},
		{in: "10.0.0", wantErr: true},
		{in: " 10.0.0.1", wantErr: true},
		{in: "10.0.0.0/8/8", wantErr: true},
		{in: "fe80::1%eth0/64", wantErr: true},
		{in: "example.com", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			p, err := config.ParsePrefix(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Errorf("ParsePrefix(%q) = %v, want an error", tt.in, p)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePrefix(%q) error = %v", tt.in, err)
			}
			if !p.IsValid() || p.String() != tt.want {
				t.Errorf("ParsePrefix(%q) = %v, want %s", tt.in, p, tt.want)
			}
		})
	}
}

// The proxy unmaps every peer address (proxy/forwarded.go) before asking
// whether a trusted prefix contains it, and ParsePrefix unmaps a single
// ::ffff:a.b.c.d. An IPv4-mapped CIDR is accepted by Validate too, but stays
// an IPv6 prefix, so it can never contain an (unmapped) peer.
func TestParsePrefixUnmapsMappedCIDR(t *testing.T) {
	t.Parallel()
	p, err := config.ParsePrefix("::ffff:10.0.0.0/104")
	if err != nil {
		return // rejecting it is also a fix
	}
	if !p.Contains(netip.MustParseAddr("10.1.2.3")) {
		t.Errorf("ParsePrefix(::ffff:10.0.0.0/104) = %v, does not contain 10.1.2.3", p)
	}
}

func TestValidateLimitsAndRedis(t *testing.T) {
	t.Parallel()
	c := config.Defaults()
	c.Routes = append(c.Routes,
		config.Route{Name: "blocked", Path: "/b"},
		config.Route{Name: "fast", Path: "/f", Limit: &config.RouteLimit{Rate: 2_000_000, Period: time.Second, Key: []string{"ip"}}},
		config.Route{Name: "huge", Path: "/h", Limit: &config.RouteLimit{Rate: 1, Period: 24 * time.Hour, Burst: 2, Key: []string{"ip"}}},
	)
	c.Redis.URL = "redis://:hunter2%zz@host:6379"
	probs := strings.Join(config.Validate(c), "\n")
	for _, want := range []string{`"blocked" is reserved`, "routes[7].limit: 2e+06 requests per 1s", "routes[8].limit: burst 2", "redis.url: is not a valid"} {
		if !strings.Contains(probs, want) {
			t.Errorf("problems lack %q:\n%s", want, probs)
		}
	}
	if strings.Contains(probs, "hunter2") {
		t.Errorf("the Redis password in a problem:\n%s", probs)
	}
}

// Diff compares secrets as they are (their printed form hides them all
// alike), and names nested keys as the file spells them.
func TestDiffComparesSecretsAndNamesKeys(t *testing.T) {
	t.Parallel()
	a, b := config.Defaults(), config.Defaults()
	if d := config.Diff(a, b); len(d) != 0 {
		t.Fatalf("defaults differ from themselves: %v", d)
	}
	a.Auth.JWTSecret, b.Auth.JWTSecret = "one-secret-0123456789", "two-secret-0123456789"
	b.Limits.AbuseWarning++
	if d := fmt.Sprint(config.Diff(a, b)); d != "[auth.jwt_secret rate_limit.abuse_warning]" {
		t.Fatalf("Diff = %s", d)
	}
}

// No message about the upstream ever quotes its password, however the URL
// is broken.
func TestUpstreamPasswordNeverPrinted(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"http://app:s3cretpw@backend:3000", "http://app:s3cr/etpw@backend:3000", "http://app:s3?cr#etpw@backend",
		"http://a b:s3cret%zzpw@backend", "ftp://app:s3cretpw@backend", "http://app:s3cretpw@", "http://app:s3cretpw@backend:99999999",
	} {
		c := config.Defaults()
		c.Upstream = u
		probs := config.Validate(c)
		if len(probs) == 0 {
			t.Errorf("%s: accepted", u)
		}
		for _, p := range probs {
			if strings.Contains(fmt.Sprint(p), "pw") {
				t.Errorf("%s: the password is in %q", u, p)
			}
		}
	}
}

// check-config accepts exactly the Redis URLs serve can use: a database
// that is not a number or an option go-redis does not know used to pass
// here and stop serve.
func TestValidateRedisURLAsServeReadsIt(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]string{
		"redis://:hunter2@h:6379/abc":               `redis.url: is not a valid Redis URL (invalid database number: "abc")`,
		"redis://:hunter2@h:6379/0?foo=bar":         "redis.url: is not a valid Redis URL (unexpected option: foo)",
		"redis://:hunter2@h1:7000?addr=h2:7001&x=1": "redis.url: is not a valid Redis cluster URL (unexpected option: x)",
		"redis://:hunter2@h:6379/1?dial_timeout=2s": "",
		"rediss://u:hunter2@h1:7000?addr=h2:7001":   "",
	} {
		c := config.Defaults()
		c.Redis.URL = config.Secret(url)
		probs := strings.Join(config.Validate(c), "\n")
		if want == "" && strings.Contains(probs, "redis.url") || want != "" && !strings.Contains(probs, want) {
			t.Errorf("%s: problems %q, want %q", strings.ReplaceAll(url, "hunter2", "…"), probs, want)
		}
		if strings.Contains(probs, "hunter2") {
			t.Errorf("the Redis password in a problem:\n%s", probs)
		}
	}
}

// Two hosts on one port are two listeners; so are two port-0 listeners.
func TestValidateListenersOnTheSamePortOfTwoHosts(t *testing.T) {
	t.Parallel()
	for _, pair := range [][2]string{{"127.0.0.1:8080", "10.0.0.5:8080"}, {":0", ":0"}, {":8080", ":9090"}} {
		c := config.Defaults()
		c.Listen, c.AdminListen = pair[0], pair[1]
		if p := config.Validate(c); len(p) > 0 {
			t.Errorf("%v: %q", pair, p)
		}
	}
}

// A multiplier never makes a valid limit invalid: a rate scaled below 1 per
// period stretches its period, but never past a day for the whole burst
// (review: 1 per 24 h ×0.5 was refused, at reload in an attack); a rate and
// a burst that round apart keep the burst within a day (review: 2 per 12 h,
// burst 4, was refused at ×0.7 and ×1.2).
func TestLoweredMultiplierKeepsLimitsValid(t *testing.T) {
	t.Parallel()
	for _, m := range []float64{0.5, 0.1, 0.001, 0.7, 1.2, 0.4} {
		c := config.Defaults()
		c.Limits.Multiplier = m
		c.Routes = append(c.Routes,
			config.Route{Name: "daily", Path: "/d", Limit: &config.RouteLimit{Rate: 1, Period: 24 * time.Hour, Key: []string{"ip"}}},
			config.Route{Name: "daily3", Path: "/d3", Limit: &config.RouteLimit{Rate: 3, Period: 24 * time.Hour, Burst: 1, Key: []string{"ip"}}},
			config.Route{Name: "twelve", Path: "/t", Limit: &config.RouteLimit{Rate: 2, Period: 12 * time.Hour, Burst: 4, Key: []string{"ip"}}},
		)
		if probs := config.Validate(c); len(probs) != 0 {
			t.Errorf("×%g: %v", m, probs)
		}
	}
	for _, tc := range []struct {
		rate, burst int
		period      time.Duration
		m           float64
		want        string
	}{
		{3, 0, 15 * time.Minute, 0.1, "1 50m0s 0"},
		{1, 0, 24 * time.Hour, 0.5, "1 24h0m0s 0"},             // a day at most
		{2, 4, 12 * time.Hour, 0.1, "1 24h0m0s 1"},             // the whole burst (now 1) within a day
		{30, 0, time.Minute, 2, "60 1m0s 0"},                   // raised: the same period
		{10, 5, time.Minute, 0.3, "3 1m0s 2"},                  // 1.5 rounds up to 2
		{1, 1, time.Millisecond, 1e-9, "1 24h0m0s 1"},          // no overflow
		{1000, 0, time.Hour, 0.0001, "1 10h0m0s 0"},            // 0.1 an hour: 1 per 10 h
		{7, 0, 15 * time.Minute, 1, "7 15m0s 0"},               // untouched
		{3, 0, 15 * time.Minute, 0.34, "1 15m0s 0"},            // 1.02 rounds to 1 per the period
		{3, 0, 15 * time.Minute, 0.3, "1 16m40s 0"},            // 0.9: a little longer
		{2, 0, 90 * time.Second, 0.25, "1 3m0s 0"},             // 0.5 per 90 s
		{5, 0, time.Hour, 0.1, "1 2h0m0s 0"},                   // 0.5 an hour
		{1, 0, time.Second, 0.5, "1 2s 0"},                     // seconds
		{4, 8, time.Minute, 0.125, "1 2m0s 1"},                 // burst 1 too
		{100, 0, time.Minute, 0.005, "1 2m0s 0"},               // 0.5 a minute
		{60, 0, time.Minute, 1.0 / 120, "1 2m0s 0"},            // 0.5 a minute again
		{1, 0, 24 * time.Hour, 0.9, "1 24h0m0s 0"},             // capped at a day, no less than the period
		{30, 0, time.Minute, 1000, "30000 1m0s 0"},             // the most validation allows
		{600000, 0, time.Second, 2, "1000000 1s 0"},            // at most one per microsecond (QA)
		{2000000, 0, time.Second, 2, "4000000 1s 0"},           // already over: left to validation
		{1, 0, 20 * time.Hour, 0.5, "1 24h0m0s 0"},             // 40 h capped at a day
		{2, 2, 20 * time.Hour, 0.5, "1 20h0m0s 1"},             // exactly 1 per period: the period kept
		{2, 4, 20 * time.Hour, 0.4, "1 20h0m0s 1"},             // burst 2: 12 h each, but no shorter than the period, so a day holds 1
		{2, 4, 12 * time.Hour, 0.7, "1 12h0m0s 2"},             // burst 3 (2.8) would take 36 h: what a day holds
		{2, 4, 12 * time.Hour, 1.2, "2 12h0m0s 4"},             // raised: burst 5 (4.8) at 6 h each is 30 h
		{3, 0, 15 * time.Minute, 0.0, "3 15m0s 0"},             // not a multiplier: left alone
		{0, 0, 15 * time.Minute, 0.5, "0 15m0s 0"},             // not a rate: left alone
		{3, 0, 15 * time.Minute, -1, "3 15m0s 0"},              // nor a negative multiplier
		{3, 3, 15 * time.Minute, 0.1, "1 50m0s 1"},             // explicit burst equal to rate
		{1, 0, 15 * time.Minute, 0.999999, "1 15m0.0009s 0"},   // just under 1
		{1, 0, 15 * time.Minute, 1.000001, "1 15m0s 0"},        // just over
		{2, 0, 15 * time.Minute, 0.4999999, "1 15m0.00018s 0"}, // just under 1 again
	} {
		r, p, b := config.ScaleLimit(tc.rate, tc.period, tc.burst, tc.m)
		if got := fmt.Sprint(r, p, b); got != tc.want {
			t.Errorf("ScaleLimit(%d per %s, burst %d, ×%g) = %s, want %s", tc.rate, tc.period, tc.burst, tc.m, got, tc.want)
		}
	}
}

// No multiplier makes a valid limit invalid, and validation agrees with
// ScaleLimit to the nanosecond (review: 47 per 24 h ×1.5 was refused, its
// burst's float span a rounding over 24 h; 71 per 24 h at ×1 too).
func TestMultiplierNeverInvalidatesALimit(t *testing.T) {
	t.Parallel()
	valid := func(rate, burst int, period time.Duration, m float64) []string {
		c := config.Defaults()
		c.Limits.Multiplier = m
		c.Routes = append(c.Routes, config.Route{Name: "x", Path: "/x", Limit: &config.RouteLimit{Rate: rate, Period: period, Burst: burst, Key: []string{"ip"}}})
		return config.Validate(c)
	}
	for _, rate := range []int{1, 2, 3, 47, 71} {
		for _, burst := range []int{0, 3, 4, 71, 200} {
			for _, period := range []time.Duration{90 * time.Second, 7 * time.Hour, 12 * time.Hour, 24 * time.Hour} {
				if valid(rate, burst, period, 1) != nil {
					continue
				}
				for _, m := range []float64{0.1, 0.7, 1.2, 1.5} {
					if p := valid(rate, burst, period, m); p != nil {
						t.Errorf("%d per %s, burst %d: valid at ×1, at ×%g: %v", rate, period, burst, m, p)
					}
				}
			}
		}
	}
	for _, rate := range []int{47, 71, 1999} {
		if p := valid(rate, 0, 24*time.Hour, 1); p != nil {
			t.Errorf("%d per 24h: %v", rate, p)
		}
	}
	// Raised past one per microsecond (QA: 600,000 per second ×2 was
	// refused, and with it the whole reload).
	for _, rate := range []int{600000, 1000000} {
		for _, m := range []float64{2, 1000} {
			if p := valid(rate, 0, time.Second, m); p != nil {
				t.Errorf("%d per 1s ×%g: %v", rate, m, p)
			}
		}
	}
}

// A burst or a multiplier refused on its own adds no second problem about
// the burst's span (review: "burst -1 × 20s per request is more than 24h",
// and one line per route for a multiplier of 1e300).
func TestRefusedBurstOrMultiplierIsOneProblem(t *testing.T) {
	t.Parallel()
	c := config.Defaults()
	c.Routes = append(c.Routes, config.Route{Name: "x", Path: "/x", Limit: &config.RouteLimit{Rate: 3, Period: time.Minute, Burst: -1, Key: []string{"ip"}}})
	p := config.Validate(c)
	if len(p) != 1 || !strings.Contains(p[0], "burst") {
		t.Errorf("burst -1: %q, want one problem", p)
	}
	c = config.Defaults()
	c.Routes = append(c.Routes, config.Route{Name: "x", Path: "/x", Limit: &config.RouteLimit{Rate: 3, Period: time.Minute, Burst: 2_000_000_000, Key: []string{"ip"}}})
	if p := config.Validate(c); len(p) != 1 || !strings.Contains(p[0], "burst") {
		t.Errorf("burst 2e9: %q, want one problem", p)
	}
	c = config.Defaults()
	c.Limits.Multiplier = 1e300
	if p := config.Validate(c); len(p) != 1 || !strings.Contains(p[0], "rate_limit.multiplier") {
		t.Errorf("multiplier 1e300: %q, want one problem", p)
	}
}

// A route an earlier one takes every request of never matches: a warning
// (QA: a required-auth route after a catch-all let anonymous requests
// through, and check-config said valid).
func TestShadowedRoutesWarned(t *testing.T) {
	t.Parallel()
	c := config.Defaults()
	c.Routes = []config.Route{
		{Name: "rooms", Path: "/v2/rooms/*"},
		{Name: "room_kick", Methods: []string{"DELETE"}, Path: "/v2/rooms/:roomId/members/:userId"},
		{Name: "get_list", Methods: []string{"GET"}, Path: "/v3/list"},
		{Name: "head_list", Methods: []string{"HEAD"}, Path: "/v3/List/"},
		{Name: "post_list", Methods: []string{"POST"}, Path: "/v3/list"},
		{Name: "one", Path: "/v3/items/:id"},
		{Name: "literal", Path: "/v3/items/latest"},
		{Name: "below", Path: "/v3/items/latest/*"},
		{Name: "all", Path: "/*"},
		{Name: "health", Path: "/health"},
	}
	var got []string
	for _, w := range config.Warnings(c) {
		if strings.Contains(w, "never matches") {
			got = append(got, w[:strings.Index(w, " (")])
		}
	}
	want := []string{"routes[1]", "routes[3]", "routes[6]", "routes[9]"}
	if !slices.Equal(got, want) {
		t.Errorf("shadowed: %v, want %v\n%s", got, want, strings.Join(config.Warnings(c), "\n"))
	}
	if w := config.Warnings(config.Defaults()); slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, "never matches") }) {
		t.Errorf("the default routes: %v", w)
	}
}

// Express patterns beyond :name segments are refused, not taken for text.
func TestRoutePathPatterns(t *testing.T) {
	t.Parallel()
	for p, want := range map[string]string{
		"/v2/rooms/:roomId/members/:userId": "",
		"/v2/rooms/:roomId/*":               "",
		"/v2/rooms/:id?":                    `holds "?"`,
		"/v2/rooms/:id(\\d+)":               `holds "("`,
		"/v2/rooms/{roomId}":                `holds "{"`,
		"/v1/things:batchGet":               `has the segment "things:batchGet"`,
		"/v2/rooms/:":                       `has the segment ":"`,
		"/v2/rooms/*/messages":              "may only end in /*",
	} {
		c := config.Defaults()
		c.Routes = []config.Route{{Name: "r", Path: p}}
		probs := strings.Join(config.Validate(c), "\n")
		if want == "" && probs != "" || want != "" && !strings.Contains(probs, want) {
			t.Errorf("path %q: problems %q, want %q", p, probs, want)
		}
	}
}

// What check-config accepted without a word (QA): every address trusted, a
// range written with host bits, event names no client can emit.
func TestTrustedProxyAndEventNameMistakes(t *testing.T) {
	t.Parallel()
	c := config.Defaults()
	c.Proxy.TrustedProxies = []string{"0.0.0.0/0", "10.1.2.3/8", "10.0.0.0/8", "::/0", "2001:DB8::/32", "2001:0db8::/32", "::FFFF:10.0.0.0/104", "2001:db8::1/32"}
	warns := strings.Join(config.Warnings(c), "\n")
	for _, want := range []string{`"0.0.0.0/0", every address`, `"::/0", every address`, `"10.1.2.3/8", which is the range 10.0.0.0/8`, `"2001:db8::1/32", which is the range 2001:db8::/32`} {
		if !strings.Contains(warns, want) {
			t.Errorf("warnings lack %q:\n%s", want, warns)
		}
	}
	// Spellings of a plain range are no mistake (review: upper case and
	// leading zeros warned).
	for _, plain := range []string{`"10.0.0.0/8"`, `"2001:DB8::/32"`, `"2001:0db8::/32"`, `"::FFFF:10.0.0.0/104"`} {
		if strings.Contains(warns, plain) {
			t.Errorf("a plain range %s warned:\n%s", plain, warns)
		}
	}
	c = config.Defaults()
	c.WebSocket.Events = []config.EventLimit{{Name: "connect", Limit: config.RouteLimit{Rate: 1, Period: time.Minute}}, {Name: "chat:*", Limit: config.RouteLimit{Rate: 1, Period: time.Minute}}}
	// Warnings, not problems: such a config ran before (review).
	if probs := config.Validate(c); len(probs) != 0 {
		t.Errorf("problems %q", probs)
	}
	warns = strings.Join(config.Warnings(c), "\n")
	for _, want := range []string{`"connect" is reserved by Socket.IO`, `"chat:*" is matched exactly`} {
		if !strings.Contains(warns, want) {
			t.Errorf("warnings lack %q:\n%s", want, warns)
		}
	}
}
