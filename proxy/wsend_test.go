package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatguard/chatguard/internal/config"
)

// A client that goes away without a close frame (TCP FIN, a crashed
// browser tab) ends the pair, and chatguard closes its end of that socket:
// before, it stayed in CLOSE-WAIT and its descriptor leaked.
func TestWebSocketClientFINIsClosed(t *testing.T) {
	t.Parallel()
	h := start(t, upstream(t, newRelayUpstream().ServeHTTP).URL, nil)
	for _, asleep := range []bool{false, true} {
		conn, br := rvDialRaw(t, h, "/ws/echo")
		if _, err := conn.Write(frame(true, 1, true, []byte("hi"))); err != nil {
			t.Fatal(err)
		}
		if op, got := readFrame(t, br); op != 1 || string(got) != "hi" {
			t.Fatalf("echo: %d %q", op, got)
		}
		if asleep {
			putToSleep(t, h, 1)
		}
		_ = conn.(*net.TCPConn).CloseWrite()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, br); err != nil {
			t.Fatalf("asleep %v: chatguard never closed its end: %v", asleep, err)
		}
		waitMetric(t, h, `chatguard_websocket_connections{kind="websocket"}`, 0)
	}
}

// chattyUpstream pushes a message every 10 ms (a busy room): its direction
// toward the client is always reading.
func chattyUpstream(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := c.CloseRead(context.Background())
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("tick")); err != nil {
			return
		}
	}
}

// A message over the read limit closes the sender's side with 1009, and
// chatguard reads on (and drops) the rest of what the sender is still
// sending until its close frame: a client answers a close only once its
// message is out, so without that it never saw the 1009. The upstream's
// answer to its own 1009 must not cut that short (a busy upstream's
// direction reads it at once), and a close that came with the message ends
// the wait at once.
func TestWebSocketOverLimitSenderSeesTheClose(t *testing.T) {
	t.Parallel()
	needPoller(t)
	ups := map[string]http.HandlerFunc{"echo": newRelayUpstream().ServeHTTP, "busy": chattyUpstream}
	for name, up := range ups {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := start(t, upstream(t, up).URL, func(c *config.Config) { c.WebSocket.MaxMessageBytes = 4096 })
			for _, idle := range []time.Duration{0, wsLinger + 100*time.Millisecond} {
				for round := 0; round < 3; round++ {
					overLimit(t, h, idle)
				}
			}
		})
	}
	t.Run("close with the message", func(t *testing.T) {
		t.Parallel()
		h := start(t, upstream(t, newRelayUpstream().ServeHTTP).URL, func(c *config.Config) { c.WebSocket.MaxMessageBytes = 4096 })
		conn, br := rvDialRaw(t, h, "/ws/echo")
		msg := append(frame(true, 2, true, make([]byte, 4100)), frame(true, 8, true, []byte{0x03, 0xe8})...)
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, br); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("closed %v after a message and its close frame, not at once", d)
		}
	})
}

// overLimit sends a 4 MiB message through h (limit 4096) after idle, and
// checks the sender's side of the 1009.
func overLimit(t *testing.T, h *harness, idle time.Duration) {
	t.Helper()
	conn, br := rvDialRaw(t, h, "/ws/echo")
	time.Sleep(idle)           // 0: a reader is there; else the direction waits in the poller
	big := make([]byte, 4<<20) // more than both sockets' buffers hold
	hdr := []byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}
	binary.BigEndian.PutUint64(hdr[2:10], uint64(len(big)))
	sent := make(chan error, 1)
	go func() { // masked with 1 2 3 4: the payload's content does not matter
		_, err := conn.Write(append(hdr, big...))
		sent <- err
	}()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	op, payload := readFrame(t, br)
	for op == 1 { // a busy upstream's messages before the close
		op, payload = readFrame(t, br)
	}
	if op != 8 || len(payload) < 2 || binary.BigEndian.Uint16(payload) != 1009 {
		t.Fatalf("idle %v: got opcode %d %q, want close 1009", idle, op, payload)
	}
	if err := recv(t, sent, "the sender's message to go out"); err != nil {
		t.Fatalf("idle %v: sending: %v", idle, err)
	}
	if _, err := conn.Write(frame(true, 8, true, []byte{0x03, 0xf1})); err != nil { // the client's answer: 1009
		t.Fatalf("idle %v: answering the close: %v", idle, err)
	}
	start := time.Now()
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("idle %v: chatguard did not close after the close answer: %v", idle, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("idle %v: closed %v after the answer, not at once", idle, d)
	}
	waitMetric(t, h, `chatguard_websocket_connections{kind="websocket"}`, 0)
}

// An upstream that resets its connection while the client sends: the write
// toward it fails, and both of chatguard's sockets of the pair are closed.
// The library does not close a connection whose write failed; when the
// other direction was parked, nobody did, and the socket leaked for good.
func TestFailedRelayWriteClosesBothSockets(t *testing.T) {
	t.Parallel()
	const pairs = 40
	accepted := make(chan struct{}, pairs)
	release := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
		_ = brw.Flush()
		accepted <- struct{}{}
		<-release
		_, _ = brw.ReadByte() // the client's first message is on its way: reset under it
		_ = conn.(*net.TCPConn).SetLinger(0)
	})
	h := start(t, up.URL, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clients := make([]*websocket.Conn, pairs)
	for i := range clients {
		c, _, err := websocket.Dial(ctx, wsURL(h, "/ws/reset"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		clients[i] = c
		<-accepted
	}
	var live []*wsPair
	waitFor(t, fmt.Sprintf("%d pairs", pairs), func() bool { live = pairsOf(h); return len(live) == pairs })
	done := make(chan struct{})
	for _, c := range clients {
		go func() {
			defer func() { done <- struct{}{} }()
			for c.Write(ctx, websocket.MessageText, []byte("hello")) == nil {
			}
		}()
	}
	close(release)
	for range clients {
		<-done
	}
	waitMetric(t, h, `chatguard_websocket_connections{kind="websocket"}`, 0)
	leaked := 0
	for _, p := range live {
		for _, s := range []*wsSock{p.clientSock, p.upSock} {
			if s == nil {
				t.Fatal("a pair's socket is not watched: the test would prove nothing")
			}
			if s.raw.Control(func(uintptr) {}) == nil { // still open
				leaked++
			}
		}
	}
	if leaked > 0 {
		t.Errorf("%d of %d sockets still open after their pairs ended", leaked, 2*pairs)
	}
}
