package config_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	deployconfig "github.com/chatguard/chatguard/deploy/config"
	"github.com/chatguard/chatguard/internal/config"
)

// documented is deploy/config/chatguard.yaml, written out by hand: a change to
// either the file or the decoding shows up here.
func documented() *config.Config {
	return &config.Config{
		Listen:      ":8080",
		AdminListen: ":9090",
		Upstream:    "http://127.0.0.1:3000",
		Env:         "production",
		StatsToken:  "",
		Proxy: config.Proxy{
			TrustedProxies:        []string{},
			DialTimeout:           5 * time.Second,
			ResponseHeaderTimeout: 90 * time.Second,
			ResponseBodyTimeout:   time.Minute,
			IdleConnTimeout:       4 * time.Second,
			MaxIdleConns:          512,
			PreserveHost:          true,
			ErrorInspectBytes:     65536,
			CORSFromUpstream:      true,
		},
		Server: config.Server{
			ReadHeaderTimeout: 10 * time.Second,
			BodyReadTimeout:   60 * time.Second,
			SendTimeout:       time.Minute,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    65536,
			MaxHeaderCount:    100,
			MaxBodyBytes:      26214400,
			DrainDelay:        5 * time.Second,
			ShutdownTimeout:   20 * time.Second,
		},
		Log: config.Log{
			Level:           "info",
			File:            false,
			Dir:             "./logs",
			MaxSizeMB:       20,
			MaxBackups:      5,
			SummaryInterval: time.Hour,
			FlushInterval:   100 * time.Millisecond,
		},
		Tables: config.Tables{
			ConnectedUsers:    config.Table{MaxEntries: 50000, TTL: 2 * time.Hour},
			ConversationUsers: config.Table{MaxEntries: 100000, TTL: time.Hour},
			EventRateLimits:   config.Table{MaxEntries: 1000000, TTL: 10 * time.Minute},
			UserRoles:         config.Table{MaxEntries: 100000, TTL: 4 * time.Hour},
		},
		Memory: config.Memory{
			WarningThreshold:       104857600,
			CriticalThreshold:      209715200,
			HeapWarningRatio:       0.7,
			HeapCriticalRatio:      0.85,
			ConnectedUsersWarning:  40000,
			ConnectedUsersCritical: 50000,
			CheckInterval:          time.Minute,
			SweepInterval:          5 * time.Minute,
			ShedFraction:           0.2,
			EmergencyCooldown:      5 * time.Minute,
			ProfileDir:             "./profiles",
			MaxProfiles:            10,
			CPUProfile:             5 * time.Second,
		},
		Alerts: config.Alerts{Path: "./logs/alerts.jsonl"},
		Auth:   config.Auth{UserClaims: []string{"email", "sub"}, RoleClaim: "role", NameClaim: "name", RoleMap: map[string]string{}},
		Limits: config.Limits{Multiplier: 1, BodyKeyBytes: 8192, File: "temp/rate-limits.json", SaveInterval: 2 * time.Minute,
			AbuseWarning: 100, AbuseCritical: 500, BlockFor: time.Hour},
		Redis: config.Redis{Timeout: 50 * time.Millisecond, Failures: 3, Cooldown: time.Second, Replicas: 1, Prefix: "chatguard:rl:"},
		Routes: []config.Route{
			{Name: "auth_login", Methods: []string{"POST"}, Path: "/api/auth/login",
				Limit: &config.RouteLimit{Rate: 3, Period: 15 * time.Minute, Key: []string{"ip", "body:email"}}},
			{Name: "messages", Path: "/api/messages/*", Auth: "optional",
				Limit: &config.RouteLimit{Rate: 30, Period: time.Minute, Key: []string{"user"}, Roles: map[string]int{"agent": 60, "admin": 100}}},
			{Name: "conversations", Path: "/api/conversations/*", Auth: "optional",
				Limit: &config.RouteLimit{Rate: 20, Period: 5 * time.Minute, Key: []string{"user"}}},
			{Name: "media", Methods: []string{"POST", "PUT"}, Path: "/api/media/*", Auth: "optional",
				Limit: &config.RouteLimit{Rate: 10, Period: 10 * time.Minute, Key: []string{"user"}}},
			{Name: "webhook", Methods: []string{"POST"}, Path: "/webhook/twilio",
				Limit: &config.RouteLimit{Rate: 30, Period: time.Minute, Key: []string{"ip"}}},
			{Name: "socketio", Path: "/socket.io/*"},
		},
		WebSocket: config.WebSocket{
			SocketIOPath: "/socket.io/", Origins: []string{}, HandshakeTimeout: 10 * time.Second,
			MaxMessageBytes: 16 << 20, Polling: true, Auth: "optional", DrainCloseCode: 1001,
			MaxSocketsPerUser: 10, MaxSocketsPerIP: 100, ConsistencyCheck: 5 * time.Minute,
			ErrorEvent: "error", JoinEvent: "join-conversation", LeaveEvent: "leave-conversation",
			ConversationField: "conversationId",
			Events: []config.EventLimit{
				{Name: "send-message", Limit: config.RouteLimit{Rate: 30, Period: time.Minute, Roles: map[string]int{"agent": 60, "admin": 100}}},
				{Name: "typing", Limit: config.RouteLimit{Rate: 120, Period: time.Minute}},
				{Name: "join-conversation", Limit: config.RouteLimit{Rate: 30, Period: time.Minute}},
			},
		},
	}
}

func TestDefaultsMatchDocumentedFile(t *testing.T) {
	t.Parallel()
	got := config.Defaults()
	if want := documented(); !reflect.DeepEqual(got, want) {
		t.Errorf("Defaults() =\n%+v\nwant\n%+v", got, want)
	}
	if probs := config.Validate(got); len(probs) > 0 {
		t.Errorf("Validate(Defaults()) = %q, want no problems", probs)
	}
	if got.Development() {
		t.Error("Defaults().Development() = true, want production")
	}
}

func TestDefaultsAreFreshCopies(t *testing.T) {
	t.Parallel()
	a := config.Defaults()
	a.Routes[0].Methods[0] = "changed"
	a.Proxy.TrustedProxies = append(a.Proxy.TrustedProxies, "10.0.0.0/8")
	b := config.Defaults()
	if b.Routes[0].Methods[0] != "POST" || len(b.Proxy.TrustedProxies) != 0 {
		t.Errorf("Defaults() shares state between calls: %+v", b)
	}
}

func TestLoadWithNothingIsDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(config.Source{LookupEnv: env{}.lookup, ReadFile: noFiles})
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	if want := documented(); !reflect.DeepEqual(c, want) {
		t.Errorf("Load() =\n%+v\nwant\n%+v", c, want)
	}
}

// lookupKey walks a dotted key through a decoded YAML mapping node.
func lookupKey(doc *yaml.Node, key string) (*yaml.Node, bool) {
	n := doc
	if n.Kind == yaml.DocumentNode {
		n = n.Content[0]
	}
	for _, part := range strings.Split(key, ".") {
		if n.Kind != yaml.MappingNode {
			return nil, false
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil, false
		}
		n = next
	}
	return n, true
}

// Nothing may be defaulted only in Go: every setting has its documented
// default in the embedded file, and the file's value is the one Defaults has.
func TestEverySettingIsInDefaultFile(t *testing.T) {
	t.Parallel()
	var doc yaml.Node
	if err := yaml.Unmarshal(deployconfig.DefaultYAML, &doc); err != nil {
		t.Fatalf("default YAML does not parse: %v", err)
	}
	def := config.Defaults()
	for _, s := range config.Settings() {
		t.Run(s.Key, func(t *testing.T) {
			t.Parallel()
			n, ok := lookupKey(&doc, s.Key)
			if !ok {
				t.Fatalf("key %q is missing from deploy/config/chatguard.yaml", s.Key)
			}
			var val string
			switch n.Kind {
			case yaml.ScalarNode:
				val = n.Value
			case yaml.SequenceNode:
				var parts []string
				for _, c := range n.Content {
					parts = append(parts, c.Value)
				}
				val = strings.Join(parts, ",")
			default:
				t.Fatalf("key %q is a %v, want a scalar or list", s.Key, n.Kind)
			}
			// Value hides a non-empty secret; the documented token is empty.
			got := s.Value(def)
			if d, err := time.ParseDuration(val); err == nil && val != "0" { // a bare 0 is a number
				val = d.String()
			}
			if got != val {
				t.Errorf("Defaults() %s = %q, file says %q", s.Key, got, val)
			}
		})
	}
}

func TestSettingNamesAreUnique(t *testing.T) {
	t.Parallel()
	keys, envs, flags := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, s := range config.Settings() {
		if s.Key == "" || s.Env == "" || s.Flag == "" || s.Help == "" {
			t.Errorf("setting %+v has an empty name or help", s)
		}
		if keys[s.Key] {
			t.Errorf("key %q listed twice", s.Key)
		}
		if envs[s.Env] {
			t.Errorf("env %q used by two settings", s.Env)
		}
		if flags[s.Flag] {
			t.Errorf("flag %q used by two settings", s.Flag)
		}
		if s.Flag == "config" || s.Env == "CHATGUARD_CONFIG" {
			t.Errorf("setting %q reuses the config file's own flag/env", s.Key)
		}
		if strings.HasPrefix(s.Flag, "-") {
			t.Errorf("flag %q must be given without dashes", s.Flag)
		}
		keys[s.Key], envs[s.Env], flags[s.Flag] = true, true, true
	}
}

// The contract table in DESIGN.md names these variables; tests outside the
// repository rely on them.
func TestDocumentedEnvNames(t *testing.T) {
	t.Parallel()
	byEnv := map[string]string{}
	for _, s := range config.Settings() {
		byEnv[s.Env] = s.Key
	}
	for env, key := range map[string]string{
		"CHATGUARD_LISTEN":       "listen",
		"CHATGUARD_ADMIN_LISTEN": "admin_listen",
		"CHATGUARD_UPSTREAM":     "upstream",
		"CHATGUARD_ENV":          "env",
		"CHATGUARD_STATS_TOKEN":  "stats_token",
		"LOG_LEVEL":              "log.level",
		"ENABLE_FILE_LOGGING":    "log.file",
		"LOG_DIR":                "log.dir",
	} {
		if byEnv[env] != key {
			t.Errorf("env %s sets %q, want %q", env, byEnv[env], key)
		}
	}
}
