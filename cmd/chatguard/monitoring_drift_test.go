package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"

	"github.com/chatguard/chatguard/internal/config"
)

// Every metric the alert rules and the Grafana dashboard use is one the
// binary registers, with the labels and label values they select on, and
// rate()/increase() only see counters and histogram series.
func TestMonitoringDrift(t *testing.T) {
	t.Parallel()
	exprs := monitoringExprs(t)
	families := driftRegistry(t)

	for _, e := range exprs {
		var used []*dto.MetricFamily // families this expression names
		for _, m := range metricRE.FindAllStringSubmatchIndex(e.expr, -1) {
			name := e.expr[m[2]:m[3]]
			if m[0] > 0 && (isIdent(e.expr[m[0]-1]) || e.expr[m[0]-1] == '$') {
				continue // part of a longer word, or a variable
			}
			f, suffix := lookupFamily(families, name)
			if f == nil {
				if strings.HasPrefix(name, "process_") && runtime.GOOS != "linux" {
					continue // the process collector exports nothing here
				}
				t.Errorf("%s uses %s, which chatguard does not register", e.where, name)
				continue
			}
			used = append(used, f)
			var matchers string
			if m[4] >= 0 {
				matchers = e.expr[m[4]:m[5]]
			}
			checkMatchers(t, e.where, name, f, suffix, matchers)
		}
		for _, m := range rateRE.FindAllStringSubmatch(e.expr, -1) {
			f, suffix := lookupFamily(families, m[2])
			if f != nil && f.GetType() != dto.MetricType_COUNTER && suffix == "" {
				t.Errorf("%s: %s(%s): a %s, not a counter", e.where, m[1], m[2], f.GetType())
			}
		}
		for _, m := range groupingRE.FindAllStringSubmatch(e.expr, -1) {
			for _, l := range strings.Split(m[2], ",") {
				if l = strings.TrimSpace(l); l != "" && !targetLabels[l] && l != "le" && !hasLabel(used, l) {
					t.Errorf("%s: %s (%s): no metric of the expression has the label %q", e.where, m[1], m[2], l)
				}
			}
		}
	}
}

type expression struct{ where, expr string }

// monitoringExprs: every rule expression in rules.yaml, every query and
// variable query of the dashboard.
func monitoringExprs(t *testing.T) []expression {
	t.Helper()
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert, Record, Expr string
			}
		}
	}
	b, err := os.ReadFile("../../deploy/monitoring/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	var out []expression
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, expression{"rules.yaml " + r.Alert + r.Record, r.Expr})
		}
	}
	b, err = os.ReadFile("../../deploy/monitoring/grafana/chatguard-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			where := path
			if title, ok := v["title"].(string); ok {
				where = path + " " + title
			}
			if name, ok := v["name"].(string); ok {
				where = path + " $" + name
			}
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || (k == "query" && v["type"] == "query")) {
					out = append(out, expression{"dashboard" + where, s})
				}
				walk(where, x)
			}
		case []any:
			for _, x := range v {
				walk(path, x)
			}
		}
	}
	walk("", dash)
	if len(out) < 30 {
		t.Fatalf("found only %d expressions in the rules and the dashboard", len(out))
	}
	return out
}

// driftRegistry is the real app's registry after traffic that makes a child
// of every labelled family: requests through a dead upstream on limited
// routes (some over their limit), with a dead Redis.
func driftRegistry(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	cfg := config.Defaults()
	cfg.Upstream = "http://" + closed
	cfg.Redis.URL = config.Secret("redis://" + closed)
	cfg.Limits.File = t.TempDir() + "/rate-limits.json"
	cfg.Memory.Limit = 512 << 20 // as in a pod: the heap is watched
	// Every file on: their write-failure series exist.
	cfg.Log.File, cfg.Log.Dir = true, t.TempDir()
	cfg.Alerts.File, cfg.Alerts.Path = true, t.TempDir()+"/alerts.jsonl"
	a, reg := testApp(t, cfg)
	for i := 0; i < 35; i++ {
		a.srv.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/webhook/twilio", nil))
	}
	a.srv.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/api/messages", nil))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range mfs {
		out[f.GetName()] = f
	}
	return out
}

var (
	// A metric name and its {matchers}; names of chatguard's, Go's and the
	// process's collectors, and up.
	metricRE   = regexp.MustCompile(`((?:chatguard|go|process)_[a-zA-Z0-9_]+|\bup\b)\s*(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	rateRE     = regexp.MustCompile(`\b(rate|irate|increase)\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	groupingRE = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	// Labels Prometheus adds to every scraped series.
	targetLabels = map[string]bool{"namespace": true, "pod": true, "job": true, "instance": true, "container": true, "service": true, "endpoint": true}
)

func isIdent(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// lookupFamily finds name, or the histogram or summary whose _bucket, _sum or
// _count series it is (suffix says which). up is Prometheus's own.
func lookupFamily(families map[string]*dto.MetricFamily, name string) (*dto.MetricFamily, string) {
	if name == "up" {
		return &dto.MetricFamily{Name: &name, Type: dto.MetricType_GAUGE.Enum()}, ""
	}
	if f, ok := families[name]; ok {
		return f, ""
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if f, ok := families[base]; ok && (f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY) {
			if suffix == "_bucket" && f.GetType() != dto.MetricType_HISTOGRAM {
				return nil, ""
			}
			return f, suffix
		}
	}
	return nil, ""
}

// checkMatchers: each label a selector matches on exists on the family, and
// an equality matcher's value is one the binary exports.
func checkMatchers(t *testing.T, where, name string, f *dto.MetricFamily, suffix, matchers string) {
	t.Helper()
	for _, m := range matcherRE.FindAllStringSubmatch(matchers, -1) {
		label, op, value := m[1], m[2], m[3]
		if targetLabels[label] || (label == "le" && suffix == "_bucket") {
			continue
		}
		if !hasLabel([]*dto.MetricFamily{f}, label) {
			t.Errorf("%s: %s has no label %q", where, name, label)
			continue
		}
		if op != "=" || strings.Contains(value, "$") {
			continue
		}
		if !slices.ContainsFunc(f.GetMetric(), func(x *dto.Metric) bool {
			return slices.ContainsFunc(x.GetLabel(), func(p *dto.LabelPair) bool { return p.GetName() == label && p.GetValue() == value })
		}) {
			t.Errorf("%s: %s{%s=%q}: the binary exports no such series", where, name, label, value)
		}
	}
}

func hasLabel(families []*dto.MetricFamily, label string) bool {
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, p := range m.GetLabel() {
				if p.GetName() == label {
					return true
				}
			}
		}
	}
	return false
}
