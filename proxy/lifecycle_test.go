package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatguard/chatguard/internal/config"
)

func TestShutdownFinishesInFlightRequest(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	h := start(t, up.URL, func(c *config.Config) { c.Server.DrainDelay = 300 * time.Millisecond })

	slow := make(chan string, 1)
	go func() {
		resp, err := h.client.Get(h.url + "/slow")
		if err != nil {
			slow <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(b)
	}()
	<-entered
	h.cancel() // SIGTERM

	waitFor(t, "readyz 503", func() bool {
		resp, err := h.client.Get(h.admin + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	// Within the drain delay new work is still served.
	if resp, body := h.get("/fast"); resp.StatusCode != 200 || string(body) != "done" {
		t.Errorf("during drain delay: %d %s", resp.StatusCode, body)
	}
	// After it, new requests are refused with the envelope.
	waitFor(t, "refusal", func() bool { return h.srv.refusing.Load() })
	resp, body := h.get("/fast")
	if env := envelope(t, resp, body); resp.StatusCode != 503 || env["code"] != "SERVICE_UNAVAILABLE" {
		t.Errorf("after drain delay: %d %v", resp.StatusCode, env)
	}
	close(release)
	if got := <-slow; got != "done" {
		t.Errorf("in-flight request: %s", got)
	}
	if err := h.stop(); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// A request still running at the end of server.shutdown_timeout is cut
// then (not a second later), and its access line says chatguard cut it.
func TestShutdownCutsRequestsPastTheTimeout(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	const timeout = 100 * time.Millisecond
	h := start(t, up.URL, func(c *config.Config) {
		c.Server.DrainDelay = 0
		c.Server.ShutdownTimeout = timeout
	})
	slow := make(chan error, 1)
	go func() {
		resp, err := h.client.Get(h.url + "/slow")
		if err == nil {
			resp.Body.Close()
		}
		slow <- err
	}()
	<-entered
	began := time.Now()
	if err := h.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// The shutdown timeout, a grace to flush finished responses (100 ms),
	// and scheduling; before, net/http got a second more.
	if took := time.Since(began); took > timeout+800*time.Millisecond {
		t.Errorf("Serve returned %v after the signal with server.shutdown_timeout %v", took, timeout)
	}
	if err := <-slow; err == nil {
		t.Error("the request past the timeout got an answer; want its connection cut")
	}
	waitFor(t, "access line", func() bool { return accessLine(t, h, "/slow") != nil })
	if l := accessLine(t, h, "/slow"); l["status"] != float64(499) || l["reason"] != "shutdown" {
		t.Errorf("access line %v: want status 499, reason shutdown", l)
	}
}

func TestDrainEndpoint(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	h := start(t, up.URL, func(c *config.Config) { c.StatsToken = "s3cret-token-value" })

	resp, err := h.client.Get(h.admin + "/drain")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if env := envelope(t, resp, b); resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" || env["code"] != "NOT_FOUND" {
		t.Fatalf("GET /drain: %d %v", resp.StatusCode, env)
	}

	// A non-loopback caller needs the token (handler called directly with a remote address).
	// So does one from elsewhere in 127.0.0.0/8: a mesh's sidecar (Istio)
	// delivers other hosts' connections from 127.0.0.6.
	for _, peer := range []string{"10.1.2.3:5555", "127.0.0.6:5555", "[::ffff:127.0.0.6]:5555"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/drain", nil)
		req.RemoteAddr = peer
		h.srv.AdminHandler().ServeHTTP(rec, req)
		if rec.Code != 401 || h.srv.draining.Load() {
			t.Fatalf("drain from %s without token: %d draining=%v", peer, rec.Code, h.srv.draining.Load())
		}
	}
	// So does a browser on this machine acting for another site's page (a
	// form POST names the page in Origin; a DNS-rebound page names its own
	// host in Host) (QA: either drained chatguard).
	for _, hdr := range []map[string]string{
		{"Origin": "http://evil.example"},
		{"Origin": "null"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Host": "evil.example:9090"},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/drain", strings.NewReader("x"))
		req.RemoteAddr = "127.0.0.1:5555"
		req.Host = "127.0.0.1:9090"
		for k, v := range hdr {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		h.srv.AdminHandler().ServeHTTP(rec, req)
		if rec.Code != 401 || h.srv.draining.Load() {
			t.Fatalf("drain from loopback with %v, no token: %d draining=%v", hdr, rec.Code, h.srv.draining.Load())
		}
	}
	for _, host := range []string{"localhost:9090", "[::1]:9090", "127.0.0.1"} { // curl, the preStop hook, port-forward
		req := httptest.NewRequest(http.MethodPost, "/drain", nil)
		req.RemoteAddr, req.Host = "127.0.0.1:5555", host
		if !localCaller(req, peerAddr(req)) {
			t.Fatalf("a local caller naming %s is refused", host)
		}
	}

	resp, err = h.client.Post(h.admin+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Success bool        `json:"success"`
		Data    DrainResult `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || !out.Success {
		t.Fatalf("POST /drain: %d %v %+v", resp.StatusCode, err, out)
	}
	resp.Body.Close()
	if out.Data.Finished.IsZero() || out.Data.InFlight != 0 {
		t.Errorf("drain result %+v", out.Data)
	}
	if resp, body := h.get("/"); resp.StatusCode != 503 {
		t.Errorf("after drain: %d %s", resp.StatusCode, body)
	}
	resp, err = h.client.Get(h.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "draining") {
		t.Errorf("readyz after drain: %d %s", resp.StatusCode, b)
	}
	// A second drain returns the first one's result at once.
	resp, err = h.client.Post(h.admin+"/drain", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("second drain: %v", err)
	}
	resp.Body.Close()
}

func TestWebSocketUpgradePassesAndDrainCloses(t *testing.T) {
	t.Parallel()
	up := upstream(t, echoWebSocket(0))
	h := start(t, up.URL, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.url, "http")+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatalf("dial through proxy: %v", err)
	}
	defer c.CloseNow()
	if resp.Header.Get("X-Request-ID") == "" {
		t.Errorf("101 lacks X-Request-ID")
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("40")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "40" {
		t.Fatalf("echo: %q %v", msg, err)
	}
	waitFor(t, "upgraded gauge", func() bool { return strings.Contains(scrape(t, h), "chatguard_upgraded_connections 1") })

	res := h.srv.Drain(ctx)
	if res.UpgradedClosed != 1 {
		t.Errorf("drain closed %d upgraded connections", res.UpgradedClosed)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("read after drain: %v, want close 1001", err)
	}
}

func TestStatsEndpoint(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(418) })
	const token = "a-long-stats-token-0123456789"
	open := start(t, up.URL, nil)
	h := start(t, up.URL, func(c *config.Config) { c.StatsToken = token })
	h.srv.AddStats("extra", func() any { return map[string]int{"n": 1} })

	for _, base := range []string{h.url, h.admin} {
		tests := []struct {
			auth     string
			wantCode int
			envCode  string
		}{
			{"", 401, "AUTHENTICATION_REQUIRED"},
			{"Bearer wrong", 401, "TOKEN_INVALID"},
			{"Basic " + token, 401, "AUTHENTICATION_REQUIRED"},
			{"Bearer " + token, 200, ""},
			{"bearer " + token, 200, ""},
		}
		for _, tc := range tests {
			req, _ := http.NewRequest(http.MethodGet, base+StatsPath, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, body := h.do(req)
			if resp.StatusCode != tc.wantCode {
				t.Errorf("%s %q: status %d", base, tc.auth, resp.StatusCode)
				continue
			}
			if tc.envCode != "" {
				if env := envelope(t, resp, body); env["code"] != tc.envCode {
					t.Errorf("%s %q: code %v", base, tc.auth, env["code"])
				}
				if strings.Contains(string(body), token) {
					t.Errorf("token echoed")
				}
				want := `Bearer realm="chatguard"`
				if tc.envCode == "TOKEN_INVALID" {
					want += `, error="invalid_token", error_description="The access token is invalid"`
				}
				if got := resp.Header.Get("WWW-Authenticate"); got != want {
					t.Errorf("%s %q: WWW-Authenticate %q, want %q", base, tc.auth, got, want)
				}
				continue
			}
			var out struct {
				Success bool `json:"success"`
				Data    struct {
					Server struct {
						Uptime *int64 `json:"uptime"`
						PID    int    `json:"pid"`
						Memory struct {
							HeapUsed  uint64 `json:"heapUsed"`
							HeapTotal uint64 `json:"heapTotal"`
						} `json:"memory"`
					} `json:"server"`
					Extra map[string]int `json:"extra"`
				} `json:"data"`
			}
			if err := json.Unmarshal(body, &out); err != nil || !out.Success {
				t.Fatalf("stats body %s: %v", body, err)
			}
			s := out.Data.Server
			if s.Uptime == nil || s.PID == 0 || s.Memory.HeapUsed == 0 || s.Memory.HeapTotal < s.Memory.HeapUsed || out.Data.Extra["n"] != 1 {
				t.Errorf("stats data: %s", body)
			}
		}
	}
	// Each refusal leaves an audit line (security, who, what), never the token.
	refusals := 0
	for _, l := range h.logs.lines(t) {
		if l["msg"] == "admin request refused: no valid stats token" {
			refusals++
			if l["category"] != "security" || l["remoteIp"] != "127.0.0.1" || l["path"] != StatsPath {
				t.Errorf("audit line %v", l)
			}
		}
	}
	if refusals != 6 {
		t.Errorf("%d audit lines for 6 refused requests", refusals)
	}
	if strings.Contains(h.logs.String(), "wrong") || strings.Contains(h.logs.String(), token) {
		t.Errorf("a token reached the log")
	}
	// No token configured: nobody gets in, not even with some token.
	resp, body := open.get(StatsPath, "Authorization", "Bearer anything")
	if resp.StatusCode != 401 {
		t.Errorf("unset token: %d %s", resp.StatusCode, body)
	}
}

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	h := start(t, up.URL, nil)
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/healthz", 200},
		{"HEAD", "/healthz", 200},
		{"GET", "/readyz", 200},
		{"GET", "/metrics", 200},
		{"POST", "/metrics", 405},
		{"GET", "/nope", 404},
	} {
		req, _ := http.NewRequest(tc.method, h.admin+tc.path, nil)
		resp, body := h.do(req)
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, resp.StatusCode, body)
		}
		if tc.status >= 400 {
			envelope(t, resp, body)
		}
	}
}

// In OpenMetrics a counter's family drops its _total, so a gauge X next to a
// counter X_total is two families of one name, which the format forbids and
// strict parsers refuse: chatguard_websocket_connections was both.
func TestOpenMetricsFamilyNamesAreUnique(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	h := start(t, up.URL, nil)
	req, _ := http.NewRequest("GET", h.admin+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, body := h.do(req)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("Content-Type %q", ct)
	}
	seen := map[string]bool{}
	n := 0
	for _, line := range strings.Split(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" || !strings.HasPrefix(f[2], "chatguard_") {
			continue
		}
		n++
		if seen[f[2]] {
			t.Errorf("two metric families named %s", f[2])
		}
		seen[f[2]] = true
	}
	if n < 20 {
		t.Fatalf("%d chatguard families in the OpenMetrics exposition", n)
	}
}

// A WebSocket whose 101 arrives while the drain waits for in-flight requests
// is closed too, not left open after the drain.
func TestDrainClosesLateUpgrades(t *testing.T) {
	t.Parallel()
	up := upstream(t, echoWebSocket(300*time.Millisecond)) // the upgrade answers late
	h := start(t, up.URL, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialed := make(chan *websocket.Conn, 1)
	go func() {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.url, "http")+"/socket.io/?EIO=4&transport=websocket", nil)
		if err != nil {
			dialed <- nil
			return
		}
		dialed <- c
	}()
	waitFor(t, "the upgrade request in flight", func() bool { return h.srv.inFlight.Load() == 1 })
	h.srv.Drain(ctx)
	if c := <-dialed; c != nil {
		defer c.CloseNow()
		if err := c.Write(ctx, websocket.MessageText, []byte("2")); err == nil {
			if _, _, err := c.Read(ctx); err == nil {
				t.Fatal("a WebSocket upgraded during the drain still works after it")
			}
		}
	}
	if n := h.srv.upgradedCount(); n != 0 {
		t.Fatalf("%d upgraded connections tracked after the drain", n)
	}
}

// echoWebSocket accepts a WebSocket after delay and echoes every message.
func echoWebSocket(delay time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	}
}

// "chatguard stopped" counts what is in flight when it stops, not what was
// at the drain's deadline (QA: a request that outlived a POST /drain's
// deadline, then finished, was still reported left at SIGTERM).
func TestStoppedLineCountsWhatIsLeftAtTheStop(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	h := start(t, up.URL, func(c *config.Config) {
		c.Server.DrainDelay = 0
		c.Server.ShutdownTimeout = 50 * time.Millisecond
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := h.client.Get(h.url + "/slow"); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	if res := h.srv.Drain(context.Background()); res.InFlight != 1 {
		t.Fatalf("drain: %+v, want 1 in flight at its deadline", res)
	}
	close(release)
	<-done
	if err := h.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for _, l := range h.logs.lines(t) {
		if l["msg"] == "chatguard stopped" {
			if l["inFlightLeft"] != float64(0) {
				t.Errorf("stopped line %v: want inFlightLeft 0", l)
			}
			return
		}
	}
	t.Error("no chatguard stopped line")
}

// While not ready, every answer closes its connection, so that a client
// with a warm keep-alive connection (a browser) reconnects through the load
// balancer during the drain delay instead of meeting this instance's 503
// after it (QA, Chromium: one 503 per tab per rollout). Envoy does the same.
func TestDrainClosesKeepAliveConnections(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	h := start(t, up.URL, func(c *config.Config) { c.Server.DrainDelay = 3 * time.Second })
	get := func() (*http.Response, bool) {
		t.Helper()
		reused := false
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, h.url+"/x", nil)
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, reused
	}
	get()
	// Go's client moves "Connection: close" to resp.Close.
	if resp, reused := get(); resp.Close || !reused {
		t.Fatalf("before the drain: close %v, reused %v; want a kept connection", resp.Close, reused)
	}
	drained := make(chan error, 1)
	go func() {
		resp, err := h.client.Post(h.admin+"/drain", "", nil)
		if err == nil {
			resp.Body.Close()
		}
		drained <- err
	}()
	waitFor(t, "draining", h.srv.draining.Load)
	resp, _ := get()
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("during the drain delay: %d, close %v; want 200 and Connection: close", resp.StatusCode, resp.Close)
	}
	if resp, reused := get(); resp.StatusCode != 200 || reused {
		t.Errorf("the next request: %d on a reused connection %v; want a new connection", resp.StatusCode, reused)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

// An event stream never ends on its own: the drain ends it when it closes
// the WebSockets, cleanly (the chunked body's last chunk, so EventSource
// reconnects elsewhere), and does not wait out the shutdown timeout for it
// (QA: the stream kept going after /drain answered, with inFlight 1).
func TestDrainEndsEventStreams(t *testing.T) {
	t.Parallel()
	upstreamGone := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := io.WriteString(w, "data: tick\n\n"); err != nil {
				break
			}
			w.(http.Flusher).Flush()
			select {
			case <-tick.C:
				continue
			case <-r.Context().Done():
			}
			break
		}
		close(upstreamGone)
	})
	h := start(t, up.URL, func(c *config.Config) {
		c.Server.DrainDelay = 200 * time.Millisecond
		c.Server.ShutdownTimeout = 10 * time.Second
	})
	resp, err := h.client.Get(h.url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); read <- err }()

	began := time.Now()
	dr, err := h.client.Post(h.admin+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Data DrainResult `json:"data"`
	}
	_ = json.NewDecoder(dr.Body).Decode(&out)
	dr.Body.Close()
	if took := time.Since(began); took > 3*time.Second || out.Data.InFlight != 0 || out.Data.StreamsEnded != 1 {
		t.Errorf("drain took %v with %+v; want the stream ended and nothing in flight", took, out.Data)
	}
	select {
	case err := <-read:
		if err != nil {
			t.Errorf("the stream ended with %v; want a clean end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream was still open after the drain")
	}
	select {
	case <-upstreamGone:
	case <-time.After(5 * time.Second):
		t.Error("the upstream's stream was not closed")
	}
	// The stream's connection closed after it (its head went out before the
	// drain, without Connection: close): EventSource's reconnect must go
	// through the load balancer, not meet this instance's 503 on it and
	// give up for good (review).
	reused := false
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, h.url+"/events", nil)
	if again, err := h.client.Do(req); err == nil {
		again.Body.Close()
		if reused {
			t.Errorf("the reconnect went on the ended stream's connection and got %d", again.StatusCode)
		}
	}
	waitFor(t, "access line", func() bool { return accessLine(t, h, "/events") != nil })
	if l := accessLine(t, h, "/events"); l["status"] != float64(200) || l["reason"] != "drain" {
		t.Errorf("access line %v: want status 200, reason drain", l)
	}
}
