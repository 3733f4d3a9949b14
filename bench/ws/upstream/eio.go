package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// engineIO is the least of a Socket.IO 4 server that real clients and
// chatguard's inspection need, on the WebSocket transport only:
//
//   - open packet `0{"sid":…,"upgrades":[],"pingInterval":…,"pingTimeout":…,"maxPayload":1000000}`;
//   - Engine.IO ping `2` every pingInterval; a client whose pong `3` does not
//     come within pingTimeout is dropped;
//   - Socket.IO CONNECT `40` (or `40/ns,`) is answered `40{"sid":…}`;
//   - an EVENT with an ack id, `42<id>["name",args…]`, is answered with the
//     ack `43<id>[args…]` (the event's arguments echoed); an EVENT without one
//     is sent back as it came; everything else is ignored.
//
// Long-polling requests get 400: the benchmark's clients use WebSocket only.
type engineIO struct {
	pingInterval time.Duration
	pingTimeout  time.Duration
}

func (e *engineIO) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("EIO") != "4" || q.Get("transport") != "websocket" {
		http.Error(w, `{"code":0,"message":"Transport unknown"}`, http.StatusBadRequest)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(readLimit)
	ctx := context.Background()

	open := `0{"sid":"` + newID() + `","upgrades":[],"pingInterval":` + strconv.FormatInt(e.pingInterval.Milliseconds(), 10) +
		`,"pingTimeout":` + strconv.FormatInt(e.pingTimeout.Milliseconds(), 10) + `,"maxPayload":` + strconv.Itoa(readLimit) + `}`
	if err := c.Write(ctx, websocket.MessageText, []byte(open)); err != nil {
		return
	}
	hb := newHeartbeat(c, e.pingInterval, e.pingTimeout)
	defer hb.stop()

	for {
		typ, rd, err := c.Reader(ctx)
		if err != nil {
			closeLike(c, err)
			return
		}
		buf := buffers.Get().(*bytes.Buffer)
		buf.Reset()
		_, err = buf.ReadFrom(rd)
		if err == nil && typ == websocket.MessageText {
			err = e.handle(c, hb, buf.Bytes())
		}
		putBuffer(buf)
		if err != nil {
			closeLike(c, err)
			return
		}
	}
}

// handle answers one Engine.IO packet from the client.
func (e *engineIO) handle(c *websocket.Conn, hb *heartbeat, msg []byte) error {
	if len(msg) == 0 {
		return nil
	}
	switch msg[0] {
	case '3': // pong
		hb.pong()
	case '1': // close
		return c.Close(websocket.StatusNormalClosure, "")
	case '4': // message: a Socket.IO packet
		if reply := socketIOReply(msg[1:]); reply != nil {
			return c.Write(context.Background(), websocket.MessageText, reply)
		}
	}
	return nil
}

// socketIOReply is the answer to one Socket.IO packet (nil: none).
func socketIOReply(p []byte) []byte {
	if len(p) == 0 {
		return nil
	}
	typ, rest := p[0], p[1:]
	// Namespace: "/chat," before the ack id and the payload; "/" is implied.
	var ns []byte
	if len(rest) > 0 && rest[0] == '/' {
		if i := bytes.IndexByte(rest, ','); i >= 0 {
			ns, rest = rest[:i+1], rest[i+1:]
		} else {
			ns, rest = rest, nil
		}
	}
	switch typ {
	case '0': // CONNECT
		out := make([]byte, 0, 48)
		out = append(out, "40"...)
		out = append(out, ns...)
		return append(append(append(out, `{"sid":"`...), newID()...), `"}`...)
	case '2': // EVENT
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 { // no ack asked for: the event goes back as it came
			out := make([]byte, 0, 2+len(p))
			return append(append(out, '4'), p...)
		}
		id, payload := rest[:i], rest[i:]
		args, ok := eventArgs(payload)
		if !ok {
			return nil
		}
		out := make([]byte, 0, 5+len(ns)+len(id)+len(args))
		out = append(append(append(out, "43"...), ns...), id...)
		return append(append(append(out, '['), args...), ']')
	}
	return nil
}

// eventArgs returns what follows the event name in `["name",args…]`
// (without the brackets), or false when payload is not shaped like that.
func eventArgs(payload []byte) ([]byte, bool) {
	if len(payload) < 4 || payload[0] != '[' || payload[1] != '"' || payload[len(payload)-1] != ']' {
		return nil, false
	}
	for i := 2; i < len(payload); i++ {
		switch payload[i] {
		case '\\':
			i++
		case '"':
			rest := payload[i+1 : len(payload)-1]
			if len(rest) > 0 && rest[0] == ',' {
				rest = rest[1:]
			}
			return rest, true
		}
	}
	return nil, false
}

// heartbeat pings the client every interval on a timer and drops it when a
// pong is more than timeout late.
type heartbeat struct {
	c        *websocket.Conn
	interval time.Duration
	timeout  time.Duration
	waiting  atomic.Bool // a ping is out, no pong yet
	mu       sync.Mutex
	t        *time.Timer
	stopped  bool
}

func newHeartbeat(c *websocket.Conn, interval, timeout time.Duration) *heartbeat {
	hb := &heartbeat{c: c, interval: interval, timeout: timeout}
	hb.t = time.AfterFunc(interval, hb.ping)
	return hb
}

func (hb *heartbeat) ping() {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	if hb.stopped {
		return
	}
	if hb.waiting.Load() { // the pong is pingTimeout late
		_ = hb.c.CloseNow()
		return
	}
	hb.waiting.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := hb.c.Write(ctx, websocket.MessageText, []byte("2"))
	cancel()
	if err != nil {
		return
	}
	hb.t.Reset(hb.timeout)
}

func (hb *heartbeat) pong() {
	if !hb.waiting.Swap(false) {
		return
	}
	hb.mu.Lock()
	defer hb.mu.Unlock()
	if !hb.stopped {
		// The next ping is due interval after this one was sent; close enough.
		hb.t.Reset(hb.interval)
	}
}

func (hb *heartbeat) stop() {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	hb.stopped = true
	hb.t.Stop()
}

// newID is an Engine.IO-like session or socket id: 20 URL-safe characters.
func newID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
