package limiter

import (
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatguard/chatguard/sessions"
)

// Abuse counts each client IP's rejections over an hour: at Warning it
// raises a warning, at Critical a critical alert and the IP is blocked for
// BlockFor (the seed's 100/hr and 500/hr). Its state lives in the
// eventRateLimits table next to the limits' own.
type Abuse struct {
	t                 *sessions.StateTable
	warning, critical int64
	blockFor          time.Duration
	now               func() time.Time
	onAlert           func(group netip.Prefix, rejections int64, severity, requestID string)
	alerts            *prometheus.CounterVec
	blocks            prometheus.Counter
}

// AbuseOptions configure Abuse.
type AbuseOptions struct {
	Table             *sessions.StateTable
	Warning, Critical int
	BlockFor          time.Duration
	// OnAlert is told of each alert (severity WARNING or CRITICAL) with the
	// client's group (AddrGroup: what is counted and blocked) and the id of
	// the request (or socket) whose rejection crossed the level; nil =
	// nothing.
	OnAlert    func(group netip.Prefix, rejections int64, severity, requestID string)
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// NewAbuse returns an Abuse tracker.
func NewAbuse(o AbuseOptions) (*Abuse, error) {
	a := &Abuse{
		t: o.Table, warning: int64(o.Warning), critical: int64(o.Critical), blockFor: o.BlockFor,
		now: o.Now, onAlert: o.OnAlert,
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_ratelimit_abuse_alerts_total",
			Help: "Client IPs that crossed the rejections-per-hour levels, by severity (WARNING, CRITICAL).",
		}, []string{"severity"}),
		blocks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatguard_ratelimit_ip_blocks_total",
			Help: "Client IPs blocked (403 IP_BLOCKED) for too many rejections.",
		}),
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.alerts.WithLabelValues("WARNING") // visible at zero for alert rules
	a.alerts.WithLabelValues("CRITICAL")
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{a.alerts, a.blocks} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return a, nil
}

// The abuse keys start with '#', which no route name (the first part of
// every rate-limit key) can.
func abuseKey(ip netip.Addr) string   { return abusePrefix + ipKey(ip) }
func blockedKey(ip netip.Addr) string { return "#blocked|ip=" + ipKey(ip) }

const abusePrefix = "#abuse|ip="

// Volatile reports the keys of the eventRateLimits table not worth saving
// across a restart: abuse counts (a count within the hour, not a time).
// It is the table's StateOptions.Volatile.
func Volatile(key string) bool { return strings.HasPrefix(key, abusePrefix) }

// Blocked reports whether ip is blocked and for how much longer.
func (a *Abuse) Blocked(ip netip.Addr) (time.Duration, bool) {
	until, ok := a.t.Peek(blockedKey(ip)) // asked before every request: not a rate-limit decision
	if !ok {
		return 0, false
	}
	left := time.Duration(until - a.now().UnixNano())
	return left, left > 0
}

// Unblock lifts ip's block (an admin's answer to a false positive: an office
// behind one address) and forgets its rejections this hour. It returns what
// was lifted (the address, or its /64 for IPv6) and whether ip was blocked;
// an IP that was not blocked is left as it was.
func (a *Abuse) Unblock(ip netip.Addr) (string, bool) {
	if _, blocked := a.Blocked(ip); !blocked {
		return ipKey(ip), false
	}
	a.t.Delete(blockedKey(ip))
	a.t.Delete(abuseKey(ip))
	return ipKey(ip), true
}

// Rejected counts one rejection of ip, made for the request (or socket)
// requestID.
func (a *Abuse) Rejected(ip netip.Addr, requestID string) {
	if _, blocked := a.Blocked(ip); blocked {
		// Not counted while blocked: the events left in a polling POST that
		// caused the block raised a warning alert at once, the count having
		// started over (QA).
		return
	}
	var n int64
	crossed := false
	if !a.t.Update(abuseKey(ip), func(now, old int64, ok bool) (int64, int64, bool) {
		// fn may run more than once and only its last run counts: every
		// run sets both results (a crossing seen by a run that a removal
		// then repeated counted twice).
		if !ok {
			old = 0
		}
		n = old + 1
		crossed = n >= a.critical
		if crossed {
			// The count starts over, as fail2ban's does after a ban: once a
			// block shorter than the hour ends, the next rejection alone
			// blocked again, with a new critical alert each time (QA, with
			// block_for at 30 s as the NAT runbook suggests lowering it).
			// In the same step as the count, so that of two rejections at
			// the same moment only one crosses (review: both blocked,
			// alerted and kicked).
			return 0, 0, false
		}
		if ok {
			return n, sessions.KeepExpiry, true // the hour started with the first rejection
		}
		return n, now + int64(time.Hour), true
	}) {
		return // a closed table (shutdown): a crossing seen by an earlier run did not happen
	}
	switch {
	case crossed:
		// The alert first: it disconnects the IP's sockets, marking each
		// at once, so that a poll of one that comes once the block is in
		// force is known to be owed its DISCONNECT (e2e QA: a poll between
		// the two got 403 and reconnected).
		a.alert(ip, n, "CRITICAL", requestID)
		until := a.now().Add(a.blockFor).UnixNano()
		a.t.SetTTL(blockedKey(ip), until, a.blockFor)
		a.blocks.Inc()
	case n == a.warning:
		a.alert(ip, n, "WARNING", requestID)
	}
}

func (a *Abuse) alert(ip netip.Addr, n int64, severity, requestID string) {
	a.alerts.WithLabelValues(severity).Inc()
	if a.onAlert != nil {
		a.onAlert(AddrGroup(ip), n, severity, requestID)
	}
}
