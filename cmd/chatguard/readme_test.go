package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	cfg := config.Defaults()
	cfg.Upstream = "http://" + closed
	reg := metrics.NewRegistry(buildinfo.Get())
	logger, err := logging.New(logging.Options{Out: io.Discard, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer logger.Close()
	a, err := newApp(cfg, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// One failed request, so that every labelled family has a child.
	a.srv.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/api/messages", nil))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range families {
		have[f.GetName()] = true
	}
	for _, n := range names {
		if !have[n[1]] {
			t.Errorf("README lists %s, the registry does not have it", n[1])
		}
	}
}
