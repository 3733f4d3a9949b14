package proxy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const readersMetric = "chatguard_websocket_relay_readers"

func needPoller(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the readiness poller is Linux's epoll; elsewhere every direction keeps a reader")
	}
}

// An idle relayed socket holds no goroutine: both of its directions wait in
// the poller, and wake when a message comes.
func TestWebSocketIdleSocketsHoldNoReader(t *testing.T) {
	t.Parallel()
	needPoller(t)
	srv := upstream(t, newRelayUpstream().ServeHTTP)
	h := start(t, srv.URL, nil)
	const n = 12
	conns := make([]*websocket.Conn, n)
	var ctx = t.Context()
	for i := range conns {
		conns[i], ctx = dialWS(t, h, "/ws/echo", nil)
	}
	echo := func(round int) {
		t.Helper()
		for i, c := range conns {
			want := fmt.Sprintf("round %d client %d", round, i)
			if err := c.Write(ctx, websocket.MessageText, []byte(want)); err != nil {
				t.Fatal(err)
			}
			if _, got, err := c.Read(ctx); err != nil || string(got) != want {
				t.Fatalf("client %d got %q, %v; want %q", i, got, err, want)
			}
		}
	}
	echo(1)
	waitMetric(t, h, `chatguard_websocket_connections{kind="websocket"}`, n)
	waitMetric(t, h, readersMetric, 0)
	for round := 2; round <= 4; round++ { // woken from the poller, every time
		echo(round)
		waitMetric(t, h, readersMetric, 0)
	}
	// Closing idle sockets, from either side, still ends both.
	for i, c := range conns {
		if i%2 == 0 {
			_ = c.Close(websocket.StatusNormalClosure, "")
			continue
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("please close 4002")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != 4002 {
			t.Errorf("client %d, after the upstream closed: %v, want 4002", i, err)
		}
	}
	waitMetric(t, h, `chatguard_websocket_connections{kind="websocket"}`, 0)
	waitMetric(t, h, readersMetric, 0)
	if h.srv.ws.poller.len() != 0 {
		t.Errorf("the poller still watches %d sockets", h.srv.ws.poller.len())
	}
}

// Frames that arrive together (a burst in one TCP segment, or frames sent
// with the handshake itself) are all relayed although the socket reports
// readable once: they wait in the library's buffer, not in the socket.
func TestWebSocketFramesInOneSegment(t *testing.T) {
	t.Parallel()
	srv := upstream(t, newRelayUpstream().ServeHTTP)
	h := start(t, srv.URL, nil)
	for _, withHandshake := range []bool{false, true} {
		conn := rawConn(t, h)
		hs := upgradeText("/ws/echo", "")
		var burst []byte
		var want []string
		for i := 0; i < 40; i++ {
			msg := fmt.Sprintf("message %02d", i)
			want = append(want, msg)
			if i == 7 { // one message in two frames, a ping between them
				burst = append(burst, frame(false, 0x1, true, []byte(msg[:4]))...)
				burst = append(burst, frame(true, 0x9, true, []byte("p"))...)
				burst = append(burst, frame(true, 0x0, true, []byte(msg[4:]))...)
				continue
			}
			burst = append(burst, frame(true, 0x1, true, []byte(msg))...)
		}
		br := bufio.NewReader(conn)
		if withHandshake {
			// The frames come in the same write as the upgrade request: net/http
			// has them in its buffer when chatguard takes the connection over.
			if _, err := conn.Write(append([]byte(hs), burst...)); err != nil {
				t.Fatal(err)
			}
			readUpgrade(t, br)
		} else {
			if _, err := io.WriteString(conn, hs); err != nil {
				t.Fatal(err)
			}
			readUpgrade(t, br)
			if _, err := conn.Write(burst); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		for len(got) < len(want) {
			op, payload := readFrame(t, br)
			if op == 0x1 {
				got = append(got, string(payload))
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("handshake burst %v: got %q, want %q", withHandshake, got, want)
		}
	}
}

// The upstream's first frames may come in the same segment as its 101 (a
// Socket.IO server sends its open packet at once): they are relayed without
// waiting for more.
func TestWebSocketUpstreamFramesWithHandshake(t *testing.T) {
	t.Parallel()
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		out := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
		for i := 0; i < 3; i++ {
			out = append(out, frame(true, 0x1, false, []byte(fmt.Sprintf("hello %d", i)))...)
		}
		if _, err := conn.Write(out); err != nil {
			return
		}
		_, _ = brw.ReadByte() // the close frame: then drop the connection
	})
	h := start(t, srv.URL, nil)
	c, ctx := dialWS(t, h, "/ws/first", nil)
	for i := 0; i < 3; i++ {
		_, got, err := c.Read(ctx)
		if want := fmt.Sprintf("hello %d", i); err != nil || string(got) != want {
			t.Fatalf("message %d: %q, %v; want %q", i, got, err, want)
		}
	}
	if runtime.GOOS == "linux" {
		// Only the upstream's silence is left: the direction waits without a reader.
		waitMetric(t, h, readersMetric, 0)
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	waitMetric(t, h, `chatguard_websocket_connections{kind="websocket"}`, 0)
}

func readUpgrade(t *testing.T, br *bufio.Reader) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
}

// rawConn opens a TCP connection to h's public listener (closed at
// cleanup, 20 s deadline), for a client written by hand.
func rawConn(t *testing.T, h *harness) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	return conn
}

// upgradeText is a WebSocket upgrade request for path; extra holds more
// header lines, each ending in CRLF.
func upgradeText(path, extra string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + extra + "\r\n"
}

// readFrame reads one unmasked server frame: its opcode and payload. The
// test fails if none comes.
func readFrame(t *testing.T, br *bufio.Reader) (byte, []byte) {
	t.Helper()
	_, op, payload, err := rawFrame(br)
	if err != nil {
		t.Fatalf("frame: %v", err)
	}
	return op, payload
}

// rawFrame reads one unmasked frame.
func rawFrame(br *bufio.Reader) (fin bool, op byte, payload []byte, err error) {
	var hdr [2]byte
	if _, err = io.ReadFull(br, hdr[:]); err != nil {
		return
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err = io.ReadFull(br, ext[:]); err != nil {
			return
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err = io.ReadFull(br, ext[:]); err != nil {
			return
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(br, payload)
	return hdr[0]&0x80 != 0, hdr[0] & 0x0f, payload, err
}
