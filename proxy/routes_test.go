package proxy

import (
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// Routes match as an Express backend routes: a /* prefix, an exact path,
// and :name parameters taking one non-empty segment (QA: a route written
// /v2/rooms/:roomId/members/:userId was valid, never matched, and its
// auth and limit were skipped without a word).
func TestRouteTableMatch(t *testing.T) {
	t.Parallel()
	table := newRouteTable([]config.Route{
		{Name: "kick", Methods: []string{"DELETE"}, Path: "/v2/rooms/:roomId/members/:userId"},
		{Name: "messages", Methods: []string{"GET", "POST"}, Path: "/v2/Rooms/:roomId/messages"},
		{Name: "room_files", Path: "/v2/rooms/:roomId/files/*"},
		{Name: "rooms", Path: "/v2/rooms/*"},
		{Name: "login", Methods: []string{"POST"}, Path: "/auth/login"},
		{Name: "all", Path: "/*"},
	})
	names := table.names()
	tests := []struct{ method, path, raw, want string }{
		{"DELETE", "/v2/rooms/r1/members/u2", "", "kick"},
		{"DELETE", "/V2/ROOMS/r1/members/u2/", "", "kick"},
		{"GET", "/v2/rooms/r1/members/u2", "", "rooms"}, // method narrows
		{"DELETE", "/v2/rooms/r1/members", "", "rooms"}, // a parameter takes a segment
		{"DELETE", "/v2/rooms/r1/members/u2/x", "", "rooms"},
		{"POST", "/v2/rooms/r1/messages", "", "messages"},
		{"HEAD", "/v2/rooms/r1/messages", "", "messages"},
		{"PUT", "/v2/rooms/r1/messages", "", "rooms"},
		{"GET", "/v2/rooms//messages", "", "rooms"}, // no empty parameter
		// Express matches before decoding: roomId is a/b.
		{"POST", "/v2/rooms/a/b/messages", "/v2/rooms/a%2Fb/messages", "messages"},
		{"GET", "/v2/rooms/r1/files", "", "room_files"},
		{"GET", "/v2/rooms/r1/files/a/b.png", "", "room_files"},
		{"GET", "/v2/rooms", "", "rooms"},
		{"POST", "/auth/login", "", "login"},
		{"GET", "/auth/login", "", "all"},
		{"GET", "/", "", "all"},
		{"GET", "/health", "", "all"},
	}
	for _, tc := range tests {
		if got := names[table.match(tc.method, tc.path, tc.raw)]; got != tc.want {
			t.Errorf("%s %s (raw %q): route %s, want %s", tc.method, tc.path, tc.raw, got, tc.want)
		}
	}
}
