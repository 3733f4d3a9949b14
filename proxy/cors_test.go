package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// corsApp answers like Express with cors({origin: [allowed], credentials:
// true, exposedHeaders: ["X-Custom"]}): the grant for an allowed Origin, no
// CORS header for any other; except under /public/, a widget route that
// reflects any Origin (cors({origin: true})).
func corsApp(allowed string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o == allowed || o != "" && strings.HasPrefix(r.URL.Path, "/public/") {
			w.Header().Set("Access-Control-Allow-Origin", o)
			w.Header().Set("Access-Control-Allow-Credentials", "true")
			w.Header().Set("Access-Control-Expose-Headers", "X-Custom")
			w.Header().Add("Vary", "Origin")
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"token":"t"}`))
	}
}

// chatguard's own answers (here its 429) carry the CORS headers the app last
// answered the same Origin, so that a cross-origin page can read them as it
// reads the app's own errors (QA, Chromium: "Failed to fetch" on every 401,
// 413 and 429 of chatguard's). An Origin the app did not allow, or never
// saw, gets nothing — nor one it granted on another route only — and
// proxy.cors_from_upstream: false turns it off.
func TestOwnAnswersRepeatTheAppsCORSGrant(t *testing.T) {
	t.Parallel()
	const app, evil = "https://chat.example", "https://evil.example"
	for _, on := range []bool{true, false} {
		h, _ := startGuarded(t, upstream(t, corsApp(app)).URL, func(c *config.Config) { c.Proxy.CORSFromUpstream = on })
		login := func(origin string) *http.Response {
			t.Helper()
			req, _ := http.NewRequest(http.MethodPost, h.url+"/api/auth/login", strings.NewReader(`{"email":"a@b.c","password":"x"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Origin", origin)
			resp, _ := h.do(req)
			return resp
		}
		// Anyone can have the widget route reflect their Origin (review: a
		// grant learned there opened the login route's answers).
		req, _ := http.NewRequest(http.MethodGet, h.url+"/public/widget", nil)
		req.Header.Set("Origin", evil)
		if resp, _ := h.do(req); resp.Header.Get("Access-Control-Allow-Origin") != evil {
			t.Fatalf("the widget route did not reflect the Origin: %v", resp.Header)
		}
		for i := 0; i < 3; i++ { // the login route's 3 attempts; the app grants app
			if resp := login(app); resp.StatusCode != 200 {
				t.Fatalf("attempt %d: %d", i+1, resp.StatusCode)
			}
		}
		for _, tc := range []struct {
			origin string
			grant  bool
		}{{app, on}, {evil, false}, {"https://never-seen.example", false}, {"", false}} {
			resp := login(tc.origin)
			if resp.StatusCode != 429 {
				t.Fatalf("over the limit from %q: %d", tc.origin, resp.StatusCode)
			}
			got := resp.Header.Get("Access-Control-Allow-Origin")
			if !tc.grant {
				if got != "" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
					t.Errorf("on=%v origin %q: chatguard's 429 granted %q", on, tc.origin, got)
				}
				continue
			}
			expose := resp.Header.Get("Access-Control-Expose-Headers")
			if got != app || resp.Header.Get("Access-Control-Allow-Credentials") != "true" ||
				!strings.Contains(expose, "X-Custom") || !strings.Contains(expose, "Retry-After") ||
				!strings.Contains(expose, "RateLimit") || !strings.Contains(expose, "X-Request-ID") ||
				!strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Origin") {
				t.Errorf("on=%v: chatguard's 429 for the app's origin has CORS headers %v", on, resp.Header)
			}
			if n := strings.Count(expose, "RateLimit-Policy"); n != 1 { // QA: each name twice
				t.Errorf("on=%v: Access-Control-Expose-Headers %q names RateLimit-Policy %d times", on, expose, n)
			}
		}
	}
}

// What the app last granted an Origin counts: a wildcard, then the Origin
// itself. An answer without a grant teaches nothing (an app may grant on
// some routes only), so a grant the app withdrew lasts until it expires.
func TestCORSGrantFollowsTheApp(t *testing.T) {
	t.Parallel()
	m, err := newCORSMemory(true)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	req.Header.Set("Origin", "https://a.example")
	granted := http.Header{"Access-Control-Allow-Origin": {"*"}}
	// An answer the app already marked Vary: Origin does not get it twice.
	m.learn(req, http.Header{"Access-Control-Allow-Origin": {"https://a.example"}})
	h := http.Header{"Vary": {"Accept-Encoding, origin"}}
	m.grant(req, h)
	if v := h.Values("Vary"); len(v) != 1 {
		t.Errorf("Vary %q", v)
	}
	m.learn(req, granted)
	h = http.Header{}
	m.grant(req, h)
	if h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Access-Control-Allow-Credentials") != "" || h.Get("Vary") != "" {
		t.Errorf("after a wildcard grant: %v", h)
	}
	m.learn(req, http.Header{"Access-Control-Allow-Origin": {"https://a.example"}})
	h = http.Header{}
	m.grant(req, h)
	if h.Get("Access-Control-Allow-Origin") != "https://a.example" {
		t.Errorf("after the app named the origin: %v", h)
	}
	// A header the answer already has is left alone.
	h = http.Header{"Access-Control-Allow-Origin": {"https://other.example"}}
	m.grant(req, h)
	if h.Get("Access-Control-Allow-Origin") != "https://other.example" || h.Get("Access-Control-Expose-Headers") != "" {
		t.Errorf("an answer with its own CORS headers was changed: %v", h)
	}
}

// A preflight teaches the route of the request it asks about: the login
// route takes POST only, and the first POST chatguard refuses (here its 413)
// comes before any POST reached the app.
func TestPreflightTeachesTheRouteItAsksAbout(t *testing.T) {
	t.Parallel()
	const app = "https://chat.example"
	h, _ := startGuarded(t, upstream(t, corsApp(app)).URL, func(c *config.Config) { c.Server.MaxBodyBytes = 64 })
	pre, _ := http.NewRequest(http.MethodOptions, h.url+"/api/auth/login", nil)
	pre.Header.Set("Origin", app)
	pre.Header.Set("Access-Control-Request-Method", "POST")
	pre.Header.Set("Access-Control-Request-Headers", "content-type")
	if resp, _ := h.do(pre); resp.Header.Get("Access-Control-Allow-Origin") != app {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ := http.NewRequest(http.MethodPost, h.url+"/api/auth/login", strings.NewReader(`{"email":"a@b.c","password":"`+strings.Repeat("x", 200)+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", app)
	resp, _ := h.do(req)
	if resp.StatusCode != 413 || resp.Header.Get("Access-Control-Allow-Origin") != app {
		t.Errorf("chatguard's first answer on the login route after its preflight: %d, CORS %v", resp.StatusCode, resp.Header)
	}
}

// The app's own answers to a page it granted expose chatguard's headers
// too, so that the page can read RateLimit and X-Request-ID; an answer
// without a grant, or with an exposing wildcard, is left as the app sent
// it, and proxy.cors_from_upstream: false turns this off.
func TestAppAnswersExposeChatguardHeaders(t *testing.T) {
	t.Parallel()
	const app = "https://chat.example"
	wildcard := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Expose-Headers", "*")
	})
	for _, on := range []bool{true, false} {
		mux := http.NewServeMux()
		mux.Handle("/wild", wildcard)
		mux.Handle("/", corsApp(app))
		h, _ := startGuarded(t, upstream(t, mux.ServeHTTP).URL, func(c *config.Config) { c.Proxy.CORSFromUpstream = on })
		get := func(path, origin string) http.Header {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, h.url+path, nil)
			req.Header.Set("Origin", origin)
			resp, _ := h.do(req)
			return resp.Header
		}
		want := "X-Custom, Retry-After, RateLimit, RateLimit-Policy, X-Request-ID"
		if !on {
			want = "X-Custom"
		}
		if got := get("/api/messages/c1", app); got.Get("Access-Control-Expose-Headers") != want || got.Get("RateLimit") == "" {
			t.Errorf("on=%v: granted answer exposes %q (RateLimit %q), want %q", on, got.Get("Access-Control-Expose-Headers"), got.Get("RateLimit"), want)
		}
		if got := get("/api/messages/c1", "https://evil.example"); got.Get("Access-Control-Expose-Headers") != "" {
			t.Errorf("on=%v: an answer without a grant exposes %q", on, got.Get("Access-Control-Expose-Headers"))
		}
		if got := get("/wild", app).Values("Access-Control-Expose-Headers"); len(got) != 1 || got[0] != "*" {
			t.Errorf("on=%v: wildcard exposure became %q", on, got)
		}
	}
}
