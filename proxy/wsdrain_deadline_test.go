package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/config"
)

// A client that never answers the drain's close frame is dropped at the
// shutdown deadline, not after the library's own 5 s wait for that frame
// (QA: with shutdown_timeout 30ms the process took 5.0 s to exit, past a
// grace period sized from the two settings).
func TestDrainDeadlineBoundsAnUnansweredClose(t *testing.T) {
	t.Parallel()
	srv := upstream(t, newRelayUpstream().ServeHTTP)
	h := start(t, srv.URL, func(c *config.Config) { c.Server.ShutdownTimeout = 200 * time.Millisecond })
	conn, br := rvDialRaw(t, h, "/ws/echo")
	defer conn.Close()
	rvPair(t, h)
	begin := time.Now()
	res := h.srv.Drain(context.Background())
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("drain took %v with shutdown_timeout 200ms (the close frame was never answered)", took.Round(time.Millisecond))
	}
	if res.UpgradedClosed != 1 {
		t.Errorf("drain closed %d upgraded connections, want 1", res.UpgradedClosed)
	}
	if op, _ := readFrame(t, br); op != 0x8 {
		t.Errorf("the client got opcode %x, want the close frame", op)
	}
	waitFor(t, "the pair over", func() bool { return h.srv.ws.live() == 0 })
}
