package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/config"
)

// accessLine is the access line of path, or nil while there is none.
func accessLine(t *testing.T, h *harness, path string) map[string]any {
	t.Helper()
	for _, l := range h.logs.lines(t) {
		if l["msg"] == "request completed" && l["path"] == path {
			return l
		}
	}
	return nil
}

// An upstream that dies in the middle of a 200 body: the client sees the
// connection cut (as the upstream did), and the access line and the metrics
// say the upstream failed, not that the request succeeded.
func TestUpstreamDyingMidBodyIsAnUpstreamError(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	h := start(t, up.URL, nil)
	resp, err := h.client.Get(h.url + "/cut")
	if err != nil {
		// The status line and what came of the body reach the client, as
		// from nginx; a body under 4 KiB used to stay in net/http's buffer,
		// and the client saw the connection close with no response at all.
		t.Fatalf("no response: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatal("the client read a whole body from an upstream that died mid-body")
	}
	if resp.StatusCode != 200 || string(got) != "partial" || resp.Header.Get("X-Request-ID") == "" {
		t.Errorf("client got %d %q (request id %q), want 200 and the 7 bytes that came", resp.StatusCode, got, resp.Header.Get("X-Request-ID"))
	}
	var line map[string]any
	waitFor(t, "access line", func() bool { line = accessLine(t, h, "/cut"); return line != nil })
	if line["reason"] != "eof" || line["aborted"] != true || line["level"] != "warning" {
		t.Errorf("access line %v: want reason eof, aborted, level warning", line)
	}
	if v := metricValue(t, h, `chatguard_upstream_errors_total{code="UPSTREAM_UNAVAILABLE",reason="eof"}`); v != 1 {
		t.Errorf("upstream errors{eof} = %v, want 1", v)
	}
	for _, l := range h.logs.lines(t) { // every line an SRE sees about it leads back to the request
		if (l["level"] == "warning" || l["level"] == "error") && l["requestId"] == nil {
			t.Errorf("a %v line without requestId: %v", l["level"], l)
		}
	}
}

// startErrorBody sends a 500 whose JSON body (100 bytes announced) has only
// begun: the rest stalls or never comes.
func startErrorBody(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "100")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = io.WriteString(w, `{"message":`)
	w.(http.Flusher).Flush()
}

// A client that leaves while chatguard reads a stalled error body is a 499,
// not a 500 nobody received, and no envelope is counted.
func TestClientLeavingDuringErrorBodyIs499(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		startErrorBody(w)
		select { // stall until the test ends
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	h := start(t, up.URL, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/stall", nil)
	if resp, err := h.client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("got %d before the client gave up", resp.StatusCode)
	}
	var line map[string]any
	waitFor(t, "access line", func() bool { line = accessLine(t, h, "/stall"); return line != nil })
	if line["status"] != float64(499) || line["level"] != "info" {
		t.Errorf("access line %v: want status 499 at level info", line)
	}
	if v := metricValue(t, h, `chatguard_envelopes_total{code="INTERNAL_ERROR",source="upstream"}`); v != 0 {
		t.Errorf("%v envelopes counted for a client that left", v)
	}
}

// A client that leaves before the answer is no failure of the upstream's
// with an envelope code: it counts under code "none", whether it left during
// a stalled error body or before the headers (QA: both showed as
// SERVICE_UNAVAILABLE, false 503s on a dashboard split by code).
func TestClientLeavingCountsUnderNoCode(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall" {
			startErrorBody(w)
		}
		select { // stall until the client leaves
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	h := start(t, up.URL, nil)
	for _, path := range []string{"/stall", "/slow-headers"} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+path, nil)
		if resp, err := h.client.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("%s: got %d before the client gave up", path, resp.StatusCode)
		}
		cancel()
		waitFor(t, "access line", func() bool { return accessLine(t, h, path) != nil })
	}
	waitMetric(t, h, `chatguard_upstream_errors_total{code="none",reason="client_closed"}`, 2)
	for _, l := range strings.Split(scrape(t, h), "\n") {
		if strings.Contains(l, `reason="client_closed"`) && !strings.Contains(l, `code="none"`) && !strings.HasPrefix(l, "#") {
			t.Errorf("client_closed under an envelope code: %s", l)
		}
	}
}

// A client that stops reading a long body and goes away is a 499 too, and
// no upstream error.
func TestClientLeavingMidBodyIs499(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		chunk := strings.Repeat("x", 64<<10)
		for r.Context().Err() == nil {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	})
	h := start(t, up.URL, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(conn, "GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
	buf := make([]byte, 4096)
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	var line map[string]any
	waitFor(t, "access line", func() bool { line = accessLine(t, h, "/long"); return line != nil })
	if line["status"] != float64(499) || line["aborted"] != nil {
		t.Errorf("access line %v: want status 499, not aborted by the upstream", line)
	}
	for _, reason := range []string{"eof", "reset", "other"} {
		if v := metricValue(t, h, `chatguard_upstream_errors_total{code="UPSTREAM_UNAVAILABLE",reason="`+reason+`"}`); v > 0 {
			t.Errorf("counted as an upstream error (%s): %v", reason, v)
		}
	}
}

// A response the upstream sent without a Content-Type reaches the client
// without one: chatguard does not sniff and add its own guess.
func TestNoContentTypeIsNotInvented(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil
		_, _ = io.WriteString(w, "<p>plain bytes</p>")
	})
	h := start(t, up.URL, nil)
	resp, body := h.get("/raw")
	if string(body) != "<p>plain bytes</p>" {
		t.Fatalf("body %q", body)
	}
	if ct, ok := resp.Header["Content-Type"]; ok {
		t.Errorf("Content-Type %q added", ct)
	}
}

// An error status whose body stalls or is cut: the client gets the envelope
// of the status, and the access line and the metrics say the upstream
// failed, and how.
func TestErrorBodyThatFailsIsAnUpstreamError(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		startErrorBody(w)
		if r.URL.Path == "/cut" {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		select { // stall
		case <-release:
		case <-r.Context().Done():
		}
	})
	h := start(t, up.URL, func(c *config.Config) { c.Proxy.ResponseHeaderTimeout = 300 * time.Millisecond })
	for path, reason := range map[string]string{"/stall": "timeout", "/cut": "eof"} {
		resp, body := h.get(path)
		if env := envelope(t, resp, body); resp.StatusCode != 500 || env["code"] != "INTERNAL_ERROR" {
			t.Errorf("%s: %d %v, want the 500 envelope", path, resp.StatusCode, env)
		}
		var line map[string]any
		waitFor(t, "access line", func() bool { line = accessLine(t, h, path); return line != nil })
		if line["reason"] != reason || line["status"] != float64(500) {
			t.Errorf("%s: access line %v, want status 500, reason %s", path, line, reason)
		}
		if v := metricValue(t, h, `chatguard_upstream_errors_total{code="INTERNAL_ERROR",reason="`+reason+`"}`); v != 1 {
			t.Errorf("%s: upstream errors{INTERNAL_ERROR,%s} = %v, want 1", path, reason, v)
		}
	}
}

// The app's own envelopes, passed on, are counted from 0 like the others:
// an alert or a rate() over source="passthrough" sees a rise, not a series
// appearing at its first envelope.
func TestPassthroughEnvelopeSeriesAtZero(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	h := start(t, up.URL, nil)
	for _, s := range []string{
		`chatguard_envelopes_total{code="NOT_FOUND",source="passthrough"}`,
		`chatguard_envelopes_total{code="OTHER",source="passthrough"}`,
		`chatguard_log_lines_total{category="database",level="error"}`,
	} {
		if v := metricValue(t, h, s); v != 0 {
			t.Errorf("%s = %v, want 0 before any", s, v)
		}
	}
}
