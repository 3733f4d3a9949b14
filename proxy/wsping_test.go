package proxy

import (
	"context"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// pingPeer is one end of a plain WebSocket whose pings are counted and
// answered only while answer is set; its reader runs until the end.
type pingPeer struct {
	pinged atomic.Int32
	answer atomic.Bool
	slow   atomic.Int64 // a delay before answering (its reader waits meanwhile)
}

func (p *pingPeer) onPing(context.Context, []byte) bool {
	p.pinged.Add(1)
	time.Sleep(time.Duration(p.slow.Load()))
	return p.answer.Load()
}

func readUntilClosed(c *websocket.Conn) {
	for {
		if _, _, err := c.Read(context.Background()); err != nil {
			return
		}
	}
}

// A relayed ping is answered only when the other side answers: the ws
// heartbeat (ping, terminate whoever sends no pong) sees the peer, not
// chatguard (QA: a frozen client kept "answering" its server's pings
// through chatguard, and a frozen backend its client's).
func TestWebSocketPingsAreRelayed(t *testing.T) {
	t.Parallel()
	upPeer, clientPeer := &pingPeer{}, &pingPeer{}
	upConns := make(chan *websocket.Conn, 1)
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OnPingReceived: upPeer.onPing})
		if err != nil {
			return
		}
		upConns <- c
		readUntilClosed(c)
	})
	h := start(t, srv.URL, nil)
	c, _ := dialWS(t, h, "/ws/heartbeat", &websocket.DialOptions{OnPingReceived: clientPeer.onPing})
	go readUntilClosed(c)
	up := recv(t, upConns, "upstream connection")
	t.Cleanup(func() { _ = up.CloseNow() })

	ping := func(from *websocket.Conn, wait time.Duration) error {
		pctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		return from.Ping(pctx)
	}
	upPeer.answer.Store(true)
	clientPeer.answer.Store(true)
	if err := ping(up, 5*time.Second); err != nil || clientPeer.pinged.Load() != 1 {
		t.Fatalf("the backend's ping to a live client: %v, client pinged %d times", err, clientPeer.pinged.Load())
	}
	if err := ping(c, 5*time.Second); err != nil || upPeer.pinged.Load() != 1 {
		t.Fatalf("the client's ping to a live backend: %v, backend pinged %d times", err, upPeer.pinged.Load())
	}

	if runtime.GOOS == "linux" { // asleep (see wssleep.go), the rewrapped connections relay too
		putToSleep(t, h, 1)
		if err := ping(up, 5*time.Second); err != nil || clientPeer.pinged.Load() != 2 {
			t.Fatalf("asleep, the backend's ping: %v, client pinged %d times", err, clientPeer.pinged.Load())
		}
		putToSleep(t, h, 1)
		if err := ping(c, 5*time.Second); err != nil || upPeer.pinged.Load() != 2 {
			t.Fatalf("asleep, the client's ping: %v, backend pinged %d times", err, upPeer.pinged.Load())
		}
	}

	clientPeer.answer.Store(false) // the client hangs
	if err := ping(up, time.Second); err == nil {
		t.Error("the backend got a pong for a client that gave none")
	}
	clientPeer.answer.Store(true)
	upPeer.answer.Store(false) // the backend hangs
	// The relay of the backend's unanswered ping may still wait: a ping
	// crossing it is answered at once (no deadlock), so wait it out.
	time.Sleep(wsPingWait + 500*time.Millisecond)
	if err := ping(c, time.Second); err == nil {
		t.Error("the client got a pong for a backend that gave none")
	}
	// A pong late by more than the wait (4.5 s; the client's own library
	// allows 5) counts as none, and the
	// socket lives on (review: it cut both sides, the library's context for
	// the pong having run out).
	upPeer.answer.Store(true)
	time.Sleep(wsPingWait + 500*time.Millisecond)
	clientPeer.slow.Store(int64(4500 * time.Millisecond))
	if err := ping(up, wsPingWait+2*time.Second); err == nil {
		t.Error("the backend got a pong that came after the wait")
	}
	clientPeer.slow.Store(0)
	time.Sleep(3 * time.Second) // the client's late pong is read and dropped

	// Nothing of it ended the socket: messages still pass, pings again.
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := c.Write(wctx, websocket.MessageText, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if err := ping(up, 5*time.Second); err != nil {
		t.Errorf("after it all, the backend's ping to a live client: %v", err)
	}
}
