package proxy

import (
	"context"
	"strings"
	"sync/atomic"
	"time"
)

// wsPingWait bounds how long a relayed ping waits for the other side's pong.
// The library gives the callback a context that ends 5 s after the ping
// came, and writes the pong with it: the wait must leave the pong time to
// go out, or the expired context closes the connection under the write
// (review: a pong 7 s late cut both sides).
const wsPingWait = 4 * time.Second

// pingRelay carries WebSocket pings across a pair. Each side's library
// connection answers a ping itself; relayed as it is, the ws heartbeat
// pattern (ping, and terminate the peer whose pong does not come) saw
// chatguard's pongs, never the peer's: a hung client was never dropped by
// the backend, nor a hung backend by the client (QA). Now a ping from one
// side is answered only once the other side answered a ping of
// chatguard's, within wsPingWait; otherwise it goes unanswered, and the
// side that pinged judges the silence as it would without chatguard (a
// pong later than that counts as none: the library allows no more).
//
// The callback runs on the reading side's reader, which waits meanwhile;
// the other side's reader takes the pong. Only one side at a time waits:
// two pings crossing would each wait for the other's blocked reader, so
// the second is answered at once, as before.
type pingRelay struct {
	pair atomic.Pointer[wsPair]
	busy atomic.Bool
}

// fromClient and fromUpstream are the library connections' OnPingReceived.
func (r *pingRelay) fromClient(ctx context.Context, _ []byte) bool   { return r.relay(ctx, true) }
func (r *pingRelay) fromUpstream(ctx context.Context, _ []byte) bool { return r.relay(ctx, false) }

func (r *pingRelay) relay(ctx context.Context, toUpstream bool) bool {
	p := r.pair.Load()
	if p == nil || !r.busy.CompareAndSwap(false, true) {
		return true
	}
	defer r.busy.Store(false)
	to, err := p.holdSide(!toUpstream)
	if err != nil {
		return false
	}
	defer p.unhold()
	wait, cancel := context.WithTimeout(ctx, wsPingWait)
	defer cancel()
	err = to.Ping(wait)
	if err != nil && ctx.Err() == nil && !pongMissing(err) {
		// The ping could not be written: the library closed to (or
		// will not write on it again), and the pair must end (see
		// writeFailed). A pong that did not come leaves to as it was.
		p.writeFailed(!toUpstream, err)
	}
	return err == nil && ctx.Err() == nil
}

// pongMissing tells a ping that went out but whose pong did not come in
// time from one that could not be written. The library says so only in its
// words (TestPongMissingIsTheLibrarys pins them).
func pongMissing(err error) bool {
	return strings.Contains(err.Error(), "failed to wait for pong")
}
