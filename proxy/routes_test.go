package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/config"
)

type routeCase struct{ method, path, raw, want string }

// checkRoutes builds a table of routes and checks the route each case gets.
func checkRoutes(t *testing.T, routes []config.Route, cases []routeCase) {
	t.Helper()
	table := newRouteTable(routes)
	names := table.names()
	for _, tc := range cases {
		if got := names[table.match(tc.method, tc.path, tc.raw)]; got != tc.want {
			t.Errorf("%s %s (raw %q): route %s, want %s", tc.method, tc.path, tc.raw, got, tc.want)
		}
	}
}

// Routes match as an Express backend routes: a /* prefix, an exact path,
// and :name parameters taking one non-empty segment (QA: a route written
// /v2/rooms/:roomId/members/:userId was valid, never matched, and its
// auth and limit were skipped without a word).
func TestRouteTableMatch(t *testing.T) {
	t.Parallel()
	checkRoutes(t, []config.Route{
		{Name: "kick", Methods: []string{"DELETE"}, Path: "/v2/rooms/:roomId/members/:userId"},
		{Name: "messages", Methods: []string{"GET", "POST"}, Path: "/v2/Rooms/:roomId/messages"},
		{Name: "room_files", Path: "/v2/rooms/:roomId/files/*"},
		{Name: "rooms", Path: "/v2/rooms/*"},
		{Name: "login", Methods: []string{"POST"}, Path: "/auth/login"},
		{Name: "all", Path: "/*"},
	}, []routeCase{
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
	})
	// An earlier public route must not take a spelling Express hands a
	// later protected one (QA: /v2/rooms/lobb%79/x went to public_room,
	// the app ran the :roomId handler, no auth, no limit).
	checkRoutes(t, []config.Route{
		{Name: "public_room", Path: "/v2/rooms/lobby/x"},
		{Name: "rooms", Path: "/v2/rooms/:roomId/*"},
		{Name: "adminpub", Path: "/admin/status"},
		{Name: "admin", Path: "/admin/*"},
		{Name: "messages", Path: "/api/messages/*"},
	}, []routeCase{
		{"GET", "/v2/rooms/lobby/x", "", "public_room"},
		{"GET", "/V2/Rooms/Lobby/X/", "", "public_room"},
		{"GET", "/v2/rooms/lobby/x", "/v2/rooms/lobb%79/x", "rooms"},
		{"GET", "/v2/rooms/lobby/x", "/v2/rooms/lobby/%78", "rooms"},
		{"GET", "/v2/rooms/lobby/x", "/v2/rooms/lobby%2Fx", "rooms"},
		{"GET", "/v2/rooms/lobby/x/", "/v2/rooms/lobby/x%2F", "rooms"},
		{"GET", "/v2/rooms/lobby//x", "", "rooms"},
		{"GET", "/admin/status", "/admin/st%61tus", "admin"},
		{"GET", "/admin/status/", "/admin/status%2F", "admin"},
		{"GET", "/admin/status", "", "adminpub"},
		// Nothing of the app's takes it as sent: the decoded path still
		// counts it, so that a spelling does not dodge a limit.
		{"GET", "/api/messages/1", "/api/m%65ssages/1", "messages"},
		{"GET", "/api//messages/1", "", "messages"},
	})
	// A %2F that joins segments as sent: Express runs the shorter route
	// (review: room_messages, without auth, took it).
	checkRoutes(t, []config.Route{
		{Name: "room_messages", Path: "/v2/rooms/:roomId/messages"},
		{Name: "room", Path: "/v2/rooms/:roomId"},
		{Name: "public", Path: "/public/*"},
		{Name: "settings", Path: "/:tenant/settings"},
	}, []routeCase{
		{"GET", "/v2/rooms/secret-room/messages", "/v2/rooms/secret-room%2Fmessages", "room"},
		{"GET", "/v2/rooms/secret-room/messages", "", "room_messages"},
		{"GET", "/public/x/settings", "/public%2Fx/settings", "settings"},
		{"GET", "/public/x/settings", "", "public"},
	})
}

// The route is picked from the path the upstream gets. An absolute-form
// target is forwarded re-encoded from its decoded path, its %2F a real
// slash: matched on the target as sent, it took a public route while the
// app ran the protected one (review).
func TestRouteFromTheForwardedPath(t *testing.T) {
	t.Parallel()
	got := make(chan string, 4)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { got <- r.URL.EscapedPath() })
	h, _ := startGuarded(t, up.URL, func(c *config.Config) {
		c.Routes = append([]config.Route{
			{Name: "public_msgs", Path: "/v2/rooms/:roomId/messages"},
			{Name: "rooms", Path: "/v2/rooms/:roomId/*", Auth: "required"},
		}, c.Routes...)
	})
	for _, target := range []string{
		"http://a/v2/rooms/a%2Fb{/messages", // absolute form: forwarded as /v2/rooms/a/b%7B/messages
		"/v2/rooms/a%2Fb/messages",          // origin form: forwarded as sent, roomId a/b
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET "+target+" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		status, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		want := map[bool]string{true: " 401 ", false: " 200 "}[strings.HasPrefix(target, "http")]
		if !strings.Contains(status, want) {
			select {
			case p := <-got:
				t.Errorf("%s: %q, want%s (the app got %s)", target, status, want, p)
			default:
				t.Errorf("%s: %q, want%s", target, status, want)
			}
		}
	}
}
