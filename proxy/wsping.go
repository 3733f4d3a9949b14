package proxy

import (
	"context"
	"sync/atomic"
	"time"
)

// wsPingWait bounds how long a relayed ping waits for the other side's pong.
const wsPingWait = 10 * time.Second

// pingRelay carries WebSocket pings across a pair. Each side's library
// connection answers a ping itself; relayed as it is, the ws heartbeat
// pattern (ping, and terminate the peer whose pong does not come) saw
// chatguard's pongs, never the peer's: a hung client was never dropped by
// the backend, nor a hung backend by the client (QA). Now a ping from one
// side is answered only once the other side answered a ping of
// chatguard's, within wsPingWait; otherwise it goes unanswered, and the
// side that pinged judges the silence as it would without chatguard.
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
func (r *pingRelay) fromClient(context.Context, []byte) bool   { return r.relay(true) }
func (r *pingRelay) fromUpstream(context.Context, []byte) bool { return r.relay(false) }

func (r *pingRelay) relay(toUpstream bool) bool {
	p := r.pair.Load()
	if p == nil || !r.busy.CompareAndSwap(false, true) {
		return true
	}
	defer r.busy.Store(false)
	client, up, err := p.hold()
	if err != nil {
		return false
	}
	defer p.unhold()
	to := client
	if toUpstream {
		to = up
	}
	ctx, cancel := context.WithTimeout(context.Background(), wsPingWait)
	defer cancel()
	return to.Ping(ctx) == nil
}
