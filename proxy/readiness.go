package proxy

import (
	"net"
	"net/url"
	"sync"
	"time"

	apierrors "github.com/chatguard/chatguard/errors"
)

// upstreamCheck tells /readyz whether the upstream accepts connections
// (proxy.ready_on_upstream): a sidecar whose app is still starting, or has
// died, is not ready to serve, and a pod whose app has no probe of its own
// took traffic while the app booted (QA: 502s and slow reconnects after
// every restart). One TCP connection a second at most, however many probes
// ask, each given half a second: a kubelet's probe waits one second.
type upstreamCheck struct {
	addr string
	// told hears each change of the answer (err nil: connections are
	// accepted again), so that the log says when the pod went unready
	// and ready (QA: thousands of 502 lines and nothing that said when).
	told func(err error, first bool)

	mu  sync.Mutex
	at  time.Time
	err error
}

const (
	upstreamCheckEvery   = time.Second
	upstreamCheckTimeout = 500 * time.Millisecond
)

func newUpstreamCheck(u *url.URL) *upstreamCheck {
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	return &upstreamCheck{addr: host}
}

// check reports why the upstream does not accept connections, or nil.
func (c *upstreamCheck) check() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < upstreamCheckEvery {
		return c.err
	}
	conn, err := net.DialTimeout("tcp", c.addr, upstreamCheckTimeout)
	if err == nil {
		_ = conn.Close()
	}
	first := c.at.IsZero()
	changed := (err == nil) != (c.err == nil) || first && err != nil
	c.at, c.err = time.Now(), err
	if changed && c.told != nil {
		c.told(err, first)
	}
	return err
}

// upstreamReason is the reason word of a failed connection, as the access
// log and chatguard_upstream_errors_total name them (refused, timeout, dns…).
func upstreamReason(err error) string {
	_, reason := apierrors.FromProxyError(err)
	return reason
}
