package config_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/chatguard/chatguard/internal/config"
)

const token = "s3cr3t-hunter2-token"

// verbS is not a constant, so that vet lets %s format a struct.
var verbS = "%s"

func TestSecretNeverPrints(t *testing.T) {
	t.Parallel()
	c := config.Defaults()
	c.StatsToken = token
	s := config.Secret(token)
	type wrapper struct{ T config.Secret }

	outputs := map[string]func() (string, error){
		"%v secret":       func() (string, error) { return fmt.Sprintf("%v", s), nil },
		"%s secret":       func() (string, error) { return fmt.Sprintf("%s", s), nil },
		"%q secret":       func() (string, error) { return fmt.Sprintf("%q", s), nil },
		"%x secret":       func() (string, error) { return fmt.Sprintf("%x", s), nil },
		"%#v secret":      func() (string, error) { return fmt.Sprintf("%#v", s), nil },
		"Sprint secret":   func() (string, error) { return fmt.Sprint(s), nil },
		"%v config":       func() (string, error) { return fmt.Sprintf("%v", c), nil },
		"%+v config":      func() (string, error) { return fmt.Sprintf("%+v", *c), nil },
		"%s config":       func() (string, error) { return fmt.Sprintf(verbS, c), nil },
		"%#v config":      func() (string, error) { return fmt.Sprintf("%#v", c), nil },
		"%#v value":       func() (string, error) { return fmt.Sprintf("%#v", *c), nil },
		"%v wrapper":      func() (string, error) { return fmt.Sprintf("%v", wrapper{s}), nil },
		"%v slice":        func() (string, error) { return fmt.Sprintf("%v", []config.Secret{s}), nil },
		"%v map":          func() (string, error) { return fmt.Sprintf("%v", map[string]config.Secret{"t": s}), nil },
		"json config":     func() (string, error) { b, err := json.Marshal(c); return string(b), err },
		"json indent":     func() (string, error) { b, err := json.MarshalIndent(*c, "", " "); return string(b), err },
		"yaml config":     func() (string, error) { b, err := yaml.Marshal(c); return string(b), err },
		"yaml secret":     func() (string, error) { b, err := yaml.Marshal(s); return string(b), err },
		"text marshal":    func() (string, error) { b, err := s.MarshalText(); return string(b), err },
		"setting value":   func() (string, error) { return setting(t, "stats_token").Value(c), nil },
		"error wrapping":  func() (string, error) { return fmt.Errorf("bad token %v", s).Error(), nil },
		"String()":        func() (string, error) { return s.String(), nil },
		"GoString()":      func() (string, error) { return s.GoString(), nil },
		"%v Problems str": func() (string, error) { return config.Problems{fmt.Sprint(c)}.Error(), nil },
	}
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := out()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(got, token) || strings.Contains(got, fmt.Sprintf("%x", token)) {
				t.Errorf("output shows the secret: %s", got)
			}
			if !strings.Contains(got, "[FILTERED]") && !strings.Contains(got, fmt.Sprintf("%x", "[FILTERED]")) {
				t.Errorf("output has no [FILTERED] marker: %s", got)
			}
		})
	}
	if got := c.StatsToken.Reveal(); got != token {
		t.Errorf("Reveal() = %q, want %q", got, token)
	}
}

func TestEmptySecretPrintsEmpty(t *testing.T) {
	t.Parallel()
	var s config.Secret
	if s.String() != "" || fmt.Sprint(s) != "" || s.Reveal() != "" {
		t.Errorf("empty secret prints %q / %q", s.String(), fmt.Sprint(s))
	}
	b, err := json.Marshal(s)
	if err != nil || string(b) != `""` {
		t.Errorf("json.Marshal(empty) = %s, %v", b, err)
	}
}

// fmt falls back to the raw value for verbs a string does not support, and in
// that path it does not call String: a Secret (or a Config holding one)
// printed with a wrong verb shows the token.
func TestSecretWrongVerb(t *testing.T) {
	t.Parallel()
	c := config.Defaults()
	c.StatsToken = token
	for _, verb := range []string{"%d", "%t", "%e", "%08d"} {
		for _, v := range []any{config.Secret(token), c, *c} {
			if got := fmt.Sprintf(verb, v); strings.Contains(got, token) {
				t.Errorf("Sprintf(%q, %T) shows the secret: %s", verb, v, got)
			}
		}
	}
}

func TestSettingValue(t *testing.T) {
	t.Parallel()
	c := config.Defaults()
	c.Listen = "[::1]:8081"
	c.StatsToken = token
	c.Proxy.TrustedProxies = []string{"10.0.0.0/8", "::1"}
	c.Proxy.DialTimeout = 1500 * time.Millisecond
	c.Proxy.PreserveHost = false
	c.Proxy.MaxIdleConns = -3
	c.Server.MaxBodyBytes = 1 << 40
	c.Server.IdleTimeout = 0
	c.Log.File = true
	c.Log.SummaryInterval = 90 * time.Minute
	c.Redis.URL = "redis://default:s3cret-pw@redis-0.redis:6379/2"
	c.WebSocket.Origins = []string{"*.example.com", "localhost:*"}
	want := map[string]string{
		"listen":                          "[::1]:8081",
		"admin_listen":                    ":9090",
		"upstream":                        "http://127.0.0.1:3000",
		"env":                             "production",
		"stats_token":                     "[FILTERED]",
		"proxy.trusted_proxies":           "10.0.0.0/8,::1",
		"proxy.dial_timeout":              "1.5s",
		"proxy.response_header_timeout":   "1m30s",
		"proxy.response_body_timeout":     "1m0s",
		"proxy.idle_conn_timeout":         "4s",
		"proxy.max_idle_conns":            "-3",
		"proxy.preserve_host":             "false",
		"proxy.error_inspect_bytes":       "65536",
		"proxy.cors_from_upstream":        "true",
		"proxy.ready_on_upstream":         "false",
		"server.read_header_timeout":      "10s",
		"server.send_timeout":             "1m0s",
		"server.body_read_timeout":        "1m0s",
		"server.idle_timeout":             "0s",
		"server.max_header_bytes":         "65536",
		"server.max_header_count":         "100",
		"server.max_body_bytes":           "1099511627776",
		"server.drain_delay":              "5s",
		"server.shutdown_timeout":         "20s",
		"log.level":                       "info",
		"log.file":                        "true",
		"log.dir":                         "./logs",
		"log.max_size_mb":                 "20",
		"log.max_backups":                 "5",
		"log.summary_interval":            "1h30m0s",
		"log.flush_interval":              "100ms",
		"memory.warning_threshold":        "104857600",
		"memory.critical_threshold":       "209715200",
		"memory.heap_warning_ratio":       "0.7",
		"memory.heap_critical_ratio":      "0.85",
		"memory.limit":                    "0",
		"memory.connected_users_warning":  "40000",
		"memory.connected_users_critical": "50000",
		"memory.check_interval":           "1m0s",
		"memory.sweep_interval":           "5m0s",
		"memory.shed_fraction":            "0.2",
		"memory.emergency_cooldown":       "5m0s",
		"memory.profile_dir":              "./profiles",
		"memory.max_profiles":             "10",
		"memory.cpu_profile":              "5s",
		"alerts.file":                     "false",
		"alerts.path":                     "./logs/alerts.jsonl",
		"auth.jwt_secret":                 "",
		"auth.jwt_public_key_file":        "",
		"auth.cookie":                     "",
		"rate_limit.multiplier":           "1",
		"rate_limit.shadow":               "false",
		"rate_limit.file":                 "temp/rate-limits.json",
		"rate_limit.block_for":            "1h0m0s",
		"redis.url":                       "redis://[FILTERED]@redis-0.redis:6379/2",
		"redis.timeout":                   "50ms",
		"redis.replicas":                  "1",
		"websocket.socketio_path":         "/socket.io/",
		"websocket.origins":               "*.example.com,localhost:*",
		"websocket.handshake_timeout":     "10s",
		"websocket.idle_timeout":          "0s",
		"websocket.max_message_bytes":     "16777216",
		"websocket.compression":           "false",
		"websocket.polling":               "true",
		"websocket.auth":                  "optional",
		"websocket.drain_close_code":      "1001",
		"websocket.max_sockets_per_user":  "10",
		"websocket.max_sockets_per_ip":    "100",
		"websocket.consistency_interval":  "5m0s",
	}
	if len(want) != len(config.Settings()) {
		t.Errorf("test covers %d settings, there are %d", len(want), len(config.Settings()))
	}
	for _, s := range config.Settings() {
		if got, ok := want[s.Key]; !ok || s.Value(c) != got {
			t.Errorf("%s: Value = %q, want %q", s.Key, s.Value(c), got)
		}
	}
	// Empty values.
	c.Proxy.TrustedProxies = nil
	c.StatsToken = ""
	if got := setting(t, "proxy.trusted_proxies").Value(c); got != "" {
		t.Errorf("nil list Value = %q", got)
	}
	if got := setting(t, "stats_token").Value(c); got != "" {
		t.Errorf("empty secret Value = %q", got)
	}
}
