package limiter

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Decision is a Limiter's answer for one request.
type Decision struct {
	Result
	Policy *Policy
	Key    string
	// Shadow reports a request over its limit that passed because the
	// policy or the limiter is in shadow mode.
	Shadow bool
}

// Limited reports whether the request must be refused.
func (d Decision) Limited() bool { return !d.Allowed && !d.Shadow }

// Options configure a Limiter.
type Options struct {
	Store Store
	// Mode reports the store's mode (ModeRedis, ModeFallback,
	// ModeMemoryOnly) for /api/internal/stats and chatguard_ratelimit_store_mode;
	// nil means ModeMemoryOnly.
	Mode func() string
	// Registerer receives the limiter's metrics; nil = none.
	Registerer prometheus.Registerer
	// Now is the clock for the 24-hour rejection count; nil = time.Now.
	Now func() time.Time
}

// Limiter applies policies through a store. It is safe for concurrent use.
type Limiter struct {
	store     Store
	mode      func() string
	now       func() time.Time
	decisions *prometheus.CounterVec
	errors    prometheus.Counter
	rejected  hourly
}

// New returns a Limiter.
func New(o Options) (*Limiter, error) {
	l := &Limiter{
		store: o.Store, mode: o.Mode, now: o.Now,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_ratelimit_decisions_total",
			Help: "Rate-limit decisions, by route, role (admin, agent, basic, anonymous) and outcome (allowed, limited, shadow).",
		}, []string{"route", "role", "outcome"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatguard_ratelimit_store_errors_total",
			Help: "Rate-limit decisions the store could not make (the request was let through).",
		}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.mode == nil {
		l.mode = func() string { return ModeMemoryOnly }
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{l.decisions, l.errors, modeCollector{l.mode}} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("limiter: register metrics: %w", err)
			}
		}
	}
	return l, nil
}

// Prime makes p's decision counters exist at 0, for role anonymous and
// roles, before its first decision: a rate() over a series that appears at
// its first increment misses that increment (QA with Prometheus: a burst of
// 30 refusals showed as 0/s).
func (l *Limiter) Prime(p *Policy, roles ...string) {
	outcomes := []string{"allowed", "limited"}
	if p.Shadow {
		outcomes = append(outcomes, "shadow")
	}
	for _, role := range append([]string{Anonymous}, roles...) {
		for _, o := range outcomes {
			l.decisions.WithLabelValues(p.Name, role, o)
		}
	}
}

// Decide applies p to r. When the store fails, the request passes (and the
// error is returned for the log): a limiter must not turn its own outage
// into the application's.
func (l *Limiter) Decide(ctx context.Context, p *Policy, r Request) (Decision, error) {
	role := r.Role
	if r.User == "" {
		role = Anonymous
	}
	d := Decision{Policy: p, Key: p.KeyFor(r)}
	res, err := l.store.Allow(ctx, d.Key, p.LimitFor(r.Role))
	if err != nil {
		d.Result = Result{Allowed: true, Limit: p.LimitFor(r.Role)}
		if ctx.Err() == nil { // else the caller left: not the store's failure
			l.errors.Inc()
		}
		return d, err
	}
	d.Result = res
	outcome := "allowed"
	if !res.Allowed {
		if p.Shadow {
			d.Shadow, outcome = true, "shadow"
		} else {
			outcome = "limited"
			l.rejected.add(l.now(), 1)
		}
	}
	l.decisions.WithLabelValues(p.Name, role, outcome).Inc()
	return d, nil
}

// StatsBlock is the seed's rateLimiting block of /api/internal/stats.
func (l *Limiter) StatsBlock() map[string]any {
	return map[string]any{"store": l.mode(), "rejectedRequests24h": l.rejected.sum(l.now())}
}

var descMode = prometheus.NewDesc("chatguard_ratelimit_store_mode",
	"1 for the rate-limit store's current mode (redis, fallback, memory-only), 0 for the others.", []string{"mode"}, nil)

// modeCollector reads the store's mode at scrape time.
type modeCollector struct{ mode func() string }

func (modeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descMode }

func (c modeCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.mode()
	for _, x := range []string{ModeRedis, ModeFallback, ModeMemoryOnly} {
		v := 0.0
		if x == m {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descMode, prometheus.GaugeValue, v, x)
	}
}

// hourly counts events in the last 24 hours, in hour buckets.
type hourly struct {
	buckets [24]atomic.Int64
	hours   [24]atomic.Int64 // which hour each bucket holds
}

func (h *hourly) add(now time.Time, n int64) {
	hour := now.Unix() / 3600
	i := hour % 24
	if old := h.hours[i].Load(); old != hour && h.hours[i].CompareAndSwap(old, hour) {
		h.buckets[i].Store(0) // a new hour in this bucket; an add racing it may be lost
	}
	h.buckets[i].Add(n)
}

func (h *hourly) sum(now time.Time) int64 {
	hour := now.Unix() / 3600
	var total int64
	for i := range h.buckets {
		if hour-h.hours[i].Load() < 24 {
			total += h.buckets[i].Load()
		}
	}
	return total
}
