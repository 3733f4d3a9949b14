package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// go-redis logs a pool that cannot dial by itself; in production that line
// must be one more JSON line (level warning, category database), never
// go-redis's default plain text on stderr, and never show the password.
func TestRedisDialFailureIsLoggedAsJSON(t *testing.T) {
	up, _, release := blockingUpstream(t)
	defer close(release)
	const pw = "redis-pw-hunter2"
	addr := freeAddr(t)
	p := startProcess(t, up.URL, "REDIS_URL=redis://:"+pw+"@"+addr+"/0", "CHATGUARD_LOG_FLUSH_INTERVAL=0s")
	// The start line says which Redis the limits use, without credentials.
	p.waitLog(`"msg":"enforcing"`)
	if !strings.Contains(p.output(), `"redis":"node `+addr+`"`) {
		t.Errorf("the enforcing line does not name the Redis (node %s):\n%s", addr, p.output())
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.output(), "failed to dial") {
		if time.Now().After(deadline) {
			t.Fatalf("no dial failure was logged:\n%s", p.output())
		}
		// A limited route: its decision goes to Redis, which is not there.
		resp, err := http.Post("http://"+p.public+"/webhook/twilio", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		time.Sleep(50 * time.Millisecond)
	}
	out := p.output()
	if strings.Contains(out, pw) {
		t.Errorf("the Redis password is in the log:\n%s", out)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var line struct{ Level, Msg, Category string }
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Errorf("not a JSON line: %s", l)
			continue
		}
		if strings.Contains(line.Msg, "failed to dial") && (line.Level != "warning" || line.Category != "database" || !strings.HasPrefix(line.Msg, "redis: connection pool: failed to dial")) {
			t.Errorf("dial failure logged as %+v, want level warning, category database", line)
		}
	}
}
