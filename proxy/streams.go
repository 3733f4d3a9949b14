package proxy

import (
	"io"
	"sync"
	"sync/atomic"
)

// Event streams (text/event-stream) never finish on their own, so a drain
// that waited for them waited out server.shutdown_timeout and left them
// running on an instance that was no longer ready (QA: an EventSource kept
// streaming after POST /drain answered). They end with the WebSockets,
// once the drain delay is over: cleanly, with the chunked response's last
// chunk, then the connection closes (keep-alives are off from the drain's
// start), so the EventSource reconnects through the load balancer as a
// WebSocket client does after its close 1001.

// streamSet holds the event streams being relayed.
type streamSet struct {
	mu      sync.Mutex
	open    map[*endableStream]struct{}
	closing bool // set by the drain: a stream that starts later ends at once
}

// endableStream is an event stream's upstream body that the drain can end:
// the Read in progress then returns io.EOF instead of the error of the
// body being closed under it.
type endableStream struct {
	io.ReadCloser
	set   *streamSet
	info  *reqInfo
	ended atomic.Bool
}

// add wraps body; the stream leaves the set when the reverse proxy closes it.
func (ss *streamSet) add(body io.ReadCloser, info *reqInfo) io.ReadCloser {
	st := &endableStream{ReadCloser: body, set: ss, info: info}
	ss.mu.Lock()
	closing := ss.closing
	if !closing {
		if ss.open == nil {
			ss.open = map[*endableStream]struct{}{}
		}
		ss.open[st] = struct{}{}
	}
	ss.mu.Unlock()
	if closing {
		st.end()
	}
	return st
}

// endAll ends every stream, now and from now on, and says how many were open.
func (ss *streamSet) endAll() int {
	return closeSet(&ss.mu, ss.open, &ss.closing, (*endableStream).end)
}

func (st *endableStream) end() {
	st.ended.Store(true)
	_ = st.ReadCloser.Close() // unblocks the Read in progress
}

func (st *endableStream) Read(p []byte) (int, error) {
	n, err := st.ReadCloser.Read(p)
	if err != nil && st.ended.Load() {
		if st.info.reason == "" { // the handler's goroutine reads and logs it
			st.info.reason = "drain"
		}
		return n, io.EOF
	}
	return n, err
}

func (st *endableStream) Close() error {
	st.set.mu.Lock()
	delete(st.set.open, st)
	st.set.mu.Unlock()
	return st.ReadCloser.Close()
}
