// Package limiter decides whether a request or an event may pass: rate-limit
// policies, the stores that hold their state, and the headers that report it.
//
// Every decision is GCRA (the generic cell rate algorithm, as go-redis's
// redis_rate and Stripe's limiters use): one timestamp per key — the
// theoretical arrival time (TAT) — read and written in one atomic step, so a
// store needs no counters and no windows, and decisions are exact under any
// concurrency.
package limiter

import (
	"fmt"
	"time"
)

// Limit is "Rate requests per Period, in bursts of up to Burst".
type Limit struct {
	Rate   int
	Period time.Duration
	// Burst is how many may pass at once; 0 means Rate (a client that was
	// idle for a Period may use the whole Rate at once, as a fixed window
	// allows, and then one every Period/Rate).
	Burst int
}

func (l Limit) String() string {
	return fmt.Sprintf("%d per %s (burst %d)", l.Rate, l.Period, l.burst())
}

func (l Limit) burst() int {
	if l.Burst > 0 {
		return l.Burst
	}
	return l.Rate
}

// Quota and Window are the limit as the IETF draft's RateLimit-Policy
// states it (q and w): the most that may pass at once (the burst), and the
// time that many take to come back. Without a burst of its own that is
// Rate per Period; with one, a client never has more than Burst left
// ("r" at most "q"): 2 a minute with a burst of 10 is 10 per 5 min.
func (l Limit) Quota() int { return l.burst() }

// Window: see Quota.
func (l Limit) Window() time.Duration {
	if l.Burst <= 0 || l.Burst == l.Rate || l.Rate <= 0 {
		return l.Period
	}
	return time.Duration(float64(l.Period) * float64(l.Burst) / float64(l.Rate))
}

// interval is the time one request "costs": Period / Rate, at least 1 ns
// (configuration validation keeps it at 1 µs or more).
func (l Limit) interval() time.Duration {
	return max(l.Period/time.Duration(max(l.Rate, 1)), 1)
}

// Result is one decision.
type Result struct {
	Allowed bool
	// Limit is the limit decided against (after role and multiplier).
	Limit Limit
	// Remaining is how many more would pass right now.
	Remaining int
	// RetryAfter is how long until one more passes (0 when Allowed).
	RetryAfter time.Duration
	// ResetAfter is how long until the key is back to a full burst.
	ResetAfter time.Duration
}

// gcra applies one request to tat (the key's theoretical arrival time; zero
// for a new key) at now and returns the decision and the TAT to store.
// Times are nanoseconds on any clock both sides share.
func gcra(l Limit, tat, now int64) (res Result, newTAT int64) {
	interval := int64(l.interval())
	burstOffset := interval * int64(l.burst())
	if tat < now {
		tat = now
	}
	if tat > now+burstOffset {
		// More owed than this limit's whole window: the debt of a
		// tighter limit since lifted (a period typo reverted). It is
		// never owed under this one, which stores at most now +
		// burstOffset; kept, a reverted 24h period blocked clients for
		// ten hours under its 1-minute window (QA).
		tat = now + burstOffset
	}
	next := tat + interval
	allowAt := next - burstOffset
	res.Limit = l
	diff := now - allowAt
	if diff < 0 {
		// Not yet: the stored TAT stays.
		res.RetryAfter = time.Duration(-diff)
		res.ResetAfter = time.Duration(tat - now)
		return res, tat
	}
	res.Allowed = true
	res.Remaining = int(diff / interval)
	res.ResetAfter = time.Duration(next - now)
	return res, next
}
