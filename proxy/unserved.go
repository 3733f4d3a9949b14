package proxy

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/logging"
)

// unservedRequests sees the requests net/http ends before chatguard's
// handler runs: one it cannot parse (a control character in a header, two
// Host fields, a bad request line), which it answers 400 itself, and one cut
// off or timed out before its headers ended. Such a request made no access
// line and no metric: a client library sending broken requests was
// invisible (QA). A connection is marked when net/http starts reading a
// request on it (StateActive) and unmarked when the handler starts; one
// that closes marked had such a request. net/http says StateActive only for
// bytes it reads off the wire for the request: a kept-alive connection's
// next request, read ahead while it waited, is not seen (review), nor is a
// malformed one there. A request a shutdown drops is counted.
type unservedRequests struct {
	conns   sync.Map // net.Conn → *atomic.Bool: a request began and no handler ran for it
	counter prometheus.Counter
	log     *logrus.Entry
	now     func() time.Time

	mu     sync.Mutex
	last   time.Time // the last line written
	hidden int       // requests not logged since
}

// unservedLogEvery: a flood of broken requests writes one line this often,
// with the count of those left out.
const unservedLogEvery = 10 * time.Second

type unservedKey struct{}

func newUnservedRequests(reg prometheus.Registerer, log *logrus.Entry) (*unservedRequests, error) {
	u := &unservedRequests{
		counter: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatguard_http_unserved_requests_total",
			Help: "Requests on the public listener that never reached chatguard: malformed (net/http answered a plain 400, 431 or 505 itself) or cut off, timed out or dropped by a shutdown before their headers ended; the first request of a connection only.",
		}),
		log: log,
		now: time.Now,
	}
	if err := reg.Register(u.counter); err != nil {
		return nil, err
	}
	return u, nil
}

// connContext is the server's ConnContext: the connection's mark.
func (u *unservedRequests) connContext(ctx context.Context, c net.Conn) context.Context {
	mark := new(atomic.Bool)
	u.conns.Store(c, mark)
	return context.WithValue(ctx, unservedKey{}, mark)
}

// connState follows the server's ConnState.
func (u *unservedRequests) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateActive:
		if m, ok := u.conns.Load(c); ok {
			m.(*atomic.Bool).Store(true)
		}
	case http.StateHijacked:
		u.conns.Delete(c)
	case http.StateClosed:
		if m, ok := u.conns.LoadAndDelete(c); ok && m.(*atomic.Bool).Load() {
			u.unserved(c)
		}
	}
}

// served unmarks r's connection: its request reached the handler.
func served(r *http.Request) {
	if m, ok := r.Context().Value(unservedKey{}).(*atomic.Bool); ok {
		m.Store(false)
	}
}

func (u *unservedRequests) unserved(c net.Conn) {
	u.counter.Inc()
	now := u.now()
	u.mu.Lock()
	if !u.last.IsZero() && now.Sub(u.last) < unservedLogEvery {
		u.hidden++
		u.mu.Unlock()
		return
	}
	hidden := u.hidden
	u.last, u.hidden = now, 0
	u.mu.Unlock()
	f := logrus.Fields{logging.FieldCategory: logging.CategorySecurity}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		f["peer"] = a.IP.String()
	}
	if hidden > 0 {
		f["repeatedSinceLast"] = hidden
	}
	u.log.WithFields(f).Warn("a request never reached chatguard: malformed (answered 400, 417, 431, 501 or 505 by the HTTP server itself) or cut off before its headers ended")
}
