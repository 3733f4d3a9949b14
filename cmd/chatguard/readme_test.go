package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatguard/chatguard/internal/buildinfo"
	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/metrics"
)

// The README's configuration table must list every setting with its real
// environment variable, flag and default.
func TestREADMEConfigurationTable(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	def := config.Defaults()
	for _, s := range config.Settings() {
		v := "`" + s.Value(def) + "`"
		if s.Value(def) == "" {
			v = "(empty)"
		}
		row := fmt.Sprintf("| `%s` | `%s` | `--%s` | %s |", s.Key, s.Env, s.Flag, v)
		if !strings.Contains(readme, row) {
			t.Errorf("README lacks the row starting %s", row)
		}
	}
}

// Every metric the README lists is one the binary exports.
func TestREADMEMetricsExist(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile("`(chatguard_[a-z_]+)`").FindAllStringSubmatch(string(b), -1)
	if len(names) < 15 {
		t.Fatalf("found only %d metric names in the README", len(names))
	}
	have := driftRegistry(t) // every labelled family has a child
	for _, n := range names {
		if have[n[1]] == nil {
			t.Errorf("README lists %s, the registry does not have it", n[1])
		}
	}
}

// With a Redis that is not there, the app still limits — from memory — and
// never answers 5xx for it.
func TestDeadRedisFallsBackToMemory(t *testing.T) {
	t.Parallel()
	cfg := config.Defaults()
	cfg.Redis.URL = "redis://127.0.0.1:1"
	cfg.Upstream = "http://127.0.0.1:1"
	cfg.Limits.File = "" // not in the source tree
	a, _ := testApp(t, cfg)
	limited := 0
	for i := 0; i < 35; i++ {
		rec := httptest.NewRecorder()
		a.srv.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/webhook/twilio", nil))
		switch rec.Code {
		case http.StatusTooManyRequests:
			limited++
		case http.StatusBadGateway: // the upstream is not there either: allowed through
		default:
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if limited != 5 {
		t.Fatalf("%d of 35 limited, want 5 (30 per minute)", limited)
	}
	rec := httptest.NewRecorder()
	cfg.StatsToken = "tok-0123456789abcdef"
	req := httptest.NewRequest(http.MethodGet, "/api/internal/stats", nil)
	req.Header.Set("Authorization", "Bearer tok-0123456789abcdef")
	a.srv.ServeHTTP(rec, req)
	if !strings.Contains(rec.Body.String(), `"rateLimiting":{"persistence":"off","rejectedRequests24h":5,"replicas":1,"store":"fallback"}`) {
		t.Fatalf("stats: %s", rec.Body)
	}
}

// A client that used its 3 login attempts is still limited after a restart.
func TestLoginLimitSurvivesRestart(t *testing.T) {
	t.Parallel()
	file := t.TempDir() + "/temp/rate-limits.json"
	login := func(a *app) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/api/auth/login", strings.NewReader(`{"email":"ana@example.com","password":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		a.srv.ServeHTTP(rec, req)
		return rec.Code
	}
	run := func() *app {
		cfg := config.Defaults()
		cfg.Upstream = "http://127.0.0.1:1"
		cfg.Limits.File = file
		a, _ := testApp(t, cfg)
		return a
	}
	first := run()
	for i := 0; i < 3; i++ {
		if code := login(first); code == http.StatusTooManyRequests {
			t.Fatalf("attempt %d limited", i+1)
		}
	}
	first.Close() // saves
	second := run()
	defer second.Close()
	if code := login(second); code != http.StatusTooManyRequests {
		t.Fatalf("4th attempt after a restart: %d", code)
	}
}

// testApp builds what serve runs on its own registry, closed at cleanup.
func testApp(t *testing.T, cfg *config.Config) (*app, *prometheus.Registry) {
	t.Helper()
	a, reg, _ := testAppLogging(t, cfg, io.Discard)
	return a, reg
}

// testAppLogging is testApp with its log written to out.
func testAppLogging(t *testing.T, cfg *config.Config, out io.Writer) (*app, *prometheus.Registry, *logging.Logger) {
	t.Helper()
	reg := metrics.NewRegistry(buildinfo.Get())
	logger, err := logging.New(logging.Options{Out: out, Registerer: reg, File: cfg.Log.File, Dir: cfg.Log.Dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logger.Close() })
	a, err := newApp(cfg, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close) // idempotent: the restart test closes its first app itself
	return a, reg, logger
}

// A Redis that does not answer at start puts the store in fallback before
// the first request, and the log says why: the enforcing line and the mode
// gauge used to say redis until three requests had each waited for the
// deadline.
func TestRedisDownAtStartIsSaid(t *testing.T) {
	t.Parallel()
	cfg := config.Defaults()
	cfg.Redis.URL = "redis://127.0.0.1:1"
	cfg.Upstream = "http://127.0.0.1:1"
	cfg.Limits.File = ""
	var out syncBuffer
	_, reg, logger := testAppLogging(t, cfg, &out)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`# HELP chatguard_ratelimit_store_mode 1 for the rate-limit store's current mode (redis, fallback, memory-only), 0 for the others.
# TYPE chatguard_ratelimit_store_mode gauge
chatguard_ratelimit_store_mode{mode="fallback"} 1
chatguard_ratelimit_store_mode{mode="memory-only"} 0
chatguard_ratelimit_store_mode{mode="redis"} 0
`), "chatguard_ratelimit_store_mode"); err != nil {
		t.Fatal(err)
	}
	logger.Flush()
	if s := out.String(); !strings.Contains(s, "rate-limit store switched") || !strings.Contains(s, "redis does not answer at start") {
		t.Fatalf("log:\n%s", s)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's writer and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
