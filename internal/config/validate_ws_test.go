package config_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/config"
)

func TestValidateWebSocket(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(w *config.WebSocket)
		want []string // substrings, one problem each, in order; nil = valid
	}{
		{"defaults", func(*config.WebSocket) {}, nil},
		{"origins", func(w *config.WebSocket) { w.Origins = []string{"*.example.com", "localhost:*", "[", ""} }, []string{
			`websocket.origins: "[" is not a valid host pattern`, `websocket.origins: "" is not a valid host pattern`,
		}},
		{"socket.io path without its slash", func(w *config.WebSocket) { w.SocketIOPath = "/socket.io" }, nil}, // addTrailingSlash: false
		{"socket.io path", func(w *config.WebSocket) { w.SocketIOPath = "socket.io/" }, []string{`"socket.io/" must start with / and name a path`}},
		{"socket.io path root", func(w *config.WebSocket) { w.SocketIOPath = "/" }, []string{`"/" must start with / and name a path`}},
		{"timeouts", func(w *config.WebSocket) { w.HandshakeTimeout, w.IdleTimeout, w.ConsistencyCheck = 0, -time.Second, -1 }, []string{
			"websocket.handshake_timeout: must be between", "websocket.idle_timeout: must not be negative", "websocket.consistency_interval: must not be negative",
		}},
		{"message size", func(w *config.WebSocket) { w.MaxMessageBytes = 100 }, []string{"websocket.max_message_bytes: must be between 1024"}},
		{"auth", func(w *config.WebSocket) { w.Auth = "sometimes" }, []string{`websocket.auth: "sometimes" must be none, optional or required`}},
		{"auth required without keys", func(w *config.WebSocket) { w.Auth = "required" }, []string{"websocket.auth: required, but neither"}},
		{"drain code", func(w *config.WebSocket) { w.DrainCloseCode = 1000 }, []string{"websocket.drain_close_code: must be 1001 or 1012"}},
		{"socket limits", func(w *config.WebSocket) { w.MaxSocketsPerUser, w.MaxSocketsPerIP = -1, 2_000_000 }, []string{
			"websocket.max_sockets_per_user: must be between", "websocket.max_sockets_per_ip: must be between",
		}},
		{"event names", func(w *config.WebSocket) { w.ErrorEvent, w.JoinEvent, w.LeaveEvent = "disconnect", `a"b`, "" }, []string{
			`websocket.error_event: "disconnect" is reserved`, `websocket.join_event: "a\"b" must be`, `websocket.leave_event: "" must be`,
		}},
		{"conversation field", func(w *config.WebSocket) { w.ConversationField = "" }, []string{"websocket.conversation_field: must be set"}},
		{"event limits", func(w *config.WebSocket) {
			w.Events = []config.EventLimit{
				{Name: "ok", Limit: config.RouteLimit{Rate: 1, Period: time.Second, Key: []string{"ip"}}},
				{Name: "ok", Limit: config.RouteLimit{Rate: 0, Period: time.Second}},
				{Name: "body", Limit: config.RouteLimit{Rate: 1, Period: time.Second, Key: []string{"body:x"}, Roles: map[string]int{"boss": 2}}},
			}
		}, []string{
			`websocket.events[1].name: "ok" is used twice`, "websocket.events[1].limit.rate: must be between 1",
			`websocket.events[2].limit.key: "body:x" is not ip or user`, `websocket.events[2].limit.roles: "boss" is not admin, agent or basic`,
		}},
		{"too many events", func(w *config.WebSocket) {
			w.Events = nil
			for i := range 65 {
				w.Events = append(w.Events, config.EventLimit{Name: fmt.Sprintf("e%d", i), Limit: config.RouteLimit{Rate: 1, Period: time.Minute}})
			}
		}, []string{"websocket.events: at most 64 events"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := config.Defaults()
			tt.edit(&c.WebSocket)
			got := config.Validate(c)
			if len(got) != len(tt.want) {
				t.Fatalf("Validate = %d problems %q, want %d %q", len(got), got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}
