package proxy

import (
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
