package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/logging"
)

// Sides of a close, the "side" label.
const (
	sideClient    = "client"
	sideUpstream  = "upstream"
	sideChatguard = "chatguard"
)

// wsPair is one relayed WebSocket: the client's side and the upstream's.
// Two goroutines pump messages, one per direction: the handler's own
// (client → upstream) and one it starts (upstream → client); both end when
// either side closes, and end returns only when the close is done.
type wsPair struct {
	hub      *wsHub
	kind     string
	reqID    string
	ip       netip.Addr
	client   *websocket.Conn
	upstream *websocket.Conn
	sess     *sioSession // nil for a plain WebSocket
	started  time.Time

	last      atomic.Int64 // unix ns of the last data message either way
	writingUp atomic.Int64 // unix ns a write to the upstream started; 0 = none
	writingDn atomic.Int64 // the same toward the client

	ending  atomic.Bool // chatguard is ending the pair itself
	endOnce sync.Once
	counted atomic.Bool   // a close was counted
	done    chan struct{} // closed when both pumps stopped
}

func (h *wsHub) newPair(kind string, info *reqInfo, client, up *websocket.Conn, sess *sioSession) *wsPair {
	p := &wsPair{
		hub: h, kind: kind, reqID: info.id, ip: info.client,
		client: client, upstream: up, sess: sess, started: time.Now(),
		done: make(chan struct{}),
	}
	p.last.Store(p.started.UnixNano())
	limit := h.cfg.MaxMessageBytes
	client.SetReadLimit(limit)
	up.SetReadLimit(limit)
	if sess != nil {
		sess.attach(p)
	}
	return p
}

// start relays on two goroutines of the hub's, one per direction, and
// returns at once: the handler that accepted the socket ends, so that its
// stack (grown by the handshake) and the request's state are not held for
// the socket's whole life. release runs when the pair is over.
func (p *wsPair) start(release func()) {
	h := p.hub
	var down sync.WaitGroup // the upstream → client pump
	down.Add(1)
	h.background(func() {
		defer down.Done()
		p.pump(p.upstream, p.client, sideUpstream)
	})
	h.background(func() {
		p.pump(p.client, p.upstream, sideClient)
		down.Wait()
		p.endOnce.Do(func() { close(p.done) })
		h.remove(p)
		if p.sess != nil {
			p.sess.detach(p)
		}
		if release != nil {
			release()
		}
		h.s.log.WithFields(logrus.Fields{
			"requestId": p.reqID, logging.FieldCategory: logging.CategorySocket, "kind": p.kind,
			"duration": float64(time.Since(p.started).Microseconds()) / 1000,
		}).Debug("websocket closed")
	})
}

var messageBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuffer keeps one huge message from pinning its buffer forever.
const maxPooledBuffer = 64 << 10

// pump copies messages from src to dst until src ends, then mirrors src's
// close onto dst. from is the side src belongs to.
func (p *wsPair) pump(src, dst *websocket.Conn, from string) {
	h := p.hub
	frames, nbytes, writing := h.metrics.framesUp, h.metrics.bytesUp, &p.writingUp
	if from == sideUpstream {
		frames, nbytes, writing = h.metrics.framesDown, h.metrics.bytesDown, &p.writingDn
	}
	ctx := context.Background() // no per-message timer: the janitor watches idle and stalled writes
	defer func() {
		if v := recover(); v != nil {
			h.s.log.WithFields(logrus.Fields{
				"requestId": p.reqID, logging.FieldCategory: logging.CategorySocket,
				"panic": fmt.Sprint(v), "stack": string(debug.Stack()),
			}).Error("websocket relay panicked; both sides dropped")
			p.abort()
		}
	}()
	for {
		// The buffer is borrowed only while a message is in hand: an idle
		// socket holds none.
		typ, rd, err := src.Reader(ctx)
		var buf *bytes.Buffer
		if err == nil {
			buf = messageBuffers.Get().(*bytes.Buffer)
			buf.Reset()
			_, err = buf.ReadFrom(rd)
		}
		if err != nil {
			putBuffer(buf)
			p.mirrorClose(err, dst, from)
			return
		}
		now := time.Now().UnixNano()
		p.last.Store(now)
		msg := buf.Bytes()
		if p.sess != nil {
			var forward bool
			if from == sideClient {
				forward = p.sess.fromClient(typ, msg)
			} else {
				forward = p.sess.fromUpstream(typ, msg)
			}
			if !forward {
				putBuffer(buf)
				continue // taken out (and answered) by the inspection
			}
		}
		frames.Inc()
		nbytes.Add(float64(len(msg)))
		writing.Store(now)
		err = dst.Write(ctx, typ, msg)
		writing.Store(0)
		putBuffer(buf)
		if err != nil {
			// dst is gone; its own pump sees that and mirrors it onto src.
			_ = src.CloseNow()
			return
		}
	}
}

func putBuffer(b *bytes.Buffer) {
	if b != nil && b.Cap() <= maxPooledBuffer {
		messageBuffers.Put(b)
	}
}

// mirrorClose closes dst the way src was closed: the peer's close code and
// reason when it sent one, a dropped connection when it dropped.
func (p *wsPair) mirrorClose(err error, dst *websocket.Conn, from string) {
	code := websocket.CloseStatus(err)
	var ce websocket.CloseError
	reason := ""
	if errors.As(err, &ce) {
		reason = ce.Reason
	}
	if code == -1 && isReadLimit(err) {
		// The library answered the sender 1009 itself; the other side
		// hears the same.
		code, reason, from = websocket.StatusMessageTooBig, "message too big", sideChatguard
	}
	if p.closing() {
		from = sideChatguard // our own end: already counted
	} else if p.counted.CompareAndSwap(false, true) { // the other side's echo of this close is not another close
		p.hub.metrics.closeCodes.WithLabelValues(from, closeCodeLabel(code)).Inc()
	}
	switch code {
	case -1, websocket.StatusAbnormalClosure, websocket.StatusTLSHandshake:
		_ = dst.CloseNow()
	case websocket.StatusNoStatusRcvd:
		_ = dst.Close(websocket.StatusNormalClosure, "")
	default:
		_ = dst.Close(code, reason)
	}
}

// isReadLimit recognises the library's read-limit error (it has no
// sentinel): the message was bigger than the limit.
func isReadLimit(err error) bool {
	return strings.Contains(err.Error(), "read limited at")
}

// closing reports whether chatguard started ending the pair itself.
func (p *wsPair) closing() bool {
	select {
	case <-p.done:
		return true
	default:
		return p.ending.Load()
	}
}

// end closes both sides with code and reason, counted as chatguard's close
// for reason (a forced-disconnect label; "" = not forced). It returns when
// both close handshakes are done (or timed out); the pumps then stop and
// close p.done.
func (p *wsPair) end(side string, code websocket.StatusCode, why, reason string) {
	if !p.ending.CompareAndSwap(false, true) {
		return
	}
	if reason != "" {
		p.hub.metrics.forced.WithLabelValues(reason).Inc()
	}
	p.hub.metrics.closeCodes.WithLabelValues(side, closeCodeLabel(code)).Inc()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = p.client.Close(code, why) }()
	go func() { defer wg.Done(); _ = p.upstream.Close(websocket.StatusGoingAway, why) }()
	wg.Wait()
}

// abort drops both connections without a close handshake.
func (p *wsPair) abort() {
	p.ending.Store(true)
	_ = p.client.CloseNow()
	_ = p.upstream.CloseNow()
}

// stalled reports a write blocked for longer than d.
func (p *wsPair) stalled(now time.Time, d time.Duration) bool {
	for _, w := range []int64{p.writingUp.Load(), p.writingDn.Load()} {
		if w != 0 && now.Sub(time.Unix(0, w)) > d {
			return true
		}
	}
	return false
}

// send writes a message chatguard made (an ack, an error event) to the client.
func (p *wsPair) send(msg []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.client.Write(ctx, websocket.MessageText, msg)
}

// sendUp writes a message chatguard made to the upstream.
func (p *wsPair) sendUp(msg []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.upstream.Write(ctx, websocket.MessageText, msg)
}
