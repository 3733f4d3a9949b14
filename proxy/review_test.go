package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatguard/chatguard/internal/config"
)

// Engine.IO matches its path by a raw prefix of req.url, dot segments and
// all: /socket.io/../x?EIO=4 is a Socket.IO connection to the upstream. It
// must not pass chatguard as a plain WebSocket, uninspected: a path with a
// dot segment is refused before it reaches anything.
func TestReviewDotSegmentsDoNotSkipSocketIOInspection(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{}
	var mu sync.Mutex
	var uris []string
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		uris = append(uris, r.RequestURI)
		mu.Unlock()
		fake.ServeHTTP(w, r)
	})
	env := startSIO(t, up.URL, func(c *config.Config) { c.WebSocket.Auth = "required" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range []string{"/socket.io/../x?EIO=4&transport=websocket", "/socket.io/%2e%2e/x?EIO=4&transport=websocket"} {
		c, resp, err := websocket.Dial(ctx, wsURL(env.harness, p), nil)
		if err == nil {
			c.CloseNow()
			t.Fatalf("%s: upgraded; want it refused", p)
		}
		if resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s: %v (%v), want 400", p, resp, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(uris) != 0 {
		t.Errorf("the upstream saw %q", uris)
	}
}

// A polling session chatguard ended (here: CONNECT refused for want of a
// token) must not become "a session chatguard never saw": the upstream still
// has it, and its next POST would go there uninspected.
func TestReviewKilledPollingSessionStaysClosed(t *testing.T) {
	t.Parallel()
	fake := newFakePolling(t, 20*time.Second)
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.Auth = "required" })
	h := env.harness
	poll(t, h, http.MethodGet, "", "")
	if _, body := poll(t, h, http.MethodPost, "&sid=p1", "40"); body != "ok" {
		t.Fatalf("POST CONNECT: %q", body)
	}
	if _, body := poll(t, h, http.MethodGet, "&sid=p1", ""); !strings.HasPrefix(body, "44") {
		t.Fatalf("GET: %q, want CONNECT_ERROR", body)
	}
	resp, _ := poll(t, h, http.MethodPost, "&sid=p1", "40")
	for _, b := range fake.postBodies() {
		if strings.Contains(b, "40") {
			t.Fatalf("the upstream got an unauthenticated CONNECT on the refused session (%d): %q", resp.StatusCode, fake.postBodies())
		}
	}
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("POST on the closed session answered %d, want 400", resp.StatusCode)
	}
}

// A second WebSocket on a polling session must not take the session over:
// when the first one upgrades and ends, the session (its registry entry,
// its admission) must end too.
func TestReviewSecondProbeDoesNotLeakSession(t *testing.T) {
	t.Parallel()
	env, _ := pollingSession(t, nil)
	h := env.harness
	sess := pollSession(h, "p1")
	pairOf := func() *wsPair {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		return sess.pair
	}

	first, ctx := dialWS(t, h, sioPath+"&sid=p1", nil)
	waitFor(t, "the first probe attached", func() bool { return pairOf() != nil })
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if second, _, err := websocket.Dial(dctx, wsURL(h, sioPath+"&sid=p1"), nil); err == nil {
		_ = second.Close(websocket.StatusNormalClosure, "")
		waitFor(t, "the second probe gone", func() bool { return pairOf() == nil || h.srv.ws.live() == 1 })
		time.Sleep(50 * time.Millisecond) // let its detach run
	}
	for _, m := range []string{"2probe", "5"} {
		if err := first.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if _, msg, err := first.Read(ctx); err != nil || string(msg) != "3probe" {
		t.Fatalf("probe: %q %v", msg, err)
	}
	_ = first.Close(websocket.StatusNormalClosure, "")
	env.waitStats(t, [3]int{})
}

// A POST body too big to inspect must not reach the upstream uninspected
// (on a WebSocket the same bytes close the socket with 1009).
func TestReviewOversizedPollBodyIsNotForwarded(t *testing.T) {
	t.Parallel()
	fake := newFakePolling(t, 20*time.Second)
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) {
		c.WebSocket.MaxMessageBytes = 1024
		c.WebSocket.Events = []config.EventLimit{{Name: "send-message", Limit: config.RouteLimit{Rate: 1, Period: time.Minute}}}
	})
	h := env.harness
	connectPolling(t, env)
	ev := make([]string, 200) // ~5 KB: over 2 × max_message_bytes
	for i := range ev {
		ev[i] = `42["send-message",{}]`
	}
	resp, _ := poll(t, h, http.MethodPost, "&sid=p1", strings.Join(ev, "\x1e"))
	for _, b := range fake.postBodies() {
		if strings.Count(b, "send-message") > 1 {
			t.Fatalf("the upstream got %d over-limit events in one uninspected body (status %d)", strings.Count(b, "send-message"), resp.StatusCode)
		}
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized POST answered %d, want 413", resp.StatusCode)
	}
}

// What a polling client is owed must stay bounded when it never polls: one
// POST of small over-limit events must not queue an envelope per event.
func TestReviewPollingNoticesAreBounded(t *testing.T) {
	t.Parallel()
	env, _ := pollingSession(t, oneMessagePerMinute)
	h := env.harness
	ev := make([]string, 5000) // ~110 KB in
	for i := range ev {
		ev[i] = `42["send-message",{}]`
	}
	poll(t, h, http.MethodPost, "&sid=p1", strings.Join(ev, "\x1e"))
	sess := pollSession(h, "p1")
	sess.mu.Lock()
	n, size := len(sess.notices), 0
	for _, p := range sess.notices {
		size += len(p)
	}
	sess.mu.Unlock()
	if n > maxOwedNotices {
		t.Fatalf("one POST queued %d notices (%d bytes) for the client", n, size)
	}
}

// engine.io with addTrailingSlash: false serves every URL starting with
// "/socket.io", so /socket.ioX?EIO=4 is a Socket.IO connection to such an
// upstream (QA: it passed as a plain WebSocket, anonymous with auth required
// and past every event limit). websocket.socketio_path: /socket.io (no
// slash) says so, and then those paths are inspected. With the slash (the
// default, engine.io's), they are the app's own and pass (review: a custom
// /chat/ caught /chatrooms/42?sid=…).
func TestSocketIOPathWithoutTrailingSlashIsInspected(t *testing.T) {
	t.Parallel()
	noSlash := startSIO(t, upstream(t, (&fakeSIO{}).ServeHTTP).URL, func(c *config.Config) {
		c.WebSocket.Auth = "required"
		c.WebSocket.SocketIOPath = "/socket.io"
	})
	withSlash := startSIO(t, upstream(t, (&fakeSIO{}).ServeHTTP).URL, func(c *config.Config) { c.WebSocket.Auth = "required" })
	for _, tc := range []struct {
		env       *sioEnv
		path      string
		inspected bool
	}{
		{noSlash, "/socket.io?EIO=4&transport=websocket", true},
		{noSlash, "/socket.ioX?EIO=4&transport=websocket", true},
		{noSlash, "/socket.io-x/y?EIO=4&transport=websocket", true},
		{withSlash, "/socket.io?EIO=4&transport=websocket", true},
		{withSlash, "/socket.io/?EIO=4&transport=websocket", true},
		{withSlash, "/socket.ioX?EIO=4&transport=websocket", false},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, _, err := websocket.Dial(ctx, wsURL(tc.env.harness, tc.path), nil)
		if err != nil {
			cancel()
			t.Fatalf("%s: %v", tc.path, err)
		}
		cl := &sioClient{t: t, c: c, ctx: ctx, cancel: cancel}
		cl.next() // the open packet
		if got := cl.connect(""); strings.HasPrefix(got, "44") != tc.inspected {
			t.Errorf("%s: CONNECT without a token answered %q; want inspected = %v", tc.path, got, tc.inspected)
		}
		cl.close()
	}
	// With the slash, an app route that shares the prefix is not refused.
	if resp, _ := withSlash.harness.get("/socket.io-admin/x?sid=abc"); resp.StatusCode == http.StatusBadRequest {
		t.Error("/socket.io-admin/x?sid=… refused under /socket.io/")
	}
}

// Engine.IO traffic outside websocket.socketio_path is the app's Socket.IO
// on a path chatguard was not told about: relayed uninspected, so with auth
// required anonymous clients connect there. The log says so, once per path
// (QA: nothing warned).
func TestEngineIOOutsideTheSocketIOPathIsLogged(t *testing.T) {
	t.Parallel()
	env := startSIO(t, upstream(t, func(w http.ResponseWriter, r *http.Request) {}).URL, func(c *config.Config) { c.WebSocket.Auth = "required" })
	h := env.harness
	for range 3 {
		for _, p := range []string{"/custom/?EIO=4&transport=polling", "/custom/?EIO=4&transport=polling&sid=abc", "/api/messages?x=1", "/api/search?q=EIO=4"} {
			if resp, _ := h.get(p); resp.StatusCode != 200 {
				t.Fatalf("%s: %d", p, resp.StatusCode)
			}
		}
	}
	const msg = "Engine.IO requests outside websocket.socketio_path are relayed without inspection"
	waitFor(t, "the warning", func() bool { return strings.Contains(h.logs.String(), msg) })
	if n := strings.Count(h.logs.String(), msg); n != 1 {
		t.Fatalf("%d warnings for one path, want 1:\n%s", n, h.logs.String())
	}
	if !strings.Contains(h.logs.String(), `"path":"/custom/"`) {
		t.Fatalf("the warning does not name the path:\n%s", h.logs.String())
	}
}
