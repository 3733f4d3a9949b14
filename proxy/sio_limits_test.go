package proxy

import (
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
