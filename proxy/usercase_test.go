package proxy

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/chatguard/chatguard/internal/config"
)

// User keys are lower-cased when they are e-mail addresses, everywhere
// chatguard counts users (userkey.Normalise), not only in rate limits: two
// sockets of Bob@Example.com and bob@example.com are one connected user,
// share the per-user socket cap and the per-user event limits, and the
// admin DELETE finds them with the e-mail in any case.

// kickUser sends the admin DELETE SessionsPath+user with the stats token.
func kickUser(t *testing.T, h *harness, user string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, h.admin+SessionsPath+user, nil)
	req.Header.Set("Authorization", "Bearer "+testStatsToken)
	return h.do(req)
}

// statsSockets reads data.socket of the admin stats endpoint.
func statsSockets(t *testing.T, h *harness) map[string]int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.admin+StatsPath, nil)
	req.Header.Set("Authorization", "Bearer "+testStatsToken)
	resp, body := h.do(req)
	var out struct {
		Data struct {
			Socket map[string]int `json:"socket"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("stats: %d %s", resp.StatusCode, body)
	}
	return out.Data.Socket
}

// connectAs dials a Socket.IO client through env and connects it with the
// CONNECT payload auth; the CONNECT must be accepted.
func connectAs(t *testing.T, env *sioEnv, auth string) *sioClient {
	t.Helper()
	cl := dialSIO(t, env.harness, nil)
	if got := cl.connect(auth); !strings.HasPrefix(got, `40{"sid":`) {
		t.Fatalf("CONNECT answered %q", got)
	}
	return cl
}

// expectDisconnected: the client hears DISCONNECT, then close 1000.
func expectDisconnected(t *testing.T, cl *sioClient, who string) {
	t.Helper()
	msgs, err := cl.until()
	if len(msgs) != 1 || msgs[0] != "41" || websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("%s got %q then %v; want 41 then close 1000", who, msgs, err)
	}
}

// subAuth is a CONNECT auth payload carrying a valid token whose user is
// the sub claim (no email claim).
func subAuth(t *testing.T, sub string) string {
	return `{"token":"` + token(t, jwt.MapClaims{"sub": sub, "role": "agent", "exp": time.Now().Add(time.Hour).Unix()}) + `"}`
}

func TestSocketIOUserKeyEmailCasePresenceAndKick(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, nil)
	h := env.harness

	upper := connectAs(t, env, authFor(t, "Bob@Example.com"))
	lower := connectAs(t, env, authFor(t, "bob@example.com"))
	env.waitStats(t, [3]int{2, 1, 0})
	if got := statsSockets(t, h); got["connectedSockets"] != 2 || got["connectedUsers"] != 1 {
		t.Fatalf("stats socket block = %v, want 2 sockets of 1 user", got)
	}
	if _, ok := env.std.ConnectedUsers.Get("bob@example.com"); !ok {
		t.Fatal("connectedUsers has no bob@example.com entry")
	}

	// Neither the e-mail as either socket spelt it, nor in a third case, is
	// another user: one DELETE in any case ends both.
	resp, body := kickUser(t, h, "BOB@EXAMPLE.COM")
	if resp.StatusCode != 200 || string(body) != `{"data":{"disconnected":2,"user":"bob@example.com"},"success":true}` {
		t.Fatalf("kick BOB@EXAMPLE.COM: %d %s", resp.StatusCode, body)
	}
	expectDisconnected(t, upper, "Bob@Example.com's socket")
	expectDisconnected(t, lower, "bob@example.com's socket")
	env.waitStats(t, [3]int{})
	if resp, body := kickUser(t, h, "bob@example.com"); resp.StatusCode != 404 {
		t.Fatalf("kick after both left: %d %s, want 404", resp.StatusCode, body)
	}

	// A mixed-case user is found by the lower-case e-mail.
	alice := connectAs(t, env, authFor(t, "Alice@Example.com"))
	env.waitStats(t, [3]int{1, 1, 0})
	resp, body = kickUser(t, h, "alice@example.com")
	if resp.StatusCode != 200 || string(body) != `{"data":{"disconnected":1,"user":"alice@example.com"},"success":true}` {
		t.Fatalf("kick alice@example.com of Alice@Example.com: %d %s", resp.StatusCode, body)
	}
	expectDisconnected(t, alice, "Alice@Example.com's socket")
	env.waitStats(t, [3]int{})
	waitMetric(t, h, `chatguard_websocket_forced_disconnects_total{reason="admin"}`, 3)
}

// max_sockets_per_user counts an e-mail's sockets together whatever its
// case, on a CONNECT payload's token and on the handshake's.
func TestSocketIOUserKeyEmailCaseSocketCap(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.MaxSocketsPerUser = 1 })
	connectAs(t, env, authFor(t, "Bob@Example.com"))

	cl := dialSIO(t, env.harness, nil)
	if got := cl.connect(authFor(t, "bob@example.com")); !strings.HasPrefix(got, `44{"message":"RATE_LIMIT_EXCEEDED"`) ||
		!strings.Contains(got, `"policy":"sockets_per_user"`) {
		t.Fatalf("second socket of bob in lower case: CONNECT answered %q, want CONNECT_ERROR sockets_per_user", got)
	}
	if _, err := cl.until(); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("after the refused CONNECT: %v, want close 1008", err)
	}
	// A socket cap, not an auth failure, and logged (QA soak: counted as
	// reason "auth", and no log line said why).
	waitMetric(t, env.harness, `chatguard_websocket_forced_disconnects_total{reason="socket_limit"}`, 1)
	if v := metricValue(t, env.harness, `chatguard_websocket_forced_disconnects_total{reason="auth"}`); v != 0 {
		t.Errorf("forced disconnects{auth} = %v after a socket-cap refusal", v)
	}
	refused := false
	for _, l := range env.harness.logs.lines(t) {
		if l["msg"] == "socket.io connect refused: too many open sockets" {
			refused = true
			if l["remoteIp"] != "127.0.0.1" || l["policy"] != "sockets_per_user" {
				t.Errorf("the socket-cap line does not say who and which cap: %v", l)
			}
		}
	}
	if !refused {
		t.Error("no log line for the socket-cap refusal")
	}

	tok := userToken(t, "BOB@example.COM", time.Now().Add(time.Hour))
	resp, body := upgradeRequest(t, env.harness, sioPath+"&token="+tok)
	e := envelope(t, resp, body)
	if d, _ := e["details"].(map[string]any); resp.StatusCode != 429 || d["policy"] != "sockets_per_user" {
		t.Fatalf("third socket of bob, token on the handshake: %d %v, want 429 sockets_per_user", resp.StatusCode, e)
	}
	env.waitStats(t, [3]int{1, 1, 0})
}

// A sub is case-sensitive (RFC 7519): Carol and carol are two users, each
// under its own cap, and DELETE finds each only as it is spelt.
func TestSocketIOUserKeySubIsCaseSensitive(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.MaxSocketsPerUser = 1 })
	h := env.harness
	upper := connectAs(t, env, subAuth(t, "Carol"))
	connectAs(t, env, subAuth(t, "carol"))
	env.waitStats(t, [3]int{2, 2, 0})
	if resp, body := kickUser(t, h, "CAROL"); resp.StatusCode != 404 {
		t.Fatalf("kick CAROL: %d %s, want 404", resp.StatusCode, body)
	}
	resp, body := kickUser(t, h, "Carol")
	if resp.StatusCode != 200 || string(body) != `{"data":{"disconnected":1,"user":"Carol"},"success":true}` {
		t.Fatalf("kick Carol: %d %s", resp.StatusCode, body)
	}
	expectDisconnected(t, upper, "Carol's socket")
	env.waitStats(t, [3]int{1, 1, 0})
}

// Per-user event limits: an e-mail's sockets in two cases share one bucket
// (the limiter already keyed them so; this guards it).
func TestSocketIOUserKeyEmailCaseEventLimit(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) {
		c.WebSocket.Events = []config.EventLimit{{Name: "send-message", Limit: config.RouteLimit{Rate: 2, Period: time.Minute}}}
	})
	upper := connectAs(t, env, authFor(t, "Bob@Example.com"))
	lower := connectAs(t, env, authFor(t, "bob@example.com"))
	upper.send(`421["send-message",{}]`)
	if got := upper.next(); got != `431["ok"]` {
		t.Fatalf("first event answered %q", got)
	}
	lower.send(`422["send-message",{}]`)
	if got := lower.next(); got != `432["ok"]` {
		t.Fatalf("second event answered %q", got)
	}
	upper.send(`423["send-message",{}]`)
	if rej := rejection(t, upper.next(), "433"); rej["code"] != "RATE_LIMIT_EXCEEDED" {
		t.Fatalf("third event of bob: %v, want RATE_LIMIT_EXCEEDED", rej)
	}
}
