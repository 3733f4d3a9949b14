package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatguard/chatguard/internal/config"
)

const sleepingMetric = "chatguard_websocket_sleeping"

// pushUpstream echoes, and sends what arrives on push (or closes with the
// code on closeWith) without being asked: the upstream's side of waking a
// sleeping pair.
type pushUpstream struct {
	push      chan string
	ping      chan chan error // a WebSocket ping; its answer (or error) goes back
	closeWith chan websocket.StatusCode
	ends      chan string
}

func newPushUpstream() *pushUpstream {
	return &pushUpstream{push: make(chan string, 4), ping: make(chan chan error), closeWith: make(chan websocket.StatusCode, 1), ends: make(chan string, 4)}
}

func (u *pushUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"chat.v2"}, InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	type in struct {
		typ websocket.MessageType
		msg []byte
		err error
	}
	msgs, done := make(chan in), make(chan struct{})
	defer close(done)
	go func() {
		for {
			typ, msg, err := c.Read(context.Background())
			select {
			case msgs <- in{typ, msg, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		select {
		case m := <-msgs:
			if m.err != nil {
				select {
				case u.ends <- closeStatus(m.err):
				default: // nobody asks
				}
				return
			}
			if err := c.Write(r.Context(), m.typ, m.msg); err != nil {
				return
			}
		case reply := <-u.ping:
			go func() { reply <- c.Ping(r.Context()) }()
		case s := <-u.push:
			if err := c.Write(r.Context(), websocket.MessageText, []byte(s)); err != nil {
				return
			}
		case code := <-u.closeWith:
			_ = c.Close(code, "upstream bye")
			return
		}
	}
}

// putToSleep waits until every relayed pair can sleep (both directions
// parked) and puts it to sleep, as the janitor does after wsSleepAfter.
func putToSleep(t *testing.T, h *harness, want int) {
	t.Helper()
	waitMetric(t, h, readersMetric, 0)
	waitFor(t, fmt.Sprintf("%d sleeping pairs", want), func() bool {
		asleep := 0
		for _, p := range pairsOf(h) {
			if p.sleep() || p.sleeping.Load() {
				asleep++
			}
		}
		return asleep == want
	})
	waitMetric(t, h, sleepingMetric, float64(want))
}

func pairsOf(h *harness) []*wsPair {
	hub := h.srv.ws
	hub.mu.Lock()
	defer hub.mu.Unlock()
	pairs := make([]*wsPair, 0, len(hub.pairs))
	for p := range hub.pairs {
		pairs = append(pairs, p)
	}
	return pairs
}

func echoOnce(t *testing.T, ctx context.Context, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != msg {
		t.Fatalf("echo of %q: %q, %v", msg, got, err)
	}
}

// A sleeping pair has no library connections; a message from either side
// wakes it, and the new connections keep the subprotocol and the read limit.
func TestWebSocketSleepingPairWakesEitherWay(t *testing.T) {
	t.Parallel()
	needPoller(t)
	up := newPushUpstream()
	h := start(t, upstream(t, up.ServeHTTP).URL, func(c *config.Config) { c.WebSocket.MaxMessageBytes = 4096 })
	c, ctx := dialWS(t, h, "/ws/chat", &websocket.DialOptions{Subprotocols: []string{"chat.v2"}})
	if c.Subprotocol() != "chat.v2" {
		t.Fatalf("subprotocol %q", c.Subprotocol())
	}
	echoOnce(t, ctx, c, "before sleeping")
	putToSleep(t, h, 1)

	echoOnce(t, ctx, c, "woken by the client") // client → upstream and back
	waitMetric(t, h, "chatguard_websocket_wakes_total", 1)
	putToSleep(t, h, 1)

	up.push <- "woken by the upstream"
	if _, got, err := c.Read(ctx); err != nil || string(got) != "woken by the upstream" {
		t.Fatalf("push: %q, %v", got, err)
	}
	waitMetric(t, h, "chatguard_websocket_wakes_total", 2)
	// Binary messages too, and one at the read limit.
	putToSleep(t, h, 1)
	big := strings.Repeat("b", 4096)
	if err := c.Write(ctx, websocket.MessageBinary, []byte(big)); err != nil {
		t.Fatal(err)
	}
	if typ, got, err := c.Read(ctx); err != nil || typ != websocket.MessageBinary || string(got) != big {
		t.Fatalf("binary echo: %v %d bytes, %v", typ, len(got), err)
	}
	// Over the limit after a wake: the new connection has the limit too.
	putToSleep(t, h, 1)
	if err := c.Write(ctx, websocket.MessageText, []byte(big+"x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("over the read limit after a wake: %v, want 1009", err)
	}
	waitMetric(t, h, `chatguard_websocket_connections{kind="websocket"}`, 0)
	waitMetric(t, h, sleepingMetric, 0)
}

// Every way a pair ends works on a sleeping pair.
func TestWebSocketSleepingPairEnds(t *testing.T) {
	t.Parallel()
	needPoller(t)
	cases := map[string]struct {
		end  func(t *testing.T, h *harness, up *pushUpstream, c *websocket.Conn)
		want int // the client's close code; -1: dropped
		upto string
	}{
		"client closes": {
			end: func(t *testing.T, h *harness, up *pushUpstream, c *websocket.Conn) {
				_ = c.Close(4001, "client bye")
			},
			want: -2, upto: "4001 client bye",
		},
		"upstream closes": {
			end: func(t *testing.T, h *harness, up *pushUpstream, c *websocket.Conn) {
				up.closeWith <- 4003
			},
			want: 4003,
		},
		"drain": {
			end: func(t *testing.T, h *harness, up *pushUpstream, c *websocket.Conn) {
				go h.srv.Drain(context.Background())
			},
			want: 1001, upto: "1001 ",
		},
		"dropped": {
			end: func(t *testing.T, h *harness, up *pushUpstream, c *websocket.Conn) {
				for _, p := range pairsOf(h) {
					p.abort()
				}
			},
			want: -1, upto: "dropped",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			up := newPushUpstream()
			h := start(t, upstream(t, up.ServeHTTP).URL, nil)
			c, ctx := dialWS(t, h, "/ws/chat", nil)
			echoOnce(t, ctx, c, "hello")
			putToSleep(t, h, 1)
			tc.end(t, h, up, c)
			if tc.want != -2 {
				_, _, err := c.Read(ctx)
				if got := int(websocket.CloseStatus(err)); got != tc.want {
					t.Fatalf("client: %v, want close %d", err, tc.want)
				}
			}
			if tc.upto != "" {
				if got := recv(t, up.ends, "the upstream's end"); !strings.HasPrefix(got, tc.upto) {
					t.Errorf("upstream: %s, want %s", got, tc.upto)
				}
			}
			waitMetric(t, h, `chatguard_websocket_connections{kind="websocket"}`, 0)
			waitMetric(t, h, sleepingMetric, 0)
			if n := h.srv.ws.poller.len(); n != 0 {
				t.Errorf("the poller still watches %d sockets", n)
			}
		})
	}
}

// A Socket.IO eviction of a sleeping socket still tells both sides, and the
// client's read limit from maxPayload outlives a sleep.
func TestSocketIOSleepingSocket(t *testing.T) {
	t.Parallel()
	needPoller(t)
	fake := &fakeSIO{maxPayload: 2048}
	env, cl := connectedUser(t, fake)
	h := env.harness
	putToSleep(t, h, 1)
	fits := `42["note","` + strings.Repeat("a", 1900) + `"]`
	cl.send(fits)
	waitFor(t, "the message under maxPayload upstream", func() bool { return fake.has(fits) })

	putToSleep(t, h, 1)
	req, _ := http.NewRequest(http.MethodDelete, h.admin+SessionsPath+testUser, nil)
	req.Header.Set("Authorization", "Bearer "+testStatsToken)
	if resp, body := h.do(req); resp.StatusCode != 200 {
		t.Fatalf("kick: %d %s", resp.StatusCode, body)
	}
	expectKicked(t, env, cl, fake)

	cl = dialSIO(t, h, nil)
	cl.connect(authFor(t, testUser))
	putToSleep(t, h, 1)
	expectOverMaxPayload(t, cl, fake)
}

// Sleeps and wakes racing messages both ways lose and reorder nothing.
func TestWebSocketSleepWakeRace(t *testing.T) {
	t.Parallel()
	needPoller(t)
	up := newPushUpstream()
	h := start(t, upstream(t, up.ServeHTTP).URL, nil)
	const clients, msgs = 6, 12
	stop := make(chan struct{})
	var sleeper sync.WaitGroup
	sleeper.Add(1)
	go func() { // the janitor, but much more often
		defer sleeper.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			for _, p := range pairsOf(h) {
				p.sleep()
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range clients {
		c, ctx := dialWS(t, h, "/ws/chat", nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range msgs {
				if rand.IntN(2) == 0 {
					time.Sleep(wsLinger + 30*time.Millisecond) // both directions park
				}
				want := fmt.Sprintf("client %d message %d", i, j)
				if err := c.Write(ctx, websocket.MessageText, []byte(want)); err != nil {
					t.Error(err)
					return
				}
				if _, got, err := c.Read(ctx); err != nil || string(got) != want {
					t.Errorf("client %d: %q, %v; want %q", i, got, err, want)
					return
				}
			}
			_ = c.Close(websocket.StatusNormalClosure, "")
		}()
	}
	wg.Wait()
	close(stop)
	sleeper.Wait()
	if metricValue(t, h, "chatguard_websocket_wakes_total") == 0 {
		t.Error("no pair ever slept and woke: the test did not test that")
	}
	waitMetric(t, h, `chatguard_websocket_connections{kind="websocket"}`, 0)
	waitMetric(t, h, sleepingMetric, 0)
}

// RFC 6455's own example.
func TestWSAccept(t *testing.T) {
	if got := wsAccept("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("wsAccept = %q", got)
	}
}

// What waking costs: both sockets wrapped in new library connections (and
// the old ones retired), against one relayed message's round trip through
// a pair that stays awake (see bench/ws for those figures).
func BenchmarkWebSocketWake(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	other := <-accepted
	defer other.Close()
	cfc, ufc := newFrameConn(a, false), newFrameConn(other, false)
	b.ReportAllocs()
	for b.Loop() {
		cs, us := newWSSock(cfc), newWSSock(ufc)
		client, err := rewrapClient(cs, "", nil)
		if err != nil {
			b.Fatal(err)
		}
		up, err := rewrapUpstream(us, "", nil)
		if err != nil {
			b.Fatal(err)
		}
		cs.retired.Store(true)
		us.retired.Store(true)
		_ = client.CloseNow()
		_ = up.CloseNow()
	}
}

// A pair that cannot wake (the in-process handshake failed, which nothing
// on the network can cause) is ended, whoever tried to wake it: the client
// with a message, or a kick. Not parallel: it swaps rewrapUpstreamFunc.
func TestSocketIOFailedWakeEndsThePair(t *testing.T) {
	needPoller(t)
	for _, how := range []string{"message", "kick"} {
		t.Run(how, func(t *testing.T) {
			fake := &fakeSIO{}
			env, cl := connectedUser(t, fake)
			h := env.harness
			putToSleep(t, h, 1)
			defer rewrapUpstreamFunc.Store(rewrapUpstreamFunc.Load())
			fail := func(*wsSock, string, func(context.Context, []byte) bool) (*websocket.Conn, error) {
				return nil, errors.New("no wake")
			}
			rewrapUpstreamFunc.Store(&fail)

			if how == "message" {
				cl.send(`42["note","lost"]`)
			} else {
				req, _ := http.NewRequest(http.MethodDelete, h.admin+SessionsPath+testUser, nil)
				req.Header.Set("Authorization", "Bearer "+testStatsToken)
				h.do(req)
			}
			if _, err := cl.until(); err == nil {
				t.Fatal("the client's socket stayed open")
			}
			waitMetric(t, h, `chatguard_websocket_connections{kind="socketio"}`, 0)
			waitMetric(t, h, sleepingMetric, 0)
			env.waitStats(t, [3]int{})
			if n := h.srv.ws.poller.len(); n != 0 {
				t.Errorf("the poller still watches %d sockets", n)
			}
		})
	}
}

// A wake that brings no message (a WebSocket ping, chatguard's own ack)
// still counts as activity for sleeping: the janitor does not put the pair
// back to sleep until it has been quiet for wsSleepAfter after the wake.
func TestWebSocketWokenPairStaysAwakeAWhile(t *testing.T) {
	t.Parallel()
	needPoller(t)
	up := newPushUpstream()
	h := start(t, upstream(t, up.ServeHTTP).URL, nil)
	c, ctx := dialWS(t, h, "/ws/chat", nil)
	echoOnce(t, ctx, c, "hello")
	putToSleep(t, h, 1)
	// The client reads meanwhile: a relayed ping is answered by the
	// client's pong (see wsping.go), which only a reading connection sends.
	echoed := make(chan string, 1)
	go func() { _, got, _ := c.Read(ctx); echoed <- string(got) }()
	pong := make(chan error, 1)
	up.ping <- pong
	if err := recv(t, pong, "the pong"); err != nil { // the pair woke, and relayed the client's answer
		t.Fatal(err)
	}
	waitMetric(t, h, sleepingMetric, 0)
	waitMetric(t, h, readersMetric, 0)
	for _, p := range pairsOf(h) { // the last message was long ago; the wake was not
		p.last.Store(time.Now().Add(-time.Hour).UnixNano())
	}
	h.srv.ws.sweep(time.Now())
	if got := metricValue(t, h, sleepingMetric); got != 0 {
		t.Fatalf("a pair woken just now was put back to sleep (%v asleep)", got)
	}
	h.srv.ws.sweep(time.Now().Add(wsSleepAfter))
	waitMetric(t, h, sleepingMetric, 1)
	if err := c.Write(ctx, websocket.MessageText, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, echoed, "the echo"); got != "still here" {
		t.Fatalf("echo %q", got)
	}
}
