package limiter

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatguard/chatguard/sessions"
)

// Store modes, the mode label of chatguard_ratelimit_store_mode.
const (
	ModeRedis      = "redis"       // decisions in Redis
	ModeFallback   = "fallback"    // Redis is failing: the local store, with this replica's share
	ModeMemoryOnly = "memory-only" // no Redis configured
)

// FailoverOptions configure a FailoverStore.
type FailoverOptions struct {
	Primary  Store // Redis
	Fallback Store // memory; a Mirror (MemoryStore) also follows the primary's decisions
	// Failures in a row that open the breaker (0 = 3).
	Failures int
	// Cooldown before a half-open probe of the primary (0 = 1 s).
	Cooldown time.Duration
	// Replicas of chatguard sharing the limits: in fallback each enforces
	// 1/Replicas of every limit (0 or 1 = the whole limit).
	Replicas int
	// Registerer receives the store's metrics; nil = none.
	Registerer prometheus.Registerer
	// OnModeChange is told of every transition; nil = nothing.
	OnModeChange func(from, to string, err error)
	// OnStillFailing is told when a probe fails while in fallback with an
	// error not told in the last minute, so that the log says why Redis is
	// still not used without a line per probe when the reason alternates
	// (a TLS Redis refusing the password answers WRONGPASS and EOF in
	// turn); nil = nothing.
	OnStillFailing func(err error)
	// OnFailure is told when a call fails while Redis is used, without
	// switching the store (fewer than Failures in a row), with an error
	// not told in the last minute: the errors counter rose, and the log
	// says why (QA: killed connections and NOSCRIPTs were counted, never
	// named); nil = nothing.
	OnFailure func(err error)
	// Debts keeps what the fallback admitted until the primary has taken
	// it (see FailoverStore.owed), made with MaxDebts entries: a table of
	// the caller's manager, which sweeps, reports and sheds it (QA: 7.6 MB
	// of expired debts stayed after an outage, in no figure). nil = one of
	// the store's own, swept by Watch.
	Debts *sessions.StateTable
	Now   func() time.Time
}

// FailoverStore decides in the primary store while it works and in the
// fallback the moment it does not: a failed call is answered from the
// fallback at once, and after Failures failures in a row the breaker opens
// so that no request waits for a dead Redis. After Cooldown one request
// probes the primary (half-open); its success closes the breaker.
type FailoverStore struct {
	o FailoverOptions

	mu       sync.Mutex // guards failures, lastFail, open, retryAt, told
	failures int
	// lastFail is when the last counted failure was seen: a call that was
	// already out then failed in the same stall, and is not another one
	// in a row.
	lastFail time.Time
	open     bool
	retryAt  time.Time
	probing  atomic.Bool
	lastCall atomic.Int64 // Unix ns of the last call to the primary (Watch probes a quiet one)
	// lastHeard: Unix ns of the last call that told about the whole
	// primary (a success, or a failure counted against it): on a cluster,
	// calls on a master held open by its own breaker tell nothing of the
	// others, and Watch probes the cluster when none told for a cooldown.
	lastHeard atomic.Int64
	told      map[string]time.Time // errors told (or opened with) in the last minute: when

	// owed: the debt (TAT, on the table's clock) the fallback left each key
	// it decided, until the primary has taken it (a primary that can: see
	// owingStore). Bounded; when full, the smallest debts go first.
	owed      *sessions.StateTable
	ownDebts  bool          // owed is the store's own: Watch sweeps it
	debtSweep time.Duration // every 30 s

	transitions *prometheus.CounterVec
	errors      prometheus.Counter
	latency     prometheus.Observer
}

// NewFailoverStore returns a FailoverStore in redis mode.
func NewFailoverStore(o FailoverOptions) (*FailoverStore, error) {
	if o.Failures <= 0 {
		o.Failures = 3
	}
	if o.Cooldown <= 0 {
		o.Cooldown = time.Second
	}
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	f := &FailoverStore{
		o:         o,
		debtSweep: 30 * time.Second,
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_ratelimit_fallback_transitions_total",
			Help: "Switches of the rate-limit store, by the mode switched to.",
		}, []string{"to"}),
	}
	f.errors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "chatguard_ratelimit_redis_errors_total",
		Help: "Redis calls that failed (each answered from the in-memory fallback).",
	})
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "chatguard_ratelimit_store_duration_seconds",
		Help:    "Time of a rate-limit decision in Redis, failures included.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5},
	})
	f.latency = lat
	for _, to := range []string{ModeFallback, ModeRedis} {
		f.transitions.WithLabelValues(to) // at 0 from the start: increase() needs a series
	}
	if _, ok := o.Primary.(owingStore); ok {
		f.owed = o.Debts
		if f.owed == nil {
			owed, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: MaxDebts})
			if err != nil {
				return nil, err
			}
			f.owed, f.ownDebts = owed, true
		}
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{f.transitions, f.errors, lat} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return f, nil
}

// Mode is redis or fallback.
func (f *FailoverStore) Mode() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open {
		return ModeFallback
	}
	return ModeRedis
}

// Allow decides in the primary, or in the fallback with this replica's share.
func (f *FailoverStore) Allow(ctx context.Context, key string, l Limit) (Result, error) {
	f.mu.Lock()
	open, due := f.open, f.open && !f.o.Now().Before(f.retryAt)
	f.mu.Unlock()
	if open && !(due && f.probing.CompareAndSwap(false, true)) {
		return f.fallback(ctx, key, l)
	}
	probe := open
	if probe {
		defer f.probing.Store(false)
	}
	tat, debt := f.owing(key)
	began := f.o.Now()
	start := time.Now()
	f.lastCall.Store(start.UnixNano())
	var res Result
	var err error
	if debt > 0 {
		res, err = f.o.Primary.(owingStore).AllowOwing(ctx, key, l, debt)
	} else {
		res, err = f.o.Primary.Allow(ctx, key, l)
	}
	f.latency.Observe(time.Since(start).Seconds())
	if err == nil {
		f.lastHeard.Store(time.Now().UnixNano())
		if debt > 0 {
			f.paid(key, tat)
		}
		f.succeeded(probe)
		if key != probeKey {
			f.mirror(key, l, res)
		}
		return res, nil
	}
	if ctx.Err() != nil { // the client went away: not Redis's fault
		return res, err
	}
	f.errors.Inc()
	if !errors.Is(err, ErrNodeDown) { // one cluster node, held open by its own breaker
		f.lastHeard.Store(time.Now().UnixNano())
		f.failed(err, began)
	}
	return f.fallback(ctx, key, l)
}

// mirror is a fallback that can follow the primary's decisions, so that a
// switch to it does not start every key afresh (a login that used its 3
// attempts in Redis would get 3 more).
type mirror interface {
	Mirror(key string, resetAfter time.Duration)
}

// mirror copies a primary's decision into the fallback. One replica: the
// key's debt as Redis returned it, so the fallback goes on exactly where
// Redis stopped. Several: each replica's share gets its part of what the key
// has left (Remaining/Replicas requests, rounded up, at most the share's
// burst): a key with room left keeps some in every replica (rounded down, a
// login with 2 of 3 attempts left would have none in each of 3 replicas),
// and the replicas together admit at most Replicas-1 more than the limit
// across the switch, where starting afresh gave each its whole share.
func (f *FailoverStore) mirror(key string, l Limit, res Result) {
	m, ok := f.o.Fallback.(mirror)
	if !ok {
		return
	}
	if f.o.Replicas <= 1 {
		m.Mirror(key, res.ResetAfter)
		return
	}
	share := f.share(l)
	left := min((res.Remaining+f.o.Replicas-1)/f.o.Replicas, share.burst())
	if !res.Allowed {
		left = 0
	}
	m.Mirror(key, time.Duration(share.burst()-left)*share.interval())
}

// share is this replica's part of l while in fallback: 1/Replicas of its
// rate, rounded down, and of its burst, at least 1. A limit smaller than
// the number of replicas (3 logins per 15 min, 5 replicas) becomes 1 per a
// longer period (25 min), so that the replicas together keep its rate
// (rounding up to 1 per 15 min gave the 5 replicas 5).
func (f *FailoverStore) share(l Limit) Limit {
	share := l
	if n := f.o.Replicas; n > 1 {
		if l.Rate >= n {
			share.Rate = l.Rate / n
		} else if l.Rate > 0 {
			share.Rate, share.Period = 1, l.Period*time.Duration(n)/time.Duration(l.Rate)
		}
		if share.Burst > 0 {
			share.Burst = max(1, l.Burst/n)
		}
	}
	return share
}

func (f *FailoverStore) fallback(ctx context.Context, key string, l Limit) (Result, error) {
	if key == probeKey {
		// Watch's probe decides nothing: it leaves no state in the
		// fallback's table (review: a probe's entry there, made while the
		// rate-limit file was loading, made its load fail).
		return Result{Allowed: true, Limit: l}, nil
	}
	res, err := f.o.Fallback.Allow(ctx, key, f.share(l))
	if err == nil && res.ResetAfter > 0 && f.owed != nil {
		f.owed.SetTTL(key, f.owed.Now()+int64(res.ResetAfter), res.ResetAfter)
	}
	return res, err
}

// owingStore is a primary that can be told what a key owes at least.
type owingStore interface {
	AllowOwing(ctx context.Context, key string, l Limit, debt time.Duration) (Result, error)
}

// MaxDebts bounds the keys whose fallback debts wait for Redis (32 bytes
// each, about 5 MB when full; the table's slots make it 7.6 MB).
const MaxDebts = 1 << 17

// owing is the debt the fallback left key that the primary has not taken
// yet: what the key used while Redis failed, which Redis never saw. With
// one replica it is exact; with several it is this replica's share debt,
// read as if every replica had admitted as much (the cautious reading:
// the replicas' debts meet in Redis as a maximum, not a sum).
func (f *FailoverStore) owing(key string) (tat int64, debt time.Duration) {
	if f.owed == nil {
		return 0, 0
	}
	tat, ok := f.owed.Get(key)
	if !ok {
		return 0, 0
	}
	return tat, time.Duration(tat - f.owed.Now())
}

// paid forgets key's debt once the primary took it (tat, as owing read
// it), unless a fallback decision raised it in the meantime (the breaker
// opened while the call was out): that newer debt still waits for Redis.
func (f *FailoverStore) paid(key string, tat int64) {
	f.owed.Update(key, func(_, old int64, ok bool) (int64, int64, bool) {
		if ok && old > tat {
			return old, sessions.KeepExpiry, true
		}
		return 0, 0, false
	})
}

// succeeded records a success. Only the half-open probe closes an open
// breaker: a slow call that started before it opened proves nothing.
func (f *FailoverStore) succeeded(probe bool) {
	f.mu.Lock()
	wasOpen := f.open
	if wasOpen && !probe {
		f.mu.Unlock()
		return
	}
	f.failures, f.open = 0, false
	f.mu.Unlock()
	if wasOpen {
		f.transition(ModeFallback, ModeRedis, nil)
	}
}

// failed records a failure of a call that began at began (zero: count it
// whatever). Calls out together fail together when Redis stalls once (a
// batch is one round trip): they count as one failure, so that Failures in
// a row means as many stalls, not one stall under as many concurrent
// requests (QA: a busy two-core machine flapped to fallback seven times in
// 90 s with a healthy local Redis, each time on one slow round trip).
func (f *FailoverStore) failed(err error, began time.Time) {
	f.mu.Lock()
	now := f.o.Now()
	if !f.open && !began.IsZero() && began.Before(f.lastFail) {
		f.mu.Unlock()
		return
	}
	f.failures++
	f.lastFail = now
	opened, tell, tellFailure := false, false, false
	if f.open { // a probe failed
		tell = f.tellLocked(err.Error(), now)
	} else if f.failures < f.o.Failures {
		tellFailure = f.tellLocked(err.Error(), now)
	}
	if f.open || f.failures >= f.o.Failures {
		opened = !f.open
		f.open = true
		f.retryAt = now.Add(f.o.Cooldown)
		if opened {
			f.tellLocked(err.Error(), now)
		}
	}
	f.mu.Unlock()
	if opened {
		f.transition(ModeRedis, ModeFallback, err)
	}
	if tell && f.o.OnStillFailing != nil {
		f.o.OnStillFailing(err)
	}
	if tellFailure && f.o.OnFailure != nil {
		f.o.OnFailure(err)
	}
}

// Trip switches to fallback at once, for a primary known to fail (Redis
// did not answer at start): the first requests do not each wait for its
// deadline, and the mode says so from the start.
func (f *FailoverStore) Trip(err error) {
	f.failed(err, time.Time{}) // counted once
	f.mu.Lock()
	now := f.o.Now()
	opened := !f.open
	f.open, f.retryAt = true, now.Add(f.o.Cooldown)
	if opened {
		f.tellLocked(err.Error(), now)
	}
	f.mu.Unlock()
	if opened {
		f.transition(ModeRedis, ModeFallback, err)
	}
}

// stillFailingEvery is how often one reason is told again while Redis
// stays unusable; maxTold bounds the reasons remembered (they come from a
// handful of go-redis and network errors, but carry addresses and ports).
const (
	stillFailingEvery = time.Minute
	maxTold           = 8
)

// tellLocked reports whether msg is to be told now: not told within
// stillFailingEvery. It records msg as told. f.mu is held.
func (f *FailoverStore) tellLocked(msg string, now time.Time) bool {
	msg = reasonOf(msg)
	if at, ok := f.told[msg]; ok && now.Sub(at) < stillFailingEvery {
		return false
	}
	if f.told == nil {
		f.told = make(map[string]time.Time, maxTold)
	}
	for m, at := range f.told {
		if now.Sub(at) >= stillFailingEvery || len(f.told) >= maxTold {
			delete(f.told, m)
		}
	}
	f.told[msg] = now
	return true
}

// reasonOf is msg without what changes from one failure to the next for
// the same reason: the local end of a connection (each one's port is new:
// "read tcp 127.0.0.1:40680->10.0.0.5:6379") and the slot of a MOVED or
// ASK (QA: a line every probe, each "new" by its port or slot).
func reasonOf(msg string) string {
	msg = localEnd.ReplaceAllString(msg, "")
	return slotOf.ReplaceAllString(msg, "$1")
}

var (
	localEnd = regexp.MustCompile(`(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.%\w]*\]):\d{1,5}->`)
	slotOf   = regexp.MustCompile(`\b(MOVED|ASK) \d+`)
)

// probeKey and probeLimit are what Watch decides to probe the primary: a
// key no request builds (policy names have no colon), a limit it never
// reaches.
const probeKey = "chatguard:probe"

var probeLimit = Limit{Rate: 1 << 30, Period: time.Second}

// Watch probes the primary every cooldown while the store is in fallback,
// until stop is closed, so that it returns to Redis when Redis does even
// with no rate-limited traffic: otherwise the mode, its gauge and the
// fallback alert would say fallback until the next limited request.
//
// While a single Redis is used, it probes a quiet one too: a primary with no call for
// a cooldown gets the probe's decision, so that a Redis that dies while no
// limited request comes is noticed (Failures probes in a row open the
// breaker) rather than reported as used for as long as the quiet lasts
// (QA: 6.5 minutes of mode "redis" with Redis killed). It ticks four times
// a cooldown, so that a probe comes within 1¼ cooldowns of being due.
//
// On a Redis Cluster whose store can probe the cluster (clusterProber) it
// probes with that instead, in fallback and while quiet: the cluster is
// used while any master not held open by its own breaker decides. Quiet
// there means that no call told about the whole store for a cooldown:
// calls on a master held open tell nothing of the others, and the rest of
// the cluster could die unnoticed under them.
func (f *FailoverStore) Watch(stop <-chan struct{}) {
	t := time.NewTicker(max(f.o.Cooldown/4, 25*time.Millisecond))
	defer t.Stop()
	// Not the probe key on a cluster: it lives on one master, and that
	// master down would send a quiet replica's every key to the fallback
	// (review), or keep a replica in fallback for as long as that master
	// is down (QA); each master has a breaker of its own there.
	c, ok := f.o.Primary.(interface{ Cluster() bool })
	cluster := ok && c.Cluster()
	// On a cluster, the half-open probe asks whether any master decides.
	var prober clusterProber
	if p, ok := f.o.Primary.(clusterProber); ok && cluster {
		prober = p
	}
	var sweep <-chan time.Time // a debts table of the store's own
	if f.ownDebts {
		st := time.NewTicker(f.debtSweep)
		defer st.Stop()
		sweep = st.C
	}
	for {
		select {
		case <-stop:
			return
		case <-sweep:
			f.owed.Sweep()
			continue
		case <-t.C:
		}
		f.mu.Lock()
		open := f.open
		due := open && !f.o.Now().Before(f.retryAt)
		f.mu.Unlock()
		var quiet bool
		switch {
		case open:
		case prober != nil:
			quiet = time.Since(time.Unix(0, f.lastHeard.Load())) >= f.o.Cooldown
		case !cluster:
			quiet = time.Since(time.Unix(0, f.lastCall.Load())) >= f.o.Cooldown
		}
		switch {
		case prober != nil && (due || quiet):
			f.probeCluster(prober, open)
		case due || quiet:
			_, _ = f.Allow(context.Background(), probeKey, probeLimit)
		}
	}
}

// clusterProber is a primary on a Redis Cluster that can tell whether the
// cluster itself decides (RedisStore.ProbeCluster).
type clusterProber interface {
	ProbeCluster(ctx context.Context) error
}

// probeCluster is Watch's half-open probe of a cluster: the cluster
// decides when any master not held open does. Through Allow, the probe
// key's one master decided it, and with that master down the probe failed
// as ErrNodeDown, which neither closes nor counts: a quiet replica stayed
// in fallback for as long as the master was down, with the other masters
// healthy (QA: over 2 minutes, until a request on a live master's key).
func (f *FailoverStore) probeCluster(p clusterProber, open bool) {
	if !f.probing.CompareAndSwap(false, true) {
		return
	}
	defer f.probing.Store(false)
	began := f.o.Now()
	start := time.Now()
	err := p.ProbeCluster(context.Background())
	f.latency.Observe(time.Since(start).Seconds())
	f.lastHeard.Store(time.Now().UnixNano())
	if err == nil {
		f.succeeded(open)
		return
	}
	f.errors.Inc()
	f.failed(err, began)
}

func (f *FailoverStore) transition(from, to string, err error) {
	f.transitions.WithLabelValues(to).Inc()
	if f.o.OnModeChange != nil {
		f.o.OnModeChange(from, to, err)
	}
}
