package logging

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/redact"
)

// redactHook replaces secrets in the message and every field before any
// formatter or file sees the line.
type redactHook struct{}

func (redactHook) Levels() []logrus.Level { return logrus.AllLevels }

func (redactHook) Fire(e *logrus.Entry) error {
	e.Message = redact.String(e.Message)
	for k, v := range e.Data {
		if !plainKeys[k] && redact.IsSensitiveKey(k) {
			e.Data[k] = redact.Filtered
			continue
		}
		switch t := v.(type) {
		case int, int64, uint64, float64, bool, nil:
			// Nothing to hide in a number; writing it back would cost a
			// map assignment (three on every access line).
		case string:
			// Written back only when redaction changed it: storing a
			// string in the map boxes it again (one allocation a field,
			// six on every access line).
			if r := redact.String(t); r != t {
				e.Data[k] = r
			}
		case error:
			e.Data[k] = redact.String(t.Error())
		case fmt.Stringer:
			e.Data[k] = redact.String(t.String())
		default:
			e.Data[k] = redact.Value(v)
		}
	}
	return nil
}

// plainKeys are field names chatguard itself writes on every request, each
// one IsSensitiveKey finds harmless: looked up here, the access line's ten
// keys cost a map probe each instead of a scan of the word lists. Their
// values are still redacted.
var plainKeys = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range []string{"requestId", FieldCategory, "method", "path", "route", "status", "duration",
		"bytes", "remoteIp", "code", "upstreamStatus", "aborted", "rateLimit", "retried", "reason"} {
		if !redact.IsSensitiveKey(k) {
			m[k] = true
		}
	}
	return m
}()

var knownCategories = map[string]bool{
	CategoryAuth: true, CategorySecurity: true, CategoryDatabase: true, CategorySocket: true,
	CategoryWebhook: true, CategoryPerformance: true, CategoryAPI: true, CategorySystem: true,
}

// categoryOf is the line's category for counting: a bounded set.
func categoryOf(e *logrus.Entry) string {
	c, _ := e.Data[FieldCategory].(string)
	if c == "" {
		return CategorySystem
	}
	if !knownCategories[c] {
		return "other"
	}
	return c
}

// countHook counts lines by level and category, as a metric and for the summary.
type countHook struct {
	lines *prometheus.CounterVec

	mu         sync.Mutex
	byLevel    map[string]int64
	byCategory map[string]int64
}

func newCountHook(reg prometheus.Registerer) (*countHook, error) {
	h := &countHook{
		lines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_log_lines_total",
			Help: "Log lines written, by level and category.",
		}, []string{"level", "category"}),
		byLevel:    map[string]int64{},
		byCategory: map[string]int64{},
	}
	// Warnings and errors of every category exist at 0 from the start, so
	// that rate() and an alert on them see a rise from 0, not a series
	// appearing (QA: the counters showed only at their first line).
	for c := range knownCategories {
		for _, l := range []logrus.Level{logrus.WarnLevel, logrus.ErrorLevel} {
			h.lines.WithLabelValues(levelName(l), c)
		}
	}
	if reg != nil {
		if err := reg.Register(h.lines); err != nil {
			return nil, fmt.Errorf("logging: register metrics: %w", err)
		}
	}
	return h, nil
}

func (h *countHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *countHook) Fire(e *logrus.Entry) error {
	lvl, cat := levelName(e.Level), categoryOf(e)
	h.lines.WithLabelValues(lvl, cat).Inc()
	h.mu.Lock()
	h.byLevel[lvl]++
	h.byCategory[cat]++
	h.mu.Unlock()
	return nil
}

// snapshot returns the seed's summary shape; reset starts a new period.
func (h *countHook) snapshot(reset bool) map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	var total int64
	byLevel := make(map[string]any, len(h.byLevel))
	for k, v := range h.byLevel {
		byLevel[k] = v
		total += v
	}
	byCategory := make(map[string]any, len(h.byCategory))
	for k, v := range h.byCategory {
		byCategory[k] = v
	}
	out := map[string]any{
		"total":      total,
		"errors":     h.byLevel["error"],
		"warnings":   h.byLevel["warn"],
		"byLevel":    byLevel,
		"byCategory": byCategory,
	}
	if reset {
		h.byLevel = map[string]int64{}
		h.byCategory = map[string]int64{}
	}
	return out
}
