package proxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatguard/chatguard/internal/config"
)

// Every token a Socket.IO session presents is checked, on every namespace,
// and they must all name one user: the backend reads each namespace's
// CONNECT payload as the client's credentials, so a payload chatguard let
// through unchecked would reach it as if verified.
func TestSocketIOConnectTokensMustAgree(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.Auth = "required" })
	bearer := func(user string) http.Header {
		return http.Header{"Authorization": {"Bearer " + userToken(t, user, time.Now().Add(time.Hour))}}
	}
	tests := []struct {
		name    string
		header  http.Header
		first   string // CONNECT packets sent in turn; all but the last must be accepted
		second  string
		refused string // the code of the last one's CONNECT_ERROR; "" = forwarded
	}{
		{"handshake for one user, payload for another", bearer("a1@example.com"), "40" + authFor(t, "b1@example.com"), "", "TOKEN_INVALID"},
		{"handshake valid, payload garbage", bearer("a2@example.com"), `40{"token":"not.a.jwt"}`, "", "TOKEN_INVALID"},
		{"handshake valid, payload expired", bearer("a3@example.com"),
			`40{"token":"` + userToken(t, "a3@example.com", time.Now().Add(-time.Hour)) + `"}`, "", "TOKEN_EXPIRED"},
		{"handshake and payload for the same user", bearer("a4@example.com"), "40" + authFor(t, "a4@example.com"), "", ""},
		{"second namespace without a token", nil, "40" + authFor(t, "a5@example.com"), "40/admin,", ""},
		{"second namespace with the same user", nil, "40" + authFor(t, "a6@example.com"), "40/admin," + authFor(t, "a6@example.com"), ""},
		{"second namespace for another user", nil, "40" + authFor(t, "a7@example.com"), "40/admin," + authFor(t, "b7@example.com"), "TOKEN_INVALID"},
		{"second namespace with garbage", nil, "40" + authFor(t, "a8@example.com"), `40/admin,{"token":"x.y.z"}`, "TOKEN_INVALID"},
	}
	refused := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := dialSIO(t, env.harness, tt.header)
			last := tt.first
			if tt.second != "" {
				if got := cl.connect(strings.TrimPrefix(tt.first, "40")); !strings.HasPrefix(got, `40{"sid":`) {
					t.Fatalf("first CONNECT answered %q", got)
				}
				last = tt.second
				cl.send(last)
			} else {
				cl.send(last)
			}
			if tt.refused == "" {
				if tt.second == "" {
					if got := cl.next(); !strings.HasPrefix(got, `40{"sid":`) {
						t.Fatalf("CONNECT answered %q", got)
					}
				}
				waitFor(t, "the upstream to receive "+last, func() bool { return fake.has(last) })
				cl.close()
				return
			}
			refused++
			nsp, _, _ := strings.Cut(strings.TrimPrefix(last, "40"), "{")
			got := cl.next()
			if !strings.HasPrefix(got, "44"+nsp+`{"message":"`+tt.refused+`"`) || !strings.Contains(got, `"code":"`+tt.refused+`"`) {
				t.Fatalf("CONNECT answered %q, want CONNECT_ERROR %s on %q", got, tt.refused, nsp)
			}
			if rest, err := cl.until(); len(rest) != 0 || websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("after CONNECT_ERROR: %q then %v, want close 1008", rest, err)
			}
			if fake.has(last) {
				t.Fatalf("the upstream received %q", last)
			}
		})
	}
	waitMetric(t, env.harness, `chatguard_socketio_event_rejections_total{event="connect",reason="auth"}`, float64(refused))
	env.waitStats(t, [3]int{})
}

// The handshake's tokens are all checked, not only the first: a garbage
// Authorization header beside a valid ?token= (which Socket.IO apps read
// first) is that user's socket, under that user's socket cap; valid tokens
// of two users are refused before any upgrade, in every auth mode.
func TestSocketIOHandshakeTokensAreAllChecked(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.MaxSocketsPerUser = 1 })
	h := env.harness
	ana := userToken(t, "ana@example.com", time.Now().Add(time.Hour))
	bob := userToken(t, "bob@example.com", time.Now().Add(time.Hour))
	dial := func(query string, header http.Header) *sioClient {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, _, err := websocket.Dial(ctx, wsURL(h, sioPath)+query, &websocket.DialOptions{HTTPHeader: header})
		if err != nil {
			cancel()
			t.Fatalf("dial: %v", err)
		}
		cl := &sioClient{t: t, c: c, ctx: ctx, cancel: cancel}
		t.Cleanup(cl.close)
		if open := cl.next(); !strings.HasPrefix(open, `0{"sid":`) {
			t.Fatalf("first message %q", open)
		}
		return cl
	}
	garbage := http.Header{"Authorization": {"Bearer garbage"}}
	first := dial("&token="+ana, garbage)
	if got := first.connect(""); !strings.HasPrefix(got, `40{"sid":`) {
		t.Fatalf("first CONNECT answered %q", got)
	}
	resp, body := upgradeRequest(t, h, sioPath+"&token="+ana, "Authorization", "Bearer garbage")
	if env := envelope(t, resp, body); resp.StatusCode != 429 || env["code"] != "RATE_LIMIT_EXCEEDED" {
		t.Fatalf("second socket of ana: %d %v; it was not counted as hers", resp.StatusCode, env)
	}
	resp, body = upgradeRequest(t, h, sioPath+"&token="+bob, "Authorization", "Bearer "+ana)
	if env := envelope(t, resp, body); resp.StatusCode != 401 || env["code"] != "TOKEN_INVALID" {
		t.Fatalf("tokens of two users: %d %v", resp.StatusCode, env)
	}
	if c := resp.Header.Get("WWW-Authenticate"); !strings.Contains(c, `error="invalid_token"`) {
		t.Errorf("401 without its challenge: WWW-Authenticate %q", c)
	}
	waitMetric(t, h, `chatguard_websocket_upgrades_total{outcome="handshake_failed"}`, 1)
}

// The same on HTTP routes: valid tokens of two users are refused, even on
// an optional route, and a stale one beside a valid one is not.
func TestHTTPTokensOfTwoUsersAreRefused(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	h, _ := startGuarded(t, up.URL, nil)
	ana := userToken(t, "ana@example.com", time.Now().Add(time.Hour))
	bob := userToken(t, "bob@example.com", time.Now().Add(time.Hour))
	stale := userToken(t, "ana@example.com", time.Now().Add(-time.Hour))
	resp, body := h.get("/api/messages/c1?token="+bob, "Authorization", "Bearer "+ana)
	if env := envelope(t, resp, body); resp.StatusCode != 401 || env["code"] != "TOKEN_INVALID" {
		t.Fatalf("two users: %d %v", resp.StatusCode, env)
	}
	if c := resp.Header.Get("WWW-Authenticate"); !strings.Contains(c, `error="invalid_token"`) {
		t.Errorf("401 without its challenge: WWW-Authenticate %q", c)
	}
	if resp, body := h.get("/api/messages/c1?token="+stale, "Authorization", "Bearer "+ana); resp.StatusCode != 200 {
		t.Fatalf("a stale query token beside a valid header: %d %s", resp.StatusCode, body)
	}
}

// Connection state recovery goes by the socket's private id (pid), and
// with skipMiddlewares the backend gives the old socket back, old user
// included, whatever the new token says: chatguard would count bob while
// the backend serves alice, and a kick of alice would miss her (QA). A
// CONNECT carrying a pid chatguard admitted for another user (anonymous
// included: a logout) goes on without pid and offset, so the backend
// connects a new socket on the new token; the same user's keeps them.
func TestRecoveryOfAnotherUsersSocketIsTakenOut(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{socketID: "sock-a", pid: "pid"}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, nil)
	h := env.harness

	first := dialSIO(t, h, nil)
	if got := first.connect(authFor(t, testUser)); got != `40{"sid":"sock-a","pid":"pid-1"}` {
		t.Fatalf("first CONNECT: %q", got)
	}
	first.close()
	env.waitStats(t, [3]int{0, 0, 0})

	bob := userToken(t, "bob@example.com", time.Now().Add(time.Hour))
	for _, tc := range []struct {
		name, auth, want string
	}{
		{"another user", `{"token":"` + bob + `","pid":"pid-1","offset":"o1"}`, `40{"token":"` + bob + `"}`},
		{"anonymous", `{"pid":"pid-1","offset":"o1"}`, `40{}`},
		{"an unknown pid", `{"pid":"pid-z","offset":"o1"}`, `40{"pid":"pid-z","offset":"o1"}`},
	} {
		c := dialSIO(t, h, nil)
		c.connect(tc.auth)
		waitFor(t, tc.name+": the upstream's CONNECT", func() bool { return fake.has(tc.want) })
		c.close()
	}
	same := `{"token":"` + userToken(t, testUser, time.Now().Add(time.Hour)) + `","pid":"pid-1","offset":"o2"}`
	c := dialSIO(t, h, nil)
	c.connect(same)
	waitFor(t, "the same user's CONNECT, pid kept", func() bool { return fake.has("40" + same) })
	if v := metricValue(t, h, "chatguard_socketio_recoveries_refused_total"); v != 2 {
		t.Errorf("recoveries refused = %v, want 2", v)
	}
}
