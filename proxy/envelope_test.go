package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/chatguard/chatguard/internal/config"
)

// reply is a canned upstream answer.
type reply struct {
	status  int
	ctype   string
	body    string
	headers map[string]string
}

func (r reply) serve(w http.ResponseWriter, _ *http.Request) {
	for k, v := range r.headers {
		w.Header().Set(k, v)
	}
	if r.ctype != "" {
		w.Header().Set("Content-Type", r.ctype)
	}
	w.WriteHeader(r.status)
	_, _ = w.Write([]byte(r.body))
}

func TestUpstreamErrorsBecomeEnvelopes(t *testing.T) {
	t.Parallel()
	const js = "application/json; charset=utf-8"
	tests := []struct {
		name       string
		reply      reply
		wantStatus int
		wantCode   string
		check      func(t *testing.T, env map[string]any, body string)
	}{
		{"joi", reply{400, js, `{"name":"ValidationError","isJoi":true,"details":[{"message":"\"email\" is required","path":["email"],"type":"any.required","context":{"key":"email","label":"email"}}]}`, nil},
			400, "VALIDATION_ERROR", func(t *testing.T, env map[string]any, _ string) {
				fields := env["details"].(map[string]any)["fields"].([]any)
				f := fields[0].(map[string]any)
				if f["field"] != "email" || f["message"] != `"email" is required` {
					t.Errorf("fields = %v", fields)
				}
			}},
		{"express-validator", reply{422, js, `{"errors":[{"type":"field","value":"x","msg":"Invalid value","path":"email","location":"body"}]}`, nil},
			400, "VALIDATION_ERROR", nil},
		{"jwt expired", reply{401, js, `{"name":"TokenExpiredError","message":"jwt expired","expiredAt":"2026-01-01T00:00:00.000Z"}`, nil},
			401, "TOKEN_EXPIRED", nil},
		{"jwt invalid", reply{500, js, `{"error":{"name":"JsonWebTokenError","message":"invalid signature"}}`, nil},
			401, "TOKEN_INVALID", nil},
		{"firestore not found", reply{500, js, `{"code":"not-found","message":"No document to update: projects/p/databases/(default)/documents/conversations/x"}`, nil},
			404, "NOT_FOUND", func(t *testing.T, _ map[string]any, body string) {
				if strings.Contains(body, "projects/p") {
					t.Errorf("internal message leaked: %s", body)
				}
			}},
		{"firestore permission", reply{500, js, `{"code":"permission-denied","message":"Missing or insufficient permissions."}`, nil},
			403, "FORBIDDEN", nil},
		{"firestore unavailable", reply{500, js, `{"code":14,"details":"No connection established","metadata":{}}`, nil},
			500, "DATABASE_ERROR", nil},
		{"twilio", reply{500, js, `{"status":400,"message":"The 'To' number is not a valid phone number.","code":21211,"moreInfo":"https://www.twilio.com/docs/errors/21211"}`, nil},
			502, "EXTERNAL_SERVICE_ERROR", nil},
		{"html 500 with stack", reply{500, "text/html", "<pre>TypeError: Cannot read properties of undefined (reading 'id')<br> &nbsp; &nbsp;at /app/src/routes/messages.js:42:17</pre>", nil},
			500, "INTERNAL_ERROR", func(t *testing.T, _ map[string]any, body string) {
				for _, leak := range []string{"TypeError", "/app/src", "messages.js"} {
					if strings.Contains(body, leak) {
						t.Errorf("%q leaked: %s", leak, body)
					}
				}
			}},
		{"express 404 text", reply{404, "text/html; charset=utf-8", "<!DOCTYPE html><html><body><pre>Cannot GET /nope</pre></body></html>", nil},
			404, "NOT_FOUND", nil},
		{"plain 4xx message kept", reply{404, js, `{"message":"Conversation not found"}`, nil},
			404, "NOT_FOUND", func(t *testing.T, env map[string]any, _ string) {
				if env["message"] != "Conversation not found" {
					t.Errorf("message = %v", env["message"])
				}
			}},
		{"409 keeps its status", reply{409, js, `{"error":"already exists"}`, nil},
			409, "VALIDATION_ERROR", nil},
		{"empty 503", reply{503, "", "", nil}, 503, "SERVICE_UNAVAILABLE", nil},
		{"upstream 502", reply{502, "text/plain", "bad gateway", nil}, 502, "EXTERNAL_SERVICE_ERROR", nil},
		{"cors headers kept", reply{403, js, `{"message":"nope"}`, map[string]string{"Access-Control-Allow-Origin": "https://chat.example"}},
			403, "FORBIDDEN", nil},
	}
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		for _, tc := range tests {
			if r.URL.Path == "/"+strings.ReplaceAll(tc.name, " ", "-") {
				tc.reply.serve(w, r)
				return
			}
		}
		w.WriteHeader(599)
	})
	h := start(t, up.URL, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := h.get("/" + strings.ReplaceAll(tc.name, " ", "-"))
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, tc.wantStatus, body)
			}
			env := envelope(t, resp, body)
			if env["code"] != tc.wantCode {
				t.Fatalf("code = %v, want %s; body %s", env["code"], tc.wantCode, body)
			}
			if tc.check != nil {
				tc.check(t, env, string(body))
			}
			if tc.name == "cors headers kept" && resp.Header.Get("Access-Control-Allow-Origin") != "https://chat.example" {
				t.Errorf("CORS header dropped: %v", resp.Header)
			}
		})
	}
}

func TestUpstreamEnvelopePassesThrough(t *testing.T) {
	t.Parallel()
	withID := `{"success":false,"error":{"code":"FORBIDDEN","message":"no","timestamp":"2026-01-30T19:45:30.123Z"},"requestId":"req_1_upstream"}`
	withoutID := `{"success":false,"error":{"code":"CUSTOM_CODE","message":"custom","details":{"a":1},"timestamp":"2026-01-30T19:45:30.123Z"}}`
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(403)
		if r.URL.Path == "/with" {
			_, _ = w.Write([]byte(withID))
		} else {
			_, _ = w.Write([]byte(withoutID))
		}
	})
	h := start(t, up.URL, nil)

	resp, body := h.get("/with")
	if resp.StatusCode != 403 || string(body) != withID {
		t.Fatalf("envelope with requestId changed: %d %s", resp.StatusCode, body)
	}
	resp, body = h.get("/without", "X-Request-ID", "client-id-1")
	if resp.StatusCode != 403 {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	want := strings.TrimSuffix(withoutID, "}") + `,"requestId":"client-id-1"}`
	if string(body) != want {
		t.Fatalf("body = %s\nwant  %s", body, want)
	}
	// The id a user reads in the body is the app's: the access line names
	// it beside chatguard's, so that grepping for it finds the request (QA).
	if l := accessLine(t, h, "/with"); l == nil || l["upstreamRequestId"] != "req_1_upstream" {
		t.Errorf("access line of the app's envelope: %v", l)
	}
	if l := accessLine(t, h, "/without"); l == nil || l["upstreamRequestId"] != nil {
		t.Errorf("access line of an envelope given chatguard's id: %v", l)
	}
}

// The code of an app's envelope is its own text: passed on whole, but
// bounded on the access line (QA: a 20,000-character code).
func TestPassthroughLongCodeBoundedInAccessLine(t *testing.T) {
	t.Parallel()
	code := strings.Repeat("E", 20000)
	env := `{"success":false,"error":{"code":"` + code + `","message":"x","timestamp":"2026-01-30T19:45:30.123Z"},"requestId":"r1"}`
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(409)
		_, _ = w.Write([]byte(env))
	})
	h := start(t, up.URL, nil)
	if resp, body := h.get("/long"); resp.StatusCode != 409 || string(body) != env {
		t.Fatalf("envelope changed: %d %.80s", resp.StatusCode, body)
	}
	var l map[string]any
	waitFor(t, "access line", func() bool { l = accessLine(t, h, "/long"); return l != nil })
	if c, _ := l["code"].(string); c != code[:128] {
		t.Errorf("access line code has %d bytes, want 128", len(c))
	}
}

func TestUpstreamErrorBodyEncodingsAndSizes(t *testing.T) {
	t.Parallel()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(`{"name":"TokenExpiredError","message":"jwt expired"}`))
	_ = zw.Close()
	var br bytes.Buffer // what expressjs/compression sends a browser for a body of 1 KB or more
	bw := brotli.NewWriter(&br)
	_, _ = bw.Write([]byte(`{"name":"TokenExpiredError","message":"jwt expired"}`))
	_ = bw.Close()
	big := `{"message":"` + strings.Repeat("x", 5000) + `","name":"TokenExpiredError"}`

	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/gzip":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			w.WriteHeader(401)
			_, _ = w.Write(gz.Bytes())
		case "/br":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "br")
			w.WriteHeader(401)
			_, _ = w.Write(br.Bytes())
		case "/br-broken", "/zstd":
			w.Header().Set("Content-Encoding", strings.TrimPrefix(strings.TrimSuffix(r.URL.Path, "-broken"), "/"))
			w.WriteHeader(401)
			_, _ = w.Write([]byte{0x1b, 0x2, 0x3})
		case "/big":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			_, _ = w.Write([]byte(big))
		case "/ok":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"name":"TokenExpiredError"}`))
		case "/redirect":
			http.Redirect(w, r, "/ok", http.StatusFound)
		}
	})
	h := start(t, up.URL, func(c *config.Config) { c.Proxy.ErrorInspectBytes = 4096 })

	resp, body := h.get("/gzip")
	if env := envelope(t, resp, body); resp.StatusCode != 401 || env["code"] != "TOKEN_EXPIRED" {
		t.Errorf("gzip: %d %v", resp.StatusCode, env)
	}
	if resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("Content-Encoding kept on a rewritten body")
	}
	resp, body = h.get("/br")
	if env := envelope(t, resp, body); resp.StatusCode != 401 || env["code"] != "TOKEN_EXPIRED" || resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("br: %d %v %v", resp.StatusCode, env, resp.Header)
	}
	for _, path := range []string{"/br-broken", "/zstd"} {
		resp, body = h.get(path)
		if env := envelope(t, resp, body); resp.StatusCode != 401 || env["code"] != "AUTHENTICATION_REQUIRED" || len(env["details"].(map[string]any)) != 0 {
			t.Errorf("%s: %d %v", path, resp.StatusCode, env)
		}
	}
	resp, body = h.get("/big")
	if env := envelope(t, resp, body); resp.StatusCode != 400 || env["code"] != "VALIDATION_ERROR" || len(env["details"].(map[string]any)) != 0 {
		t.Errorf("over the cap must be wrapped by status without details: %d %v", resp.StatusCode, env)
	}
	resp, body = h.get("/ok")
	if resp.StatusCode != 200 || string(body) != `{"name":"TokenExpiredError"}` {
		t.Errorf("2xx touched: %d %s", resp.StatusCode, body)
	}
	h.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, _ = h.get("/redirect")
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/ok" {
		t.Errorf("3xx touched: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ := http.NewRequest(http.MethodHead, h.url+"/big", nil)
	resp, body = h.do(req)
	if resp.StatusCode != 400 || len(body) != 0 || resp.Header.Get("X-Request-ID") == "" {
		t.Errorf("HEAD: %d %q", resp.StatusCode, body)
	}
	// Its access line counts no body bytes: none went out (it said the
	// envelope's length, 176 in QA's run).
	id := resp.Header.Get("X-Request-ID")
	waitFor(t, "the HEAD's access line", func() bool {
		for _, l := range h.logs.lines(t) {
			if l["msg"] == "request completed" && l["requestId"] == id {
				if l["bytes"] != float64(0) {
					t.Fatalf("HEAD access line bytes %v", l["bytes"])
				}
				return true
			}
		}
		return false
	})
}

func TestDevelopmentModeShowsRedactedSnippet(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(500)
		_, _ = w.Write([]byte(`{"message":"boom","password":"hunter2","stack":"Error: boom\n    at /app/x.js:1:1"}`))
	})
	h := start(t, up.URL, func(c *config.Config) { c.Env = "development" })
	resp, body := h.get("/")
	env := envelope(t, resp, body)
	d, _ := env["details"].(map[string]any)
	if d == nil || d["upstreamStatus"] != float64(500) || d["upstreamBody"] == nil {
		t.Fatalf("development details missing: %s", body)
	}
	if strings.Contains(string(body), "hunter2") {
		t.Fatalf("secret in development snippet: %s", body)
	}
}

func TestProxyOwnFailures(t *testing.T) {
	t.Parallel()
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		h := start(t, "http://"+closedPort(t), nil)
		resp, body := h.get("/api/messages")
		if env := envelope(t, resp, body); resp.StatusCode != 502 || env["code"] != "UPSTREAM_UNAVAILABLE" {
			t.Fatalf("%d %v", resp.StatusCode, env)
		}
		if !strings.Contains(scrape(t, h), `chatguard_upstream_errors_total{code="UPSTREAM_UNAVAILABLE",reason="refused"} 1`) {
			t.Errorf("upstream error not counted")
		}
	})
	t.Run("response header timeout", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		defer close(release)
		h := start(t, up.URL, func(c *config.Config) { c.Proxy.ResponseHeaderTimeout = 100 * time.Millisecond })
		resp, body := h.get("/slow")
		if env := envelope(t, resp, body); resp.StatusCode != 504 || env["code"] != "UPSTREAM_TIMEOUT" {
			t.Fatalf("%d %v", resp.StatusCode, env)
		}
	})
	t.Run("upstream resets", func(t *testing.T) {
		t.Parallel()
		up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		})
		h := start(t, up.URL, nil)
		resp, body := h.get("/reset")
		if env := envelope(t, resp, body); resp.StatusCode != 502 || env["code"] != "UPSTREAM_UNAVAILABLE" {
			t.Fatalf("%d %v", resp.StatusCode, env)
		}
	})
}

func TestRequestLimits(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		var n int
		buf := make([]byte, 4096)
		for {
			k, err := r.Body.Read(buf)
			n += k
			if err != nil {
				break
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]int{"read": n})
	})
	h := start(t, up.URL, func(c *config.Config) {
		c.Server.MaxBodyBytes = 1024
		c.Server.MaxHeaderBytes = 4096
	})

	req, _ := http.NewRequest(http.MethodPost, h.url+"/api/media/upload", strings.NewReader(strings.Repeat("a", 2048)))
	resp, body := h.do(req)
	if env := envelope(t, resp, body); resp.StatusCode != 413 || env["code"] != "PAYLOAD_TOO_LARGE" || fmt.Sprint(env["details"]) != "map[limitBytes:1024]" {
		t.Errorf("content-length over limit: %d %v", resp.StatusCode, env)
	}
	// Chunked: the size is only known while streaming.
	req, _ = http.NewRequest(http.MethodPost, h.url+"/api/media/upload", struct{ *strings.Reader }{strings.NewReader(strings.Repeat("a", 4096))})
	resp, body = h.do(req)
	if env := envelope(t, resp, body); resp.StatusCode != 413 || env["code"] != "PAYLOAD_TOO_LARGE" || fmt.Sprint(env["details"]) != "map[limitBytes:1024]" {
		t.Errorf("chunked over limit: %d %v", resp.StatusCode, env)
	}
	req, _ = http.NewRequest(http.MethodPost, h.url+"/api/media/upload", strings.NewReader(strings.Repeat("a", 1000)))
	if resp, body = h.do(req); resp.StatusCode != 200 || !strings.Contains(string(body), `"read":1000`) {
		t.Errorf("body under limit: %d %s", resp.StatusCode, body)
	}
	resp, body = h.get("/", "X-Big", strings.Repeat("h", 5000))
	if env := envelope(t, resp, body); resp.StatusCode != 431 || env["code"] != "VALIDATION_ERROR" {
		t.Errorf("headers over limit: %d %v", resp.StatusCode, env)
	}
	// A target over the limit by itself is 414, as from nginx (QA: 431
	// blamed the headers), and its access line holds only the first 4 KiB.
	long := "/" + strings.Repeat("a", 5000)
	resp, body = h.get(long)
	if env := envelope(t, resp, body); resp.StatusCode != 414 || env["code"] != "VALIDATION_ERROR" || fmt.Sprint(env["details"]) != "map[limitBytes:4096]" {
		t.Errorf("target over limit: %d %v", resp.StatusCode, env)
	}
	if logs := h.logs.String(); strings.Contains(logs, long) || !strings.Contains(logs, long[:maxLogPath]+"…(5001 bytes)") {
		t.Errorf("the access line does not hold the target cut at %d bytes", maxLogPath)
	}
}

// More header fields than server.max_header_count get a 431 before the
// upstream sees anything: Node would keep only its first ~1,000 and drop
// chatguard's forwarding headers, written after the client's (QA).
func TestTooManyHeaderFields(t *testing.T) {
	t.Parallel()
	var seen atomic.Int64
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { seen.Add(1) })
	h := start(t, up.URL, nil) // the default, 100
	send := func(n int) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, h.url+"/api/messages", nil)
		for i := 0; i < n; i++ {
			req.Header.Add(fmt.Sprintf("A%04d", i), "v")
		}
		return h.do(req)
	}
	// The test client adds User-Agent (no Accept-Encoding: compression is
	// off); with Host, 98 more make 100. chatguard's own X-Request-Id does
	// not count.
	if resp, _ := send(98); resp.StatusCode != 200 || seen.Load() != 1 {
		t.Fatalf("100 fields: %d, upstream saw %d", resp.StatusCode, seen.Load())
	}
	resp, body := send(99)
	if env := envelope(t, resp, body); resp.StatusCode != 431 || env["code"] != "VALIDATION_ERROR" || fmt.Sprint(env["details"]) != "map[limitFields:100]" {
		t.Fatalf("101 fields: %d %v", resp.StatusCode, env)
	}
	if seen.Load() != 1 {
		t.Fatalf("the upstream saw a refused request")
	}
	// A client's own X-Request-Id is one of its fields.
	req, _ := http.NewRequest(http.MethodGet, h.url+"/api/messages", nil)
	req.Header.Set("X-Request-Id", "client-1")
	for i := 0; i < 98; i++ {
		req.Header.Add(fmt.Sprintf("A%04d", i), "v")
	}
	if resp, _ := h.do(req); resp.StatusCode != 431 {
		t.Fatalf("101 fields with the client's request id: %d", resp.StatusCode)
	}
}

// The envelope replaces the upstream's error body: fields describing that
// body, and cache directives that would outrank its no-store at a CDN, go
// with it; the app's other fields stay.
func TestEnvelopeDropsFieldsOfTheReplacedBody(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/plain")
		for k, v := range map[string]string{
			"Content-Range": "bytes 0-2/3", "Content-Disposition": `attachment; filename="err.txt"`,
			"Content-Location": "/x.txt", "Content-Language": "es", "Digest": "sha-256=abc", "Content-Digest": "sha-256=:abc=:",
			"Repr-Digest": "sha-256=:abc=:", "Expires": "Wed, 01 Jan 2031 00:00:00 GMT", "Age": "100", "Pragma": "cache",
			"Surrogate-Control": "max-age=3600", "CDN-Cache-Control": "max-age=3600", "Trailer": "X-Trailer",
			"Set-Cookie": "sid=1", "Access-Control-Allow-Origin": "https://chat.example",
		} {
			h.Set(k, v)
		}
		status := http.StatusBadRequest
		if r.URL.Path == "/416" {
			h.Set("Content-Range", "bytes */3")
			status = http.StatusRequestedRangeNotSatisfiable
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "bad")
	})
	h := start(t, up.URL, nil)
	resp, body := h.get("/x")
	envelope(t, resp, body)
	for _, k := range []string{"Content-Range", "Content-Disposition", "Content-Location", "Content-Language", "Digest",
		"Content-Digest", "Repr-Digest", "Expires", "Age", "Pragma", "Surrogate-Control", "CDN-Cache-Control", "Trailer"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("the envelope kept %s: %q", k, v)
		}
	}
	for _, k := range []string{"Set-Cookie", "Access-Control-Allow-Origin"} {
		if resp.Header.Get(k) == "" {
			t.Errorf("the envelope lost %s", k)
		}
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q", got)
	}
	resp, body = h.get("/416")
	envelope(t, resp, body)
	if got := resp.Header.Get("Content-Range"); got != "bytes */3" {
		t.Errorf("a 416 lost its Content-Range: %q", got)
	}
}

// A HEAD answered with an upstream error carries no Content-Length: the
// upstream's answer has no body to classify, so its envelope is not the
// one a GET gets, and a length that differs from the GET's is what RFC
// 9110 8.6 forbids (QA: 176 for HEAD against 162 for GET). chatguard's own
// envelopes, the same for both, keep theirs.
func TestHeadOfAnUpstreamErrorSaysNoWrongLength(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "Nope: no such conversation")
	})
	h := start(t, up.URL, nil)
	resp, body := h.get("/api/nothing")
	if resp.StatusCode != 404 || resp.ContentLength != int64(len(body)) {
		t.Fatalf("GET: %d, Content-Length %d for %d bytes", resp.StatusCode, resp.ContentLength, len(body))
	}
	req, _ := http.NewRequest(http.MethodHead, h.url+"/api/nothing", nil)
	resp, body = h.do(req)
	if resp.StatusCode != 404 || len(body) != 0 || resp.Header.Get("Content-Length") != "" || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Errorf("HEAD: %d, Content-Length %q, Content-Type %q, body %q; want 404, no length, the envelope's type",
			resp.StatusCode, resp.Header.Get("Content-Length"), resp.Header.Get("Content-Type"), body)
	}
}

// The app's WWW-Authenticate reaches the classification: a 401 whose
// challenge says the token expired is TOKEN_EXPIRED, and the header itself
// stays on the envelope for the client.
func TestEnvelopeBearerChallenge(t *testing.T) {
	t.Parallel()
	const challenge = `Bearer realm="api", error="invalid_token", error_description="The access token expired"`
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", challenge)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"message":"Unauthorized","code":"SESSION_GONE"}`))
	})
	h := start(t, up.URL, nil)
	resp, body := h.get("/api/me")
	env := envelope(t, resp, body)
	if resp.StatusCode != 401 || env["code"] != "TOKEN_EXPIRED" || resp.Header.Get("WWW-Authenticate") != challenge {
		t.Fatalf("%d %v WWW-Authenticate %q", resp.StatusCode, env, resp.Header.Get("WWW-Authenticate"))
	}
	if d, _ := env["details"].(map[string]any); d["upstreamCode"] != "SESSION_GONE" {
		t.Errorf("details = %v, want the app's code", env["details"])
	}
}

// An access line's target is cut at maxLogPath bytes as the line holds it:
// what JSON would escape into more bytes is percent-encoded first (QA: 8,000
// bytes of 0xff made a 24 KB line, each byte a \ufffd and lost).
func TestLogPathBoundsTheLine(t *testing.T) {
	for in, want := range map[string]string{
		"/plain?q=1":            "/plain?q=1",
		"/é/ü?x=日本":             "/é/ü?x=日本",
		"/\ufffd":               "/\ufffd", // a U+FFFD sent as such is text
		"/x?q=\xff\xfe":         "/x?q=%FF%FE",
		"/x?q=\"a\\b\"\x01\x7f": "/x?q=%22a%5Cb%22%01%7F",
		"/x?q=\u2028\u2029":     "/x?q=%E2%80%A8%E2%80%A9",
		"/x?q=\xe6\x97":         "/x?q=%E6%97", // a cut character
		"/x?q=ok\xc0\xafok":     "/x?q=ok%C0%AFok",
	} {
		if got := logPath(in); got != want {
			t.Errorf("logPath(%q) = %q, want %q", in, got, want)
		}
	}
	for _, in := range []string{"/x?q=" + strings.Repeat("\xff", 8000), "/x?q=" + strings.Repeat("\\", 8000), "/x?q=" + strings.Repeat("\u2028", 3000),
		"/x?q=a" + strings.Repeat("\xff", 8000), "/x?q=ab" + strings.Repeat("\xff", 8000)} {
		got := logPath(in)
		// The length the client sent, and no escape cut in two (QA:
		// "…%F…(24009 bytes)" for 8,009 bytes).
		body, _, _ := strings.Cut(got, "…(")
		if !strings.HasSuffix(got, "…("+strconv.Itoa(len(in))+" bytes)") || strings.Contains(body[max(len(body)-2, 0):], "%") {
			t.Errorf("logPath of %d bytes ends %q", len(in), got[max(len(got)-30, 0):])
		}
		line, err := json.Marshal(map[string]string{"path": got})
		if err != nil {
			t.Fatal(err)
		}
		if len(line) > maxLogPath+64 {
			t.Errorf("a %d-byte target made a %d-byte field", len(in), len(line))
		}
	}
	// A JWT the cut would leave half of is redacted whole first (second
	// review: cut inside its payload, it no longer read as one).
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGFAZXhhbXBsZS5jb20iLCJyb2xlIjoiYWRtaW4ifQ.c2lnbmF0dXJlc2lnbmF0dXJl"
	if got := logPath("/api/" + strings.Repeat("a", maxLogPath-40) + "/" + jwt); strings.Contains(got, "eyJzdWIi") {
		t.Errorf("half a JWT in the cut target: %q", got[max(len(got)-80, 0):])
	}
	if p := "/ok/path?q=1"; testing.AllocsPerRun(100, func() { _ = logPath(p) }) != 0 {
		t.Error("a target with nothing to escape allocates")
	}
}

// A raw query holding JSON (curl, SDKs and servers send '"' unencoded) is
// redacted before its quotes are percent-encoded for the log: escaped
// first, "password":"…" no longer read as a secret's pair (review).
func TestAccessLineRedactsJSONInARawQuery(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	h := start(t, up.URL, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET /api/x?data={\"password\":\"hunter2x\"}&q=\"token\":\"abcd1234efgh\" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	status, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.Contains(status, " 200 ") {
		t.Fatalf("status %q", status)
	}
	waitFor(t, "the access line", func() bool { return strings.Contains(h.logs.String(), "/api/x?data=") })
	logs := h.logs.String()
	if strings.Contains(logs, "hunter2x") || strings.Contains(logs, "abcd1234efgh") {
		t.Errorf("a secret in a raw query reached the log:\n%s", logs)
	}
}
