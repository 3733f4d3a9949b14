package logging_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/logging"
)

func logCategorised(lg *logging.Logger) {
	cat := func(c string) *logrus.Entry { return lg.WithField(logging.FieldCategory, c) }
	cat(logging.CategoryAuth).Info("login ok")
	cat(logging.CategoryAuth).Warn("login failed")
	cat(logging.CategorySecurity).Warn("rate limited")
	cat(logging.CategorySocket).Error("socket dropped")
	cat(logging.CategoryAPI).Info("request")
	cat(logging.CategoryAPI).Info("request")
	cat("marketing").Info("unknown category")        // other
	lg.WithField(logging.FieldCategory, 7).Info("x") // not a string: system
	cat("").Info("empty category")                   // system
	lg.Info("no category")                           // system
	lg.Error("no category error")                    // system
	cat(logging.CategoryAPI).Debug("suppressed at info")
}

func TestCountsMetric(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	lg, _ := newLogger(t, logging.Options{Registerer: reg})
	logCategorised(lg)
	want := `
# HELP chatguard_log_lines_total Log lines written, by level and category.
# TYPE chatguard_log_lines_total counter
chatguard_log_lines_total{category="api",level="error"} 0
chatguard_log_lines_total{category="api",level="info"} 2
chatguard_log_lines_total{category="api",level="warn"} 0
chatguard_log_lines_total{category="auth",level="error"} 0
chatguard_log_lines_total{category="auth",level="info"} 1
chatguard_log_lines_total{category="auth",level="warn"} 1
chatguard_log_lines_total{category="database",level="error"} 0
chatguard_log_lines_total{category="database",level="warn"} 0
chatguard_log_lines_total{category="other",level="info"} 1
chatguard_log_lines_total{category="performance",level="error"} 0
chatguard_log_lines_total{category="performance",level="warn"} 0
chatguard_log_lines_total{category="security",level="error"} 0
chatguard_log_lines_total{category="security",level="warn"} 1
chatguard_log_lines_total{category="socket",level="error"} 1
chatguard_log_lines_total{category="socket",level="warn"} 0
chatguard_log_lines_total{category="system",level="error"} 1
chatguard_log_lines_total{category="system",level="info"} 3
chatguard_log_lines_total{category="system",level="warn"} 0
chatguard_log_lines_total{category="webhook",level="error"} 0
chatguard_log_lines_total{category="webhook",level="warn"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "chatguard_log_lines_total"); err != nil {
		t.Error(err)
	}
	// Warnings and errors of the 8 categories exist at 0 (16), with the
	// info lines of 4 categories.
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 20 {
		t.Errorf("registry holds %d series (%v), want 20", n, err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestSummary(t *testing.T) {
	t.Parallel()
	lg, _ := newLogger(t, logging.Options{})
	if s := lg.Summary(); s["total"] != int64(0) || len(s["byLevel"].(map[string]any)) != 0 {
		t.Errorf("fresh Summary() = %v", s)
	}
	logCategorised(lg)
	s := lg.Summary()
	for k, v := range map[string]any{"total": int64(11), "errors": int64(2), "warnings": int64(2)} {
		if s[k] != v {
			t.Errorf("Summary()[%s] = %#v, want %#v", k, s[k], v)
		}
	}
	wantLevel := map[string]any{"info": int64(7), "warn": int64(2), "error": int64(2)}
	wantCat := map[string]any{"api": int64(2), "auth": int64(2), "security": int64(1), "socket": int64(1), "other": int64(1), "system": int64(4)}
	for name, pair := range map[string][2]map[string]any{"byLevel": {s["byLevel"].(map[string]any), wantLevel}, "byCategory": {s["byCategory"].(map[string]any), wantCat}} {
		got, want := pair[0], pair[1]
		if len(got) != len(want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s[%s] = %#v, want %#v", name, k, got[k], v)
			}
		}
	}
	// Summary does not reset; a snapshot is a copy.
	s["byLevel"].(map[string]any)["info"] = int64(999)
	if again := lg.Summary(); again["total"] != int64(11) || again["byLevel"].(map[string]any)["info"] != int64(7) {
		t.Errorf("second Summary() = %v", again)
	}
}

func TestRegisterTwiceFails(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	newLogger(t, logging.Options{Registerer: reg})
	lg, err := logging.New(logging.Options{Registerer: reg, SummaryInterval: time.Millisecond})
	if err == nil {
		lg.Close()
		t.Fatal("second New on one registry succeeded")
	}
	if !strings.Contains(err.Error(), "logging: register metrics") {
		t.Errorf("error = %v", err)
	}
}

// isSummary reports whether a JSON line is the periodic summary.
func isSummary(m map[string]any) bool {
	msg, _ := m["msg"].(string)
	return strings.HasPrefix(msg, "logging metrics")
}

func TestSummaryLine(t *testing.T) {
	t.Parallel()
	lg, buf := newLogger(t, logging.Options{SummaryInterval: 3 * time.Millisecond})
	const n = 5
	for range n {
		lg.WithField(logging.FieldCategory, logging.CategoryAPI).Info("request")
	}
	lg.WithField(logging.FieldCategory, logging.CategoryAPI).Error("request failed")

	// Every line is counted in exactly one summary: the api counts of all
	// summaries add up to what was logged, however the ticks fell.
	var summaries []map[string]any
	apiIn := func(s map[string]any) int {
		cats, _ := s["byCategory"].(map[string]any)
		v, _ := cats["api"].(float64)
		return int(v)
	}
	eventually(t, "summaries covering every api line", func() bool {
		summaries = summaries[:0]
		total := 0
		for _, m := range lines(t, buf.String()) {
			if isSummary(m) {
				summaries = append(summaries, m)
				total += apiIn(m)
			}
		}
		if total > n+1 {
			t.Fatalf("summaries count %d api lines, %d were logged", total, n+1)
		}
		return total == n+1
	})

	for _, s := range summaries {
		for _, k := range []string{"total", "errors", "warnings", "byLevel", "byCategory"} {
			if _, ok := s[k]; !ok {
				t.Errorf("summary line lacks %s: %v", k, s)
			}
		}
		if s["msg"] != "logging metrics (last 3ms)" || s["category"] != "performance" || s["level"] != "info" {
			t.Errorf("summary line = %v", s)
		}
	}
	// The summaries that follow the one that held our lines count nothing of
	// ours: the counters were reset. At most the previous summary line itself.
	eventually(t, "a later summary", func() bool {
		all := 0
		for _, m := range lines(t, buf.String()) {
			if isSummary(m) {
				all++
			}
		}
		return all > len(summaries)+1
	})
	var after []map[string]any
	for _, m := range lines(t, buf.String()) {
		if isSummary(m) {
			after = append(after, m)
		}
	}
	last := after[len(after)-1]
	if last["total"].(float64) > 1 || last["errors"] != float64(0) {
		t.Errorf("summary after reset = %v, want at most the previous summary line", last)
	}
	if cats := last["byCategory"].(map[string]any); cats["api"] != nil {
		t.Errorf("api lines counted again after a summary: %v", last)
	}
	if s := lg.Summary(); s["total"].(int64) > 1 {
		t.Errorf("Summary() after reset = %v", s)
	}
}

// The hourly line says "last hour", as the seed's does.
func TestSummaryMessageHour(t *testing.T) {
	t.Parallel()
	// Only the message format is checked here: an hour cannot pass in a test.
	if got := logging.HumanIntervalForTest(time.Hour); got != "hour" {
		t.Errorf("humanInterval(1h) = %q", got)
	}
	if got := logging.HumanIntervalForTest(90 * time.Second); got != "1m30s" {
		t.Errorf("humanInterval(90s) = %q", got)
	}
}
