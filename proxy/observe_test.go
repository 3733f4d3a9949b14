package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/config"
)

// scrape returns the admin listener's /metrics text.
func scrape(t *testing.T, h *harness) string {
	t.Helper()
	resp, err := h.client.Get(h.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestRequestIDs(t *testing.T) {
	t.Parallel()
	seen := make(chan string, 10)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("X-Request-ID")
		if r.URL.Path == "/fail" {
			w.WriteHeader(400)
		}
	})
	h := start(t, up.URL, nil)
	generated := regexp.MustCompile(`^req_\d{13}_[0-9a-z]{9}$`)
	tests := []struct {
		name   string
		header []string
		want   func(string) bool
	}{
		{"valid kept", []string{"X-Request-ID", "abc-123._X"}, func(id string) bool { return id == "abc-123._X" }},
		{"invalid replaced", []string{"X-Request-ID", "bad id<script>"}, generated.MatchString},
		{"too long replaced", []string{"X-Request-ID", strings.Repeat("a", 129)}, generated.MatchString},
		{"traceparent", []string{"Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, func(id string) bool { return id == "4bf92f3577b34da6a3ce929d0e0e4736" }},
		{"bad traceparent", []string{"Traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, generated.MatchString},
		{"none", nil, generated.MatchString},
	}
	for _, tc := range tests {
		for _, path := range []string{"/ok", "/fail"} {
			resp, body := h.get(path, tc.header...)
			id := resp.Header.Get("X-Request-ID")
			if !tc.want(id) {
				t.Errorf("%s %s: id %q", tc.name, path, id)
			}
			if up := <-seen; up != id {
				t.Errorf("%s: upstream saw %q, client %q", tc.name, up, id)
			}
			if path == "/fail" {
				envelope(t, resp, body) // checks requestId == header
			}
			found := false
			for _, l := range h.logs.lines(t) {
				if l["requestId"] == id && l["msg"] == "request completed" {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: no access line with requestId %q", tc.name, id)
			}
		}
	}
}

func TestLogsCarryNoSecrets(t *testing.T) {
	t.Parallel()
	const (
		bearer   = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1QHguY28ifQ.Zm9vYmFyYmF6cXV4"
		queryTok = "QueryT0kenZZ9"
		password = "Hunter2Pass!"
	)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		_, _ = w.Write([]byte(`{"errors":[{"type":"field","value":"` + password + `","msg":"password is weak","path":"password","location":"body"}],"password":"` + password + `"}`))
	})
	h := start(t, up.URL, func(c *config.Config) { c.Log.Level = "debug"; c.Env = "development" })
	req, _ := http.NewRequest(http.MethodPost, h.url+"/api/auth/login?token="+queryTok+"&x=1", strings.NewReader(`{"email":"a@b.co","password":"`+password+`"}`))
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, body := h.do(req)
	env := envelope(t, resp, body)
	if env["code"] != "VALIDATION_ERROR" {
		t.Fatalf("code %v", env["code"])
	}
	if strings.Contains(string(body), password) {
		t.Errorf("password echoed to the client: %s", body)
	}
	logs := h.logs.String()
	for _, secret := range []string{bearer, queryTok, password} {
		if strings.Contains(logs, secret) {
			t.Errorf("secret %q in logs:\n%s", secret, logs)
		}
	}
	if !strings.Contains(logs, "token=[FILTERED]&x=1") {
		t.Errorf("redacted query not logged as expected:\n%s", logs)
	}
}

func TestAccessLogAndMetrics(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("hello")) })
	h := start(t, up.URL, nil)
	h.get("/api/messages/42")
	h.get("/api/messages")
	h.get("/elsewhere")
	req, _ := http.NewRequest(http.MethodPost, h.url+"/api/auth/login", nil)
	h.do(req)

	line := accessLine(t, h, "/api/messages/42")
	if line == nil {
		t.Fatalf("no access line:\n%s", h.logs.String())
	}
	for _, k := range []string{"time", "level", "msg", "requestId", "category", "method", "path", "route", "status", "duration", "bytes", "remoteIp"} {
		if _, ok := line[k]; !ok {
			t.Errorf("access line lacks %q: %v", k, line)
		}
	}
	if line["route"] != "messages" || line["status"] != float64(200) || line["bytes"] != float64(5) || line["category"] != "api" || line["remoteIp"] != "127.0.0.1" {
		t.Errorf("access line = %v", line)
	}
	m := scrape(t, h)
	for _, want := range []string{
		`chatguard_http_requests_total{route="messages",status_class="2xx"} 2`,
		`chatguard_http_requests_total{route="other",status_class="2xx"} 1`,
		`chatguard_http_requests_total{route="auth_login",status_class="2xx"} 1`,
		`chatguard_http_request_duration_seconds_count{route="messages"} 2`,
		`chatguard_log_lines_total{category="api",level="info"}`,
		`chatguard_build_info{`,
		`chatguard_ready 1`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestEventStreamIsNotBuffered(t *testing.T) {
	t.Parallel()
	next := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		if r.URL.Path == "/chunked" {
			w.Header().Set("Content-Type", "application/x-ndjson")
		}
		rc := http.NewResponseController(w)
		for i := 0; i < 3; i++ {
			_, _ = io.WriteString(w, "data: event\n\n")
			_ = rc.Flush()
			select {
			case <-next: // the test read this event through the proxy
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Second):
				return
			}
		}
	})
	h := start(t, up.URL, nil)
	for _, path := range []string{"/events", "/chunked"} {
		resp, err := h.client.Get(h.url + path)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		for i := 0; i < 3; i++ {
			line, err := br.ReadString('\n')
			if err != nil || line != "data: event\n" {
				t.Fatalf("%s event %d: %q %v", path, i, line, err)
			}
			_, _ = br.ReadString('\n')
			next <- struct{}{} // only now may the upstream send the next one
		}
		resp.Body.Close()
	}
}

func TestErrorEventStreamUntouched(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(503)
		_, _ = io.WriteString(w, "retry: 1000\n\n")
	})
	h := start(t, up.URL, nil)
	resp, body := h.get("/")
	if resp.StatusCode != 503 || string(body) != "retry: 1000\n\n" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

func TestForwardedHeaders(t *testing.T) {
	t.Parallel()
	got := make(chan http.Header, 4)
	hosts := make(chan string, 4)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone(); hosts <- r.Host })
	untrusted := start(t, up.URL, nil)
	trusted := start(t, up.URL, func(c *config.Config) { c.Proxy.TrustedProxies = []string{"127.0.0.0/8", "10.0.0.0/8"} })
	spoof := []string{"X-Forwarded-For", "203.0.113.7, 10.1.2.3", "X-Forwarded-Proto", "https", "X-Forwarded-Host", "chat.example", "X-Real-IP", "6.6.6.6",
		// The rest of the family and the client-address headers Node's
		// request-ip reads first (QA: these reached the app as sent).
		"X-Forwarded-Port", "443", "X-Forwarded-Prefix", "/admin", "X-Forwarded-Ssl", "on", "X-Forwarded", "for=6.6.6.6",
		"X-Client-IP", "6.6.6.6", "True-Client-IP", "6.6.6.6", "CF-Connecting-IP", "6.6.6.6", "Forwarded-For", "6.6.6.6",
		"Forwarded", "for=203.0.113.7;proto=https",
		// Those other frameworks and gateways read (QA).
		"Client-IP", "6.6.6.6", "X-Remote-IP", "6.6.6.6", "X-Originating-IP", "6.6.6.6", "WL-Proxy-Client-IP", "6.6.6.6",
		"X-Envoy-External-Address", "6.6.6.6"}
	others := []string{"X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Ssl", "X-Forwarded", "X-Client-Ip", "True-Client-Ip", "Cf-Connecting-Ip", "Forwarded-For", "Forwarded",
		"Client-Ip", "X-Remote-Ip", "X-Originating-Ip", "Wl-Proxy-Client-Ip", "X-Envoy-External-Address"}

	untrusted.get("/", spoof...)
	hd := <-got
	if hd.Get("X-Forwarded-For") != "127.0.0.1" || hd.Get("X-Real-IP") != "127.0.0.1" || hd.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("untrusted peer's headers believed: %v", hd)
	}
	for _, k := range others {
		if v, ok := hd[k]; ok {
			t.Errorf("untrusted peer's %s: %q reached the upstream", k, v)
		}
	}
	if host := <-hosts; !strings.HasPrefix(host, "127.0.0.1:") || hd.Get("X-Forwarded-Host") != host {
		t.Errorf("host %q, X-Forwarded-Host %q", host, hd.Get("X-Forwarded-Host"))
	}

	trusted.get("/", spoof...)
	hd = <-got
	<-hosts
	if hd.Get("X-Forwarded-For") != "203.0.113.7, 10.1.2.3, 127.0.0.1" || hd.Get("X-Real-IP") != "203.0.113.7" ||
		hd.Get("X-Forwarded-Proto") != "https" || hd.Get("X-Forwarded-Host") != "chat.example" {
		t.Errorf("trusted chain: %v", hd)
	}
	for _, k := range others { // a trusted proxy's say
		if _, ok := hd[k]; !ok {
			t.Errorf("trusted peer's %s dropped", k)
		}
	}
	if fw := hd.Values("Forwarded"); len(fw) != 1 || fw[0] != "for=203.0.113.7;proto=https, for=127.0.0.1;proto=http" {
		t.Errorf("trusted peer's Forwarded reached the app as %q; want it with chatguard's hop appended", fw)
	}
	for _, l := range trusted.logs.lines(t) {
		if l["msg"] == "request completed" && l["remoteIp"] != "203.0.113.7" {
			t.Errorf("access log remoteIp = %v", l["remoteIp"])
		}
	}

	// HTTP/1.0 without Host, from an untrusted peer that sends its own
	// X-Forwarded-Host: there is no host to name, and no empty header either.
	c := rawConn(t, untrusted)
	_, _ = io.WriteString(c, "GET / HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTP/1.0 without Host: %v %v", resp, err)
	}
	hd = <-got
	<-hosts
	if v, ok := hd["X-Forwarded-Host"]; ok {
		t.Errorf("X-Forwarded-Host %q sent for a request without a host", v)
	}
}

func TestPreserveHost(t *testing.T) {
	t.Parallel()
	hosts := make(chan string, 2)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { hosts <- r.Host })
	keep := start(t, up.URL, nil)
	rewrite := start(t, up.URL, func(c *config.Config) { c.Proxy.PreserveHost = false })
	req, _ := http.NewRequest(http.MethodGet, keep.url+"/", nil)
	req.Host = "chat.example"
	keep.do(req)
	if h := <-hosts; h != "chat.example" {
		t.Errorf("preserve_host: upstream saw %q", h)
	}
	req, _ = http.NewRequest(http.MethodGet, rewrite.url+"/", nil)
	req.Host = "chat.example"
	rewrite.do(req)
	if h := <-hosts; h != strings.TrimPrefix(up.URL, "http://") {
		t.Errorf("preserve_host false: upstream saw %q", h)
	}
}

func TestSlowHeadersAreCut(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	h := start(t, up.URL, func(c *config.Config) { c.Server.ReadHeaderTimeout = 200 * time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n") // never finishes
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("server did not close a slow-header connection: %v", err)
	}
}

func TestPanicBecomesInternalError(t *testing.T) {
	t.Parallel()
	h := startWith(t, "http://127.0.0.1:9", nil, roundTripFunc(func(*http.Request) (*http.Response, error) { panic("kaboom") }))
	resp, body := h.get("/")
	if env := envelope(t, resp, body); resp.StatusCode != 500 || env["code"] != "INTERNAL_ERROR" {
		t.Fatalf("%d %v", resp.StatusCode, env)
	}
	if strings.Contains(string(body), "kaboom") {
		t.Fatalf("panic value leaked: %s", body)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestClientGoneIsLogged499(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})
	h := start(t, up.URL, nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/gone", nil)
	go func() { <-entered; cancel() }()
	if resp, err := h.client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("request should have been cancelled")
	}
	waitFor(t, "499 access line", func() bool {
		for _, l := range h.logs.lines(t) {
			if l["msg"] == "request completed" && l["status"] == float64(499) {
				return true
			}
		}
		return false
	})
}

// Hop-by-hop headers stop at chatguard, both ways; end-to-end ones pass.
func TestHopByHopHeaders(t *testing.T) {
	t.Parallel()
	got := make(chan http.Header, 1)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.Header().Set("Connection", "X-Upstream-Hop")
		w.Header().Set("X-Upstream-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End-To-End", "kept")
	})
	h := start(t, up.URL, nil)
	resp, _ := h.get("/", "Connection", "X-Client-Hop", "X-Client-Hop", "secret", "Proxy-Authorization", "Basic dTpw", "X-App", "kept")
	in := <-got
	for _, k := range []string{"X-Client-Hop", "Proxy-Authorization"} {
		if in.Get(k) != "" {
			t.Errorf("upstream got hop-by-hop %s", k)
		}
	}
	if in.Get("X-App") != "kept" {
		t.Errorf("end-to-end request header lost")
	}
	for _, k := range []string{"X-Upstream-Hop", "Keep-Alive"} {
		if resp.Header.Get(k) != "" {
			t.Errorf("client got hop-by-hop %s", k)
		}
	}
	if resp.Header.Get("X-End-To-End") != "kept" {
		t.Errorf("end-to-end response header lost")
	}
}

// Connections that never send a request (an idle or slow-header flood)
// show in chatguard_http_connections, and leave it when they close.
func TestOpenConnectionsAreCounted(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	h := start(t, up.URL, nil)
	addr := strings.TrimPrefix(h.url, "http://")
	var conns []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	_, _ = conns[0].Write([]byte("GET /a HTTP/1.1\r\nHost: x\r\n")) // half a header block
	waitMetric(t, h, "chatguard_http_connections", 5)
	for _, c := range conns {
		c.Close()
	}
	waitMetric(t, h, "chatguard_http_connections", 0)
}
