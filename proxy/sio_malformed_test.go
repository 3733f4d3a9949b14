package proxy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatguard/chatguard/internal/config"
)

// A Socket.IO packet chatguard cannot parse is never forwarded unchecked:
// the backend's decoder is laxer ("40 {}" and "42 6[…]" pass there), so
// forwarding it would skip authentication and the event limits. The socket
// is closed with 1008, as Socket.IO closes one on a packet it cannot decode.
func TestMalformedSocketIOPacketsAreNotForwarded(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.Auth = "required" })
	tests := []struct {
		name    string
		connect bool // CONNECT with a valid token first
		packet  string
	}{
		{"CONNECT with a space, no auth", false, "40 "},
		{"CONNECT with a space before the payload", false, "40 {}"},
		{"EVENT with a space before the ack id", true, `42 6["send-message",{"text":"hi"}]`},
		{"EVENT with a space after the ack id", true, `427 ["send-message",{"text":"hi"}]`},
		{"EVENT that is not JSON", true, `42["send-message",`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := dialSIO(t, env.harness, nil)
			if tt.connect {
				if got := cl.connect(authFor(t, "m@example.com")); !strings.HasPrefix(got, `40{"sid":`) {
					t.Fatalf("CONNECT answered %q", got)
				}
			}
			cl.send(tt.packet)
			if rest, err := cl.until(); len(rest) != 0 || websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("after %q: %q then %v, want close 1008", tt.packet, rest, err)
			}
			if fake.has(tt.packet) {
				t.Fatalf("the upstream received %q", tt.packet)
			}
		})
	}
	waitMetric(t, env.harness, `chatguard_websocket_forced_disconnects_total{reason="malformed"}`, float64(len(tests)))
}

// The same through a polling POST: the packet is taken out of the body.
func TestMalformedSocketIOPacketInPollingIsTakenOut(t *testing.T) {
	t.Parallel()
	fake := newFakePolling(t, time.Minute) // long-polls that end only with the test
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.Auth = "required" })
	h := env.harness
	if resp, _ := poll(t, h, "GET", "", ""); resp.StatusCode != 200 {
		t.Fatalf("handshake: %d", resp.StatusCode)
	}
	// The packets after the one that ended the session are dropped
	// unread: each made a log line of its own (QA: one POST of 40,000
	// wrote 9.8 MB of them).
	body := "40 {}" + strings.Repeat("\x1e42[broken", 2000) + "\x1e42[\"late\"]"
	if resp, _ := poll(t, h, "POST", "&sid=p1", body); resp.StatusCode != 200 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	for _, b := range fake.postBodies() {
		if strings.Contains(b, "40 {}") || strings.Contains(b, "broken") || strings.Contains(b, "late") {
			t.Fatalf("the upstream received %.100q", b)
		}
	}
	waitFor(t, "the malformed packet's line", func() bool { return strings.Contains(h.logs.String(), "socket.io packet refused: malformed") })
	if n := strings.Count(h.logs.String(), "socket.io packet refused"); n != 1 {
		t.Fatalf("%d lines for one POST whose first packet ended the session, want 1", n)
	}
	if n := env.socketStats()[0]; n != 0 {
		t.Fatalf("%d sockets registered", n)
	}
	// The session is over: the next poll says so (Engine.IO close) at
	// once, not when the upstream's long-poll ends (it waited for it: 25 s
	// with Socket.IO's pingInterval), and the end counts as forced.
	done := make(chan string, 1)
	go func() { _, body := poll(t, h, "GET", "&sid=p1", ""); done <- body }()
	select {
	case body := <-done:
		if body != "1" {
			t.Fatalf("the poll after the kill answered %q, want Engine.IO close", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the poll after the kill waited for the upstream's long-poll")
	}
	waitMetric(t, h, `chatguard_websocket_forced_disconnects_total{reason="malformed"}`, 1)
	// The app hears the session end (Engine.IO's close, POSTed for it), as
	// a WebSocket's upstream side is closed: it kept the socket 45 s (e2e QA).
	waitFor(t, "the app to hear the close", func() bool { return slices.Contains(fake.postBodies(), "1") })
}

// A binary message outside a binary packet is what a custom parser (such as
// socket.io-msgpack-parser) sends for every packet, CONNECT included:
// chatguard cannot read it, so with auth required it ends the session
// before it reaches the upstream; attachments of a forwarded binary packet
// still pass. With auth optional it goes on (the upstream judges it).
func TestStrayBinaryMessages(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"required", "optional"} {
		t.Run(mode, func(t *testing.T) {
			fake := &fakeSIO{}
			env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.Auth = mode })
			cl := dialSIO(t, env.harness, nil)
			if got := cl.connect(authFor(t, "m@example.com")); !strings.HasPrefix(got, `40{"sid":`) {
				t.Fatalf("CONNECT answered %q", got)
			}
			cl.send(`451-["upload",{"_placeholder":true,"num":0}]`)
			cl.sendBinary([]byte("attachment"))
			waitFor(t, "the attachment upstream", func() bool { return fake.has("bin:attachment") })
			cl.sendBinary([]byte("msgpack-connect"))
			if mode == "optional" {
				waitFor(t, "the stray message upstream", func() bool { return fake.has("bin:msgpack-connect") })
				return
			}
			if rest, err := cl.until(); len(rest) != 0 || websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("after a stray binary message: %q then %v, want close 1008", rest, err)
			}
			if fake.has("bin:msgpack-connect") {
				t.Fatal("the upstream received the stray binary message")
			}
			waitMetric(t, env.harness, `chatguard_websocket_forced_disconnects_total{reason="malformed"}`, 1)
		})
	}
}

// A text packet whose type Socket.IO's default decoder does not know is
// another parser's (socket.io-json-parser writes `4{"type":0,"nsp":"/"}`,
// CONNECT included): as a stray binary message, it ends the session with
// auth required, and goes on to the upstream otherwise (QA: such an app
// never connected through chatguard, whatever the auth mode). A packet the
// default decoder would read as CONNECT (empty, or white space first) is
// still refused.
func TestForeignTextPackets(t *testing.T) {
	t.Parallel()
	const connect = `4{"type":0,"nsp":"/","data":{"token":"x"}}`
	for _, mode := range []string{"required", "optional", "none"} {
		t.Run(mode, func(t *testing.T) {
			fake := &fakeSIO{}
			env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.Auth = mode })
			cl := dialSIO(t, env.harness, nil)
			cl.send(connect)
			if mode != "required" {
				waitFor(t, "the packet upstream", func() bool { return fake.has(connect) })
				cl.send(`4{"type":2,"nsp":"/","data":["send-message",{"text":"hi"}]}`)
				waitFor(t, "the event upstream", func() bool { return fake.has(`4{"type":2,"nsp":"/","data":["send-message",{"text":"hi"}]}`) })
				cl.send("4 0{}") // the default decoder's CONNECT: never unchecked
				if rest, err := cl.until(); len(rest) != 0 || websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
					t.Fatalf("after a CONNECT with a space: %q then %v, want close 1008", rest, err)
				}
				return
			}
			if rest, err := cl.until(); len(rest) != 0 || websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("after %q: %q then %v, want close 1008", connect, rest, err)
			}
			if fake.has(connect) {
				t.Fatal("the upstream received the packet")
			}
			waitMetric(t, env.harness, `chatguard_websocket_forced_disconnects_total{reason="malformed"}`, 1)
		})
	}
}

// In shadow mode an event over its limit is forwarded, and said: a security
// line names the event, as for HTTP routes.
func TestSocketIOEventShadowMode(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) {
		c.Limits.Shadow = true
		c.WebSocket.Events = []config.EventLimit{{Name: "send-message", Limit: config.RouteLimit{Rate: 1, Period: time.Minute}}}
	})
	cl := dialSIO(t, env.harness, nil)
	if got := cl.connect(authFor(t, "m@example.com")); !strings.HasPrefix(got, `40{"sid":`) {
		t.Fatalf("CONNECT answered %q", got)
	}
	for range 3 {
		cl.send(`42["send-message",{"text":"hi"}]`)
	}
	waitFor(t, "3 events upstream", func() bool { return fake.count(`42["send-message"`) == 3 })
	waitFor(t, "2 shadow lines", func() bool {
		n := 0
		for _, l := range env.harness.logs.lines(t) {
			if l["msg"] == "socket.io event over its limit (shadow mode: let through)" && l["event"] == "send-message" {
				n++
			}
		}
		return n == 2
	})
}

// A connection whose "/" connected anonymously and whose "/admin" then
// carried a user's token is that user's in presence too, not only for the
// rate limits: stats count it, a kick by user reaches it.
func TestSocketIOLaterNamespaceIdentifies(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.Auth = "optional" })
	cl := dialSIO(t, env.harness, nil)
	if got := cl.connect(""); !strings.HasPrefix(got, `40{"sid":`) {
		t.Fatalf("CONNECT answered %q", got)
	}
	env.waitStats(t, [3]int{1, 0, 0})
	cl.send(`40/admin,` + authFor(t, "late@example.com"))
	if got := cl.next(); !strings.HasPrefix(got, `40/admin,{"sid":`) {
		t.Fatalf("/admin CONNECT answered %q", got)
	}
	env.waitStats(t, [3]int{1, 1, 0})
	if n := env.reg.Kick("late@example.com", "admin"); n != 1 {
		t.Fatalf("kick reached %d sockets", n)
	}
}

// chatguard's own packets (here the rejection ack of an over-limit event)
// never land between a binary ack's text message and its attachments:
// socket.io-client then dropped the connection with "parse error: got
// plaintext data when reconstructing a packet" (browser QA, a third of runs).
func TestOwnPacketsWaitForABinaryPacketsAttachments(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{binAck: 300 * time.Millisecond}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, oneMessagePerMinute)
	cl := dialSIO(t, env.harness, nil)
	if got := cl.connect(""); !strings.HasPrefix(got, "40{") {
		t.Fatalf("connect: %q", got)
	}
	cl.send(`421["send-message",{}]`)
	if got := cl.next(); got != `461-1[{"_placeholder":true,"num":0}]` {
		t.Fatalf("binary ack's text message: %q", got)
	}
	cl.send(`422["send-message",{}]`) // over the limit: chatguard answers it, while the attachment is still on its way
	if got := cl.next(); got != "att" {
		t.Fatalf("after the binary ack's text message came %q, not its attachment", got)
	}
	if got := cl.next(); !strings.HasPrefix(got, `432[{"success":false`) {
		t.Fatalf("rejection ack: %q", got)
	}
}

// A client that abandons a binary packet (a text message where its
// attachment should be) does not keep chatguard's own packets to the app
// waiting: an eviction's DISCONNECT still reaches the app (review: held
// back for good, it was dropped after the wait).
func TestAbandonedBinaryPacketFreesTheWayToTheApp(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, nil)
	cl := dialSIO(t, env.harness, nil)
	if got := cl.connect(""); !strings.HasPrefix(got, "40{") {
		t.Fatalf("connect: %q", got)
	}
	cl.send(`451-["send-message",{"_placeholder":true,"num":0}]`) // its attachment never comes
	cl.send(`42["typing",{}]`)
	waitFor(t, "the app to get the typing event", func() bool { return fake.has(`42["typing",{}]`) })
	if n := env.reg.KickAddr(netip.MustParsePrefix("127.0.0.1/32"), "admin"); n != 1 {
		t.Fatalf("kicked %d sockets", n)
	}
	if got := cl.next(); got != "41" {
		t.Fatalf("client got %q, want DISCONNECT", got)
	}
	waitFor(t, "the app to hear the client leave (41)", func() bool { return fake.has("41") })
}
