package limiter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// go-redis's own lines become one JSON line each, at level warning, with
// the entry's fields, one "redis: " prefix, and no trace of the password
// (as given, or as the URL escapes it).
func TestRedisLoggerWritesJSONWithoutThePassword(t *testing.T) {
	t.Parallel()
	const pw = "p@ss:w0rd/hunter2"
	tests := []struct {
		name, url, format string
		args              []any
		want              string
	}{
		{"dial failure", "redis://chatguard:p%40ss%3Aw0rd%2Fhunter2@127.0.0.1:6390/0",
			"redis: connection pool: failed to dial after %d attempts: %v", []any{5, errors.New("dial tcp 127.0.0.1:6390: connect: connection refused")},
			"redis: connection pool: failed to dial after 5 attempts: dial tcp 127.0.0.1:6390: connect: connection refused"},
		{"password in the text", "redis://:p%40ss%3Aw0rd%2Fhunter2@redis:6379",
			"redis: connection pool: failed to process new connection by hook: err=%v", []any{errors.New("AUTH " + pw + " refused; url redis://:p%40ss%3Aw0rd%2Fhunter2@redis:6379")},
			"redis: connection pool: failed to process new connection by hook: err=AUTH [FILTERED] refused; url redis://:[FILTERED]@redis:6379"},
		{"no prefix of its own", "rediss://redis.internal:6380",
			"addIdleConn panic: %+v", []any{"boom"}, "redis: addIdleConn panic: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			l := logrus.New()
			l.SetOutput(&out)
			l.SetFormatter(&logrus.JSONFormatter{})
			newRedisLogger(l.WithField("category", "database"), tt.url).Printf(context.Background(), tt.format, tt.args...)
			if strings.Contains(out.String(), "hunter2") || strings.Contains(out.String(), "p%40ss") {
				t.Errorf("the password is in the log: %s", out.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			var line struct{ Level, Msg, Category string }
			if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &line) != nil {
				t.Fatalf("want one JSON line, got %q", out.String())
			}
			if line.Level != "warning" || line.Category != "database" || line.Msg != tt.want {
				t.Errorf("got %+v, want level warning, category database, msg %q", line, tt.want)
			}
		})
	}
}

// A dead Redis makes go-redis's pool log a failed dial every second or so:
// one kind of line is written once a minute, with the count left out.
func TestRedisLoggerWritesARepeatedLineOnceAMinute(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	l := logrus.New()
	l.SetOutput(&out)
	l.SetFormatter(&logrus.JSONFormatter{})
	clk := newTestClock()
	rl := newRedisLogger(l.WithField("category", "database"), "redis://127.0.0.1:6390")
	rl.now = clk.Now
	dial := "redis: connection pool: failed to dial after %d attempts: %v"
	for range 30 {
		rl.Printf(context.Background(), dial, 1, errors.New("connection refused"))
		clk.Advance(time.Second)
	}
	rl.Printf(context.Background(), "redis: other %s", "line") // another kind: written
	clk.Advance(30 * time.Second)
	rl.Printf(context.Background(), dial, 1, errors.New("connection refused"))

	var lines []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3: %s", len(lines), out.String())
	}
	if lines[1]["msg"] != "redis: other line" || lines[2]["repeatedSinceLast"] != float64(29) {
		t.Errorf("lines: %v", lines)
	}
}
