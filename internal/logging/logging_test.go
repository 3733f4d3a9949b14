package logging_test

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/logging"
)

var timeRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{2}:\d{2})$`)

func TestJSONOutput(t *testing.T) {
	t.Parallel()
	lg, buf := newLogger(t, logging.Options{Level: "debug"})
	at := time.Date(2026, 11, 27, 9, 29, 25, 40_000_000, time.UTC)

	lg.WithTime(at).WithFields(logrus.Fields{"requestId": "req_1_abc", "status": 201, "ok": true}).Info("request done")
	lg.WithField(logging.FieldCategory, logging.CategoryAuth).Warn("login failed")
	lg.WithError(errors.New("boom")).Error("upstream broke")
	lg.Debugf("debug %d", 42)

	got := lines(t, buf.String())
	want := []map[string]any{
		{"time": "2026-11-27T09:29:25.040Z", "level": "info", "msg": "request done", "requestId": "req_1_abc", "status": float64(201), "ok": true},
		{"level": "warning", "msg": "login failed", "category": "auth"},
		{"level": "error", "msg": "upstream broke", "error": "boom"},
		{"level": "debug", "msg": "debug 42"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), buf)
	}
	for i, w := range want {
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("line %d: %s = %#v, want %#v", i, k, got[i][k], v)
			}
		}
		ts, _ := got[i]["time"].(string)
		if !timeRE.MatchString(ts) {
			t.Errorf("line %d: time %q is not like 2026-11-27T09:29:25.040Z", i, ts)
		}
		if _, err := time.Parse(logging.TimeFormat, ts); err != nil {
			t.Errorf("line %d: time %q does not parse with TimeFormat: %v", i, ts, err)
		}
		if _, ok := got[i]["message"]; ok {
			t.Errorf("line %d: message is under \"message\", want \"msg\"", i)
		}
	}
}

// The seed (Winston) and the error envelope write UTC timestamps ending in Z;
// a log line's time is the wall clock in whatever zone the process runs in.
func TestJSONTimeIsUTC(t *testing.T) {
	t.Parallel()
	lg, buf := newLogger(t, logging.Options{})
	at := time.Date(2026, 11, 27, 10, 29, 25, 40_000_000, time.FixedZone("CET", 3600))
	lg.WithTime(at).Info("x")
	if got := lines(t, buf.String())[0]["time"]; got != "2026-11-27T09:29:25.040Z" {
		t.Errorf("time = %v, want 2026-11-27T09:29:25.040Z", got)
	}
}

func TestDevelopmentWritesText(t *testing.T) {
	t.Parallel()
	lg, buf := newLogger(t, logging.Options{Development: true})
	lg.WithField("requestId", "req_1_abc").Info("hello there")
	out := buf.String()
	if json.Valid([]byte(strings.TrimSpace(out))) {
		t.Fatalf("development output is JSON: %s", out)
	}
	for _, w := range []string{"INFO", "hello there", "requestId", "req_1_abc"} {
		if !strings.Contains(out, w) {
			t.Errorf("development output %q lacks %q", out, w)
		}
	}
	if !regexp.MustCompile(`\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}`).MatchString(out) {
		t.Errorf("development output %q has no full timestamp", out)
	}
}

func TestLevels(t *testing.T) {
	t.Parallel()
	all := []logrus.Level{logrus.TraceLevel, logrus.DebugLevel, logrus.InfoLevel, logrus.WarnLevel, logrus.ErrorLevel}
	tests := []struct {
		level string
		want  []string // levels written, as the JSON spells them
	}{
		{"", []string{"info", "warning", "error"}},
		{"info", []string{"info", "warning", "error"}},
		{"warn", []string{"warning", "error"}},
		{"WARN", []string{"warning", "error"}},
		{"warning", []string{"warning", "error"}},
		{"error", []string{"error"}},
		{"debug", []string{"debug", "info", "warning", "error"}},
		{"trace", []string{"trace", "debug", "info", "warning", "error"}},
	}
	for _, tt := range tests {
		t.Run("level="+tt.level, func(t *testing.T) {
			t.Parallel()
			lg, buf := newLogger(t, logging.Options{Level: tt.level})
			for _, l := range all {
				lg.Log(l, "line at "+l.String())
			}
			var got []string
			for _, m := range lines(t, buf.String()) {
				got = append(got, m["level"].(string))
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("levels written = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestInvalidLevel(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"verbose", "warnings", " info", "5"} {
		t.Run(level, func(t *testing.T) {
			t.Parallel()
			lg, err := logging.New(logging.Options{Level: level, SummaryInterval: time.Millisecond})
			if err == nil {
				lg.Close()
				t.Fatalf("New(Level %q) succeeded, want an error", level)
			}
			if lg != nil || !strings.HasPrefix(err.Error(), "logging: ") {
				t.Errorf("New(Level %q) = %v, %v; want nil and a logging: error", level, lg, err)
			}
		})
	}
}

func TestCloseIsIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	lg, err := logging.New(logging.Options{Out: &syncBuffer{}, SummaryInterval: time.Millisecond, File: true, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	lg.Info("before close")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = lg.Close()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Close #%d error = %v", i, err)
		}
	}
	if err := lg.Close(); err != nil {
		t.Errorf("Close after Close error = %v", err)
	}
}

// Close on a logger without summary or files returns at once.
func TestCloseWithoutGoroutine(t *testing.T) {
	t.Parallel()
	lg, err := logging.New(logging.Options{Out: &syncBuffer{}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := lg.Close(); err != nil {
			t.Errorf("Close error = %v", err)
		}
	}
}
