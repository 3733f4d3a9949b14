package proxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// chatguard's own response fields (the request id, the RateLimit fields)
// are on the final response even after the upstream sent a 1xx (Node
// answers Expect: 100-continue and writeEarlyHints with one, and
// ReverseProxy clears the header map after relaying it), and the upstream's
// own X-Request-ID never makes it a second value.
func TestOwnFieldsSurviveInformationalResponses(t *testing.T) {
	t.Parallel()
	var sawExpect atomic.Bool
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Expect") != "" {
			sawExpect.Store(true)
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.Header().Set("X-Request-Id", "upstream-103-id")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("X-Request-Id", "upstream-own-id")
		w.Header().Add("RateLimit-Policy", `"app";q=100;w=60`)
		if r.URL.Query().Get("fail") != "" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
	h, _ := startGuarded(t, up.URL, nil)
	for _, path := range []string{"/api/auth/login", "/api/auth/login?fail=1"} {
		var informational atomic.Int32
		var earlyIDs atomic.Value
		req, _ := http.NewRequest(http.MethodPost, h.url+path, strings.NewReader(`{"email":"eve@example.com"}`))
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			Got1xxResponse: func(_ int, hdr textproto.MIMEHeader) error {
				informational.Add(1)
				earlyIDs.Store(hdr.Values("X-Request-Id"))
				return nil
			},
		}))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Expect", "100-continue")
		resp, body := h.do(req)
		id := resp.Header.Values("X-Request-Id")
		if len(id) != 1 || !strings.HasPrefix(id[0], "req_") {
			t.Fatalf("%s: X-Request-Id %q", path, id)
		}
		if resp.StatusCode == 500 {
			envelope(t, resp, body) // its requestId must equal the header
		}
		pol := resp.Header.Values("RateLimit-Policy")
		slices.Sort(pol)
		if len(pol) != 2 || pol[0] != `"app";q=100;w=60` || pol[1] != `"auth_login";q=3;w=900` {
			t.Fatalf("%s: RateLimit-Policy %q, want chatguard's and the app's", path, pol)
		}
		if rl := resp.Header.Values("RateLimit"); len(rl) != 1 || !strings.HasPrefix(rl[0], `"auth_login";r=`) {
			t.Fatalf("%s: RateLimit %q", path, rl)
		}
		if informational.Load() == 0 {
			t.Fatalf("%s: the 103 did not reach the client", path)
		}
		if early, _ := earlyIDs.Load().([]string); len(early) != 1 || early[0] != id[0] {
			t.Fatalf("%s: the 103's X-Request-Id %q, want chatguard's %q alone", path, early, id[0])
		}
	}
	if sawExpect.Load() {
		t.Fatal("Expect reached the upstream")
	}
}

// Only WebSocket upgrades reach the upstream as upgrades: any other (h2c, a
// custom protocol) would open a raw tunnel past every check chatguard makes.
func TestOnlyWebSocketUpgradesAreForwarded(t *testing.T) {
	t.Parallel()
	var upgrades atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			upgrades.Add(1)
		}
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "h2c")
		w.WriteHeader(http.StatusSwitchingProtocols)
	}))
	t.Cleanup(up.Close)
	h := start(t, up.URL, nil)
	for _, proto := range []string{"h2c", "foo/1"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // a tunnel would never end
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/tunnel", nil)
		req.Header.Set("Connection", "Upgrade, HTTP2-Settings")
		req.Header.Set("Upgrade", proto)
		resp, body := h.do(req)
		if env := envelope(t, resp, body); resp.StatusCode != 502 {
			t.Fatalf("Upgrade: %s answered %d %v, want 502", proto, resp.StatusCode, env)
		}
	}
	if n := upgrades.Load(); n != 0 {
		t.Fatalf("the upstream saw %d upgrade requests", n)
	}
}

// A client that names X-Request-ID in Connection (a hop-by-hop header to
// drop) does not keep the request id from the upstream: it is set after
// the hop-by-hop headers are removed, on plain requests and on WebSocket
// handshakes alike.
func TestRequestIDSurvivesConnectionHeader(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Get("X-Request-Id") })
	h := start(t, srv.URL, nil)
	req, _ := http.NewRequest(http.MethodGet, h.url+"/api/x", nil)
	req.Header.Set("Connection", "keep-alive, X-Request-ID")
	req.Header.Set("X-Request-Id", "req-from-client-1")
	resp, _ := h.do(req)
	if id := <-got; id == "" || id != resp.Header.Get("X-Request-Id") {
		t.Errorf("upstream got request id %q, the client %q", id, resp.Header.Get("X-Request-Id"))
	}

	up := newRelayUpstream()
	ws := start(t, upstream(t, up.ServeHTTP).URL, nil)
	conn := rawConn(t, ws)
	_, _ = io.WriteString(conn, strings.Replace(upgradeText("/ws/echo", "X-Request-Id: req-ws-2\r\n"), "Connection: Upgrade", "Connection: Upgrade, X-Request-ID", 1))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if id := recv(t, up.headers, "upstream handshake").Get("X-Request-Id"); id != "req-ws-2" {
		t.Errorf("upstream handshake request id %q, want req-ws-2", id)
	}
}

// A chunked request's declared trailers reach the upstream (QA: Node's
// req.trailers was empty through chatguard); undeclared ones, and fields
// chatguard sets or that authenticate (a forged X-Forwarded-For or
// Authorization after the body), do not (review).
func TestRequestTrailersReachTheUpstream(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var names []string
		for k := range r.Trailer {
			names = append(names, k)
		}
		slices.Sort(names)
		got <- string(body) + "|" + r.Trailer.Get("X-Sum") + "|" + strings.Join(names, ",") + "|" + r.Header.Get("X-Forwarded-For")
	})
	h := start(t, up.URL, nil)
	statuses, _, _ := rawExchange(t, h, "POST /api/upload HTTP/1.1\r\nHost: chat.example\r\n"+
		"Transfer-Encoding: chunked\r\nTrailer: X-Sum, X-Request-Id\r\n\r\n"+
		"5\r\nhello\r\n0\r\nX-Sum: deadbeef\r\nX-Request-Id: forged\r\nX-Forwarded-For: 6.6.6.6\r\nAuthorization: Bearer x\r\n\r\n")
	if len(statuses) == 0 || !strings.Contains(statuses[0], "200") {
		t.Fatalf("statuses %v", statuses)
	}
	select {
	case s := <-got:
		if want := "hello|deadbeef|X-Sum|127.0.0.1"; s != want {
			t.Fatalf("upstream saw body|trailer|trailer names|XFF %q, want %q", s, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream saw nothing")
	}
}
