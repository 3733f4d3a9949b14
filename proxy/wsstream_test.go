package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatguard/chatguard/internal/config"
)

// bigUpstream answers "big <n>" with an n-byte binary message (pattern),
// "cut <n>" with the first half of an n-byte one and then drops the
// connection, and echoes anything else, whatever its size.
func bigUpstream(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	ctx := r.Context()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		cmd, arg, _ := strings.Cut(string(msg), " ")
		n, _ := strconv.Atoi(arg)
		switch {
		case typ == websocket.MessageText && cmd == "big":
			if c.Write(ctx, websocket.MessageBinary, pattern(n)) != nil {
				return
			}
		case typ == websocket.MessageText && cmd == "cuttext": // text cut inside a character
			wr, err := c.Writer(ctx, websocket.MessageText)
			if err != nil {
				return
			}
			_, _ = wr.Write([]byte(strings.Repeat("é", n))[:n|1]) // an odd length ends mid-"é"
			return
		case typ == websocket.MessageText && cmd == "cut":
			wr, err := c.Writer(ctx, websocket.MessageBinary)
			if err != nil {
				return
			}
			_, _ = wr.Write(pattern(n)[:n/2])
			return // dropped in the middle of the message
		default:
			if c.Write(ctx, typ, msg) != nil {
				return
			}
		}
	}
}

// pattern is n bytes that show a byte out of place.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// Messages longer than chatguard holds whole are streamed: the backend's
// of any size (QA: a 1.2 MB one closed the socket), a plain WebSocket
// client's up to websocket.max_message_bytes (16 MiB by default; QA: ws
// sends up to 100 MiB, and 2 MiB closed the socket), byte for byte.
func TestWebSocketStreamsBigMessages(t *testing.T) {
	t.Parallel()
	h := start(t, upstream(t, bigUpstream).URL, nil)
	c, ctx := dialWS(t, h, "/ws/big", nil)
	c.SetReadLimit(-1)
	for _, n := range []int{streamAfter, streamAfter + 1, 3 << 20, 20 << 20} {
		if err := c.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf("big %d", n))); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil || typ != websocket.MessageBinary || !bytes.Equal(got, pattern(n)) {
			t.Fatalf("backend's %d-byte message: %d bytes (%v), %v", n, len(got), typ, err)
		}
	}
	for _, n := range []int{streamAfter + 1, 2 << 20} {
		if err := c.Write(ctx, websocket.MessageBinary, pattern(n)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || !bytes.Equal(got, pattern(n)) {
			t.Fatalf("client's %d-byte message echoed: %d bytes, %v", n, len(got), err)
		}
	}
	want := float64(streamAfter + streamAfter + 1 + 3<<20 + 20<<20 + 2*(streamAfter+1+2<<20))
	if got := metricValue(t, h, `chatguard_websocket_bytes_total{direction="upstream_to_client"}`) +
		metricValue(t, h, `chatguard_websocket_bytes_total{direction="client_to_upstream"}`); got < want {
		t.Errorf("bytes relayed %v, want at least %v", got, want)
	}
}

// A backend that drops its connection in the middle of a message: the
// client never gets the cut message as a whole one (no frame with FIN),
// whether it was streamed or held, and its connection is dropped too, as
// the backend's was. coder/websocket itself reports such a message as
// complete, so the client here reads raw frames.
func TestWebSocketCutMessageIsNotDelivered(t *testing.T) {
	t.Parallel()
	h := start(t, upstream(t, bigUpstream).URL, nil)
	for _, n := range []int{40_000, 1 << 20} { // held whole, streamed
		conn, br := rvDialRaw(t, h, "/ws/big")
		if _, err := conn.Write(frame(true, 1, true, []byte(fmt.Sprintf("cut %d", n)))); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		got := 0
		for {
			fin, op, payload, err := rawFrame(br)
			if err != nil {
				break
			}
			if op >= 8 {
				continue // control frames
			}
			got += len(payload)
			if fin {
				t.Fatalf("%d-byte message cut at %d: the client got a whole message of %d bytes", n, n/2, got)
			}
		}
		if got > n/2 {
			t.Errorf("%d bytes relayed of a message cut at %d", got, n/2)
		}
		_ = conn.Close()
	}
}

// A text message cut inside a character by a dropped connection is a cut
// (the client is dropped too), not invalid UTF-8 (no 1007, no "malformed").
func TestWebSocketCutTextIsACut(t *testing.T) {
	t.Parallel()
	h := start(t, upstream(t, bigUpstream).URL, nil)
	for _, n := range []int{20_000, 300_000} { // held whole, streamed
		conn, br := rvDialRaw(t, h, "/ws/big")
		if _, err := conn.Write(frame(true, 1, true, []byte(fmt.Sprintf("cuttext %d", n)))); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			fin, op, payload, err := rawFrame(br)
			if err != nil {
				break
			}
			if op == 8 {
				t.Fatalf("%d: a close frame %x, want the connection dropped as the backend's was", n, payload)
			}
			if fin && op < 8 {
				t.Fatalf("%d: the cut message arrived whole", n)
			}
		}
		_ = conn.Close()
	}
	if got := metricValue(t, h, `chatguard_websocket_forced_disconnects_total{reason="malformed"}`); got != 0 {
		t.Errorf("a cut counted as malformed %v times", got)
	}
}

// The head of a message that may be streamed fits a pooled buffer: a head
// that doubled it past maxPooledBuffer cost an allocation per message.
func TestStreamHeadFitsThePool(t *testing.T) {
	t.Parallel()
	buf := new(bytes.Buffer)
	lr := io.LimitedReader{R: bytes.NewReader(make([]byte, 1<<20)), N: streamAfter + 1}
	if _, err := buf.ReadFrom(&lr); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != streamAfter+1 || buf.Cap() > maxPooledBuffer {
		t.Errorf("head %d bytes in a buffer of %d, want at most %d", buf.Len(), buf.Cap(), maxPooledBuffer)
	}
}

// A plain WebSocket client is still held to websocket.max_message_bytes
// when its message is streamed: 1009, and the backend's side is closed.
func TestWebSocketStreamedClientMessageOverLimit(t *testing.T) {
	t.Parallel()
	h := start(t, upstream(t, bigUpstream).URL, func(c *config.Config) { c.WebSocket.MaxMessageBytes = 256 << 10 })
	c, ctx := dialWS(t, h, "/ws/big", nil)
	if err := c.Write(ctx, websocket.MessageBinary, pattern(1<<20)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("read after an oversized message: %v, want close 1009", err)
	}
}

// A Socket.IO backend's ack over the old 1 MiB limit reaches the client
// (QA: socket.io sends any size, and a 1.2 MB ack closed the socket).
func TestSocketIOBigAckFromBackend(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{bigAck: 1_200_000}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, nil)
	cl := dialSIO(t, env.harness, nil)
	cl.c.SetReadLimit(-1)
	if got := cl.connect(""); !strings.HasPrefix(got, "40") {
		t.Fatalf("CONNECT answered %q", got)
	}
	cl.send(`421["upload",{}]`)
	if got := cl.next(); len(got) != len(`431[""]`)+1_200_000 || !strings.HasPrefix(got, `431["aaa`) {
		t.Fatalf("ack: %d bytes %q…", len(got), got[:min(len(got), 12)])
	}
}

// A backend whose maxPayload (maxHttpBufferSize) is over chatguard's
// ceiling is told about once, with what to change; its clients are held
// to the ceiling.
func TestSocketIOMaxPayloadOverCeilingWarned(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{maxPayload: 100_000_000}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.MaxMessageBytes = 64 << 10 })
	for range 2 {
		cl := dialSIO(t, env.harness, nil)
		cl.connect("")
	}
	waitFor(t, "the warning", func() bool { return strings.Contains(env.harness.logs.String(), "raise websocket.max_message_bytes") })
	time.Sleep(50 * time.Millisecond)
	if n := strings.Count(env.harness.logs.String(), "raise websocket.max_message_bytes"); n != 1 {
		t.Errorf("warned %d times, want once", n)
	}
	cl := dialSIO(t, env.harness, nil)
	cl.connect("")
	cl.send(`42["x","` + strings.Repeat("b", 70<<10) + `"]`)
	if _, err := cl.until(); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("over the ceiling: %v, want 1009", err)
	}
}

// A sender that stops in the middle of a message — here a frame that
// announces 2,000,000 bytes and sends 4, which the library would refuse
// only once 1 MiB had come — is dropped after readStall, rather than
// holding its reader for good (QA: 40 such sockets, 40 goroutines, no end).
// A slow sender that keeps sending is not.
func TestWebSocketStalledMessageDropped(t *testing.T) {
	t.Parallel()
	h := start(t, upstream(t, bigUpstream).URL, func(c *config.Config) { c.WebSocket.MaxMessageBytes = 1 << 20 })
	h.srv.ws.readStall.Store(int64(time.Second))

	slow, slowBr := rvDialRaw(t, h, "/ws/big")
	msg := frame(true, 2, true, pattern(200<<10))
	go func() {
		for i := 0; i < len(msg); i += len(msg) / 8 {
			_, _ = slow.Write(msg[i:min(i+len(msg)/8, len(msg))])
			time.Sleep(400 * time.Millisecond) // 3.2 s in all, never 1 s without bytes
		}
	}()

	conn, br := rvDialRaw(t, h, "/ws/big")
	hdr := []byte{0x82, 0xff, 0, 0, 0, 0, 0, 0x1e, 0x84, 0x80, 0x11, 0x22, 0x33, 0x44} // binary, masked, 2,000,000 bytes
	if _, err := conn.Write(append(hdr, 'x', 'x', 'x', 'x')); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("the stalled sender's connection was not closed: %v", err)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("dropped after %v, before the stall limit", d)
	}
	waitMetric(t, h, `chatguard_websocket_forced_disconnects_total{reason="read_stalled"}`, 1)

	// Pings between the fragments of a message are not progress: a
	// message left unfinished is dropped all the same.
	pinger, pingerBr := rvDialRaw(t, h, "/ws/big")
	if _, err := pinger.Write(frame(false, 1, true, []byte("first fragment"))); err != nil {
		t.Fatal(err)
	}
	pingsDone := make(chan struct{})
	go func() {
		defer close(pingsDone)
		for range 40 { // 10 s of pings, unless dropped before
			if _, err := pinger.Write(frame(true, 9, true, []byte("p"))); err != nil {
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()
	pingStart := time.Now()
	_ = pinger.SetReadDeadline(time.Now().Add(15 * time.Second))
	// Dropped: EOF, or a reset when the drop met a ping still being sent.
	if _, err := io.Copy(io.Discard, pingerBr); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("a fragmented message kept alive by pings was not dropped: %v", err)
	}
	if d := time.Since(pingStart); d > 6*time.Second {
		t.Errorf("dropped after %v, only once the pings stopped", d)
	}
	<-pingsDone
	waitMetric(t, h, `chatguard_websocket_forced_disconnects_total{reason="read_stalled"}`, 2)

	_ = slow.SetReadDeadline(time.Now().Add(15 * time.Second))
	var echo []byte
	for {
		fin, op, payload, err := rawFrame(slowBr) // streamed back: several frames
		if err != nil {
			t.Fatalf("the slow sender's echo: %d bytes, then %v", len(echo), err)
		}
		if op < 8 {
			echo = append(echo, payload...)
		}
		if fin && op < 8 {
			break
		}
	}
	if !bytes.Equal(echo, pattern(200<<10)) {
		t.Fatalf("the slow sender's echo: %d bytes, not its message", len(echo))
	}
}
