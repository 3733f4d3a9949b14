package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/sessions"
)

// The client's read limit follows the open packet's maxPayload (below the
// configured ceiling): what the upstream would refuse never reaches it, and
// the client hears 1009.
func TestSocketIOReadLimitFollowsMaxPayload(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{maxPayload: 2048}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, nil)
	cl := dialSIO(t, env.harness, nil)
	fits := `42["note","` + strings.Repeat("a", 1900) + `"]`
	cl.send(fits)
	waitFor(t, "the message under maxPayload upstream", func() bool { return fake.has(fits) })
	expectOverMaxPayload(t, cl, fake)
}

// expectOverMaxPayload sends a message over the fake's maxPayload of 2048:
// the client hears 1009, the upstream nothing.
func expectOverMaxPayload(t *testing.T, cl *sioClient, fake *fakeSIO) {
	t.Helper()
	cl.send(`42["note","` + strings.Repeat("b", 3000) + `"]`)
	if _, err := cl.until(); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("after a message over maxPayload: %v, want close 1009", err)
	}
	if fake.count(`42["note","b`) != 0 {
		t.Error("the message over maxPayload reached the upstream")
	}
}

// The hub runs the registry's consistency check every
// websocket.consistency_interval: an entry whose socket is gone is
// removed and counted.
func TestSocketIOConsistencyCheckRuns(t *testing.T) {
	t.Parallel()
	env := startSIO(t, upstream(t, (&fakeSIO{}).ServeHTTP).URL, func(c *config.Config) {
		c.WebSocket.ConsistencyCheck = 100 * time.Millisecond
	})
	env.std.ConnectedUsers.Set("ghost@example.com", sessions.ConnectedUser{SocketID: "gone"})
	waitMetric(t, env.harness, `chatguard_socketio_orphans_total{kind="stale_entry"}`, 1)
	if _, ok := env.std.ConnectedUsers.Get("ghost@example.com"); ok {
		t.Error("the stale entry is still there")
	}
}

// No compression unless websocket.compression: a client offering
// permessage-deflate gets it only then.
func TestWebSocketCompressionOnlyWhenConfigured(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{false, true} {
		h := start(t, upstream(t, newRelayUpstream().ServeHTTP).URL, func(c *config.Config) { c.WebSocket.Compression = on })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, resp, err := websocket.Dial(ctx, wsURL(h, "/ws/echo"), &websocket.DialOptions{CompressionMode: websocket.CompressionContextTakeover})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		got := strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate")
		msg := strings.Repeat("compressible ", 200)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, back, err := c.Read(ctx); err != nil || string(back) != msg {
			t.Errorf("compression %v: echo %d bytes, %v", on, len(back), err)
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
		cancel()
		if got != on {
			t.Errorf("compression %v: permessage-deflate negotiated = %v", on, got)
		}
	}
}
