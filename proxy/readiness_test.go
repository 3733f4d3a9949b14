package proxy

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/config"
)

// With proxy.ready_on_upstream, /readyz is 503 while the upstream does not
// accept connections (an app still starting, or dead), and 200 once it
// does; without it, /readyz says only whether chatguard serves (QA: a pod
// whose app had no probe of its own took traffic while the app booted, and
// answered it 502).
func TestReadyzFollowsTheUpstream(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there yet
	readyz := func(h *harness) (int, map[string]any) {
		t.Helper()
		resp, err := h.client.Get(h.admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var env struct {
			Error map[string]any `json:"error"`
		}
		_ = json.Unmarshal(b, &env)
		return resp.StatusCode, env.Error // nil for a 200
	}

	plain := start(t, "http://"+addr, nil)
	if code, body := readyz(plain); code != 200 {
		t.Fatalf("without ready_on_upstream: %d %v, want 200 with no upstream", code, body)
	}

	h := start(t, "http://"+addr, func(c *config.Config) { c.Proxy.ReadyOnUpstream = true })
	code, body := readyz(h)
	details, _ := body["details"].(map[string]any)
	if code != 503 || body["code"] != "SERVICE_UNAVAILABLE" || details["status"] != "upstream_unreachable" || details["reason"] != "refused" {
		t.Fatalf("upstream down: %d %v, want 503 upstream_unreachable (refused)", code, body)
	}
	// The gauge says what /readyz says (QA: it stayed 1, and the not-ready
	// alert, chatguard_ready == 0, never fired for a dead app).
	if v := metricValue(t, h, "chatguard_ready"); v != 0 {
		t.Errorf("upstream down: chatguard_ready %v, want 0", v)
	}
	if v := metricValue(t, plain, "chatguard_ready"); v != 1 {
		t.Errorf("without ready_on_upstream: chatguard_ready %v, want 1", v)
	}
	app, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	go func() { _ = srv.Serve(app) }()
	t.Cleanup(func() { srv.Close() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		if code, _ = readyz(h); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream listens: /readyz still %d", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := metricValue(t, h, "chatguard_ready"); v != 1 {
		t.Errorf("upstream up: chatguard_ready %v, want 1", v)
	}
	// The log says when the pod went unready and ready again, once each
	// (QA: thousands of 502 lines and nothing that said when).
	var down, up int
	for _, l := range h.logs.lines(t) {
		switch l["msg"] {
		case "not ready: the app does not accept connections (proxy.ready_on_upstream)":
			if l["reason"] != "refused" || l["level"] != "warning" {
				t.Errorf("not-ready line: %v", l)
			}
			down++
		case "ready again: the app accepts connections":
			up++
		}
	}
	if down != 1 || up != 1 {
		t.Errorf("%d not-ready and %d ready-again lines, want 1 each", down, up)
	}
	// Draining still wins.
	h.srv.Drain(t.Context())
	if code, body := readyz(h); code != 503 || body == nil || body["details"].(map[string]any)["status"] != "draining" {
		t.Fatalf("draining: %d %v", code, body)
	}
	if v := metricValue(t, h, "chatguard_ready"); v != 0 {
		t.Errorf("draining: chatguard_ready %v, want 0", v)
	}
}
