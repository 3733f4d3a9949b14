package config

import (
	"fmt"
	"path"
	"strings"
	"time"
)

// reservedEvents are the names socket.io-parser refuses in an EVENT.
var reservedEvents = map[string]bool{
	"connect": true, "connect_error": true, "disconnect": true,
	"disconnecting": true, "newListener": true, "removeListener": true,
}

// eventNameWarnings: a limit on a name no client emits never applies (QA:
// connect and chat:* were accepted without a word). Warnings, not
// problems: such a config ran before, and must not stop a pod's start.
func eventNameWarnings(events []EventLimit) []string {
	var out []string
	for i, e := range events {
		switch {
		case reservedEvents[e.Name]:
			out = append(out, fmt.Sprintf("websocket.events[%d].name %q is reserved by Socket.IO: no client emits it, so its limit never applies", i, e.Name))
		case strings.Contains(e.Name, "*"):
			out = append(out, fmt.Sprintf("websocket.events[%d].name %q is matched exactly, not as a pattern: list each event the limit is for", i, e.Name))
		}
	}
	return out
}

// validEventName bounds what may be configured as a Socket.IO event name: each
// one becomes a metrics label value.
func validEventName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if r < 0x21 || r > 0x7e || r == '"' || r == '\\' {
			return false
		}
	}
	return true
}

func validateWebSocket(c *Config, add func(string, string, ...any)) {
	w := &c.WebSocket
	if !strings.HasPrefix(w.SocketIOPath, "/") || w.SocketIOPath == "/" {
		// Without a trailing slash it is engine.io's addTrailingSlash:
		// false (every path that starts with it).
		add("websocket.socketio_path", "%q must start with / and name a path (Socket.IO's path option, e.g. /socket.io/)", w.SocketIOPath)
	}
	for _, o := range w.Origins {
		if _, err := path.Match(o, ""); err != nil || o == "" {
			add("websocket.origins", "%q is not a valid host pattern", o)
		}
	}
	if w.HandshakeTimeout <= 0 || w.HandshakeTimeout > 5*time.Minute {
		add("websocket.handshake_timeout", "must be between 1ns and 5m (got %s)", w.HandshakeTimeout)
	}
	if w.IdleTimeout < 0 {
		add("websocket.idle_timeout", "must not be negative (got %s)", w.IdleTimeout)
	}
	if w.MaxMessageBytes < 1024 || w.MaxMessageBytes > 1<<30 {
		add("websocket.max_message_bytes", "must be between 1024 and %d (got %d)", 1<<30, w.MaxMessageBytes)
	}
	switch w.Auth {
	case "none", "optional":
	case "required":
		if !c.Auth.Configured() {
			add("websocket.auth", "required, but neither auth.jwt_secret nor auth.jwt_public_key_file is set")
		}
	default:
		add("websocket.auth", "%q must be none, optional or required", w.Auth)
	}
	if w.DrainCloseCode != 1001 && w.DrainCloseCode != 1012 {
		add("websocket.drain_close_code", "must be 1001 or 1012 (got %d)", w.DrainCloseCode)
	}
	if w.MaxSocketsPerUser < 0 || w.MaxSocketsPerUser > 1_000_000 {
		add("websocket.max_sockets_per_user", "must be between 0 and 1000000 (got %d)", w.MaxSocketsPerUser)
	}
	if w.MaxSocketsPerIP < 0 || w.MaxSocketsPerIP > 1_000_000 {
		add("websocket.max_sockets_per_ip", "must be between 0 and 1000000 (got %d)", w.MaxSocketsPerIP)
	}
	if w.ConsistencyCheck < 0 {
		add("websocket.consistency_interval", "must not be negative (got %s)", w.ConsistencyCheck)
	}
	for _, kv := range [][2]string{{"error_event", w.ErrorEvent}, {"join_event", w.JoinEvent}, {"leave_event", w.LeaveEvent}} {
		key, v := kv[0], kv[1]
		switch {
		case !validEventName(v):
			add("websocket."+key, "%q must be 1-64 printable ASCII characters without quotes", v)
		case reservedEvents[v]:
			add("websocket."+key, "%q is reserved by Socket.IO: a client drops the connection on it", v)
		}
	}
	if w.ConversationField == "" {
		add("websocket.conversation_field", "must be set")
	}
	seen := map[string]bool{}
	for i := range w.Events {
		e := &w.Events[i]
		key := fmt.Sprintf("websocket.events[%d]", i)
		switch {
		case !validEventName(e.Name):
			add(key+".name", "%q must be 1-64 printable ASCII characters without quotes", e.Name)
		case seen[e.Name]:
			add(key+".name", "%q is used twice", e.Name)
		}
		seen[e.Name] = true
		checkLimit(add, key+".limit", &e.Limit, c.Limits.Multiplier, false)
	}
	if len(w.Events) > 64 {
		add("websocket.events", "at most 64 events (got %d); each one is a metrics label value", len(w.Events))
	}
}
