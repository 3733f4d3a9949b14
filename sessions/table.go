// Package sessions holds every piece of state chatguard keeps in memory:
// bounded TTL tables (Table), the manager that owns, sweeps, reports and
// sheds them (Manager), and the memory watchdog (Watchdog).
package sessions

import (
	"errors"
	"hash/maphash"
	"iter"
	"math"
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"
)

// Reason says why an entry left a table.
type Reason uint8

// Eviction reasons, as OnEvict receives them and metrics label them.
const (
	ReasonExpired   Reason = iota // its TTL ran out
	ReasonCapacity                // the table was full and it was the least recently used
	ReasonManual                  // Delete
	ReasonEmergency               // shed by the watchdog under memory pressure
	ReasonShutdown                // the table was closed
	numReasons
)

var reasonNames = [numReasons]string{"expired", "capacity", "manual", "emergency", "shutdown"}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every reason, for metrics.
func Reasons() []Reason {
	return []Reason{ReasonExpired, ReasonCapacity, ReasonManual, ReasonEmergency, ReasonShutdown}
}

// ErrClosed is returned by operations that report errors on a closed table or manager.
var ErrClosed = errors.New("sessions: closed")

// Options configure a Table.
type Options[K comparable, V any] struct {
	// MaxEntries bounds the table; required, > 0. The bound holds at every
	// instant, under any concurrency.
	MaxEntries int
	// TTL is the default time to live of an entry; 0 means entries set
	// without their own TTL never expire (they still leave by capacity).
	TTL time.Duration
	// OnEvict, when not nil, is called once for every entry that leaves the
	// table other than by being overwritten by Set: with its key, value and
	// reason. It runs after the table's locks are released, on the goroutine
	// that caused the eviction, so it may call the table.
	OnEvict func(key K, value V, reason Reason)
	// Size, when not nil, estimates the bytes a key and value hold beyond
	// their fixed size (string contents, slices, maps). nil counts the
	// contents of string keys and string values only.
	Size func(key K, value V) int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Shards is the number of independently locked parts, rounded up to a
	// power of two; 0 means 8 per CPU (GOMAXPROCS), at most 1024, with at
	// least 4096 entries per shard (so tables under 8192 entries are one
	// shard). MaxEntries is split evenly between shards and each bounds its
	// own: a Set evicts when its key's shard is full — the least recently
	// used entry of that shard — so with several shards a table may evict a
	// little before it holds MaxEntries in all, never after.
	Shards int
}

// maxTTL is the longest TTL an entry can remember for Touch (31 bits of milliseconds).
const maxTTL = time.Duration(ttlMask) * time.Millisecond

// Table is a bounded map with TTLs and least-recently-used eviction. It is
// safe for concurrent use; each shard has its own lock. Get, Set of an
// existing key, Touch and Delete do not allocate.
type Table[K comparable, V any] struct {
	shards    []*shard[K, V]
	shardMask uint64
	seed      maphash.Seed
	ttl       time.Duration
	onEvict   func(K, V, Reason)
	size      func(K, V) int
	clock     func() int64 // nanoseconds since the table was made; never 0 for a set entry's expiry
	max       int
	name      string // set by NewManagedTable

	closed atomic.Bool
}

// NewTable returns a Table. Most tables are made through a Manager (see
// NewManagedTable) so that they are swept, reported and shed.
func NewTable[K comparable, V any](o Options[K, V]) (*Table[K, V], error) {
	if o.MaxEntries <= 0 {
		return nil, errors.New("sessions: MaxEntries must be > 0")
	}
	if o.TTL < 0 || o.TTL > maxTTL {
		return nil, errors.New("sessions: TTL must be between 0 and 24 days")
	}
	n := o.Shards
	if n <= 0 {
		// Small tables are one shard (exact LRU, exact bound); large ones
		// get 8 per CPU with at least 4096 entries each, so that the
		// per-shard bound stays within a few percent of MaxEntries.
		n = min(8*runtime.GOMAXPROCS(0), 1024, o.MaxEntries/4096)
	}
	if n < 1 {
		n = 1
	}
	n = 1 << bits.Len(uint(n-1)) // round up to a power of two
	if n > o.MaxEntries {
		n = 1 << (bits.Len(uint(o.MaxEntries)) - 1) // keep every shard's capacity >= 1
	}
	t := &Table[K, V]{
		shards:    make([]*shard[K, V], n),
		shardMask: uint64(n - 1),
		seed:      maphash.MakeSeed(),
		ttl:       o.TTL,
		onEvict:   o.OnEvict,
		size:      o.Size,
		max:       o.MaxEntries,
	}
	// Monotonic nanoseconds from a base: one clock read per operation that
	// needs it, and immune to wall-clock jumps. Expiries are base-relative
	// and start at 1 ns, so 0 can mean "never".
	if o.Now != nil {
		base := o.Now().Add(-time.Nanosecond)
		t.clock = func() int64 { return int64(o.Now().Sub(base)) }
	} else {
		base := time.Now().Add(-time.Nanosecond)
		t.clock = func() int64 { return int64(time.Since(base)) }
	}
	if t.size == nil {
		t.size = defaultSize[K, V]
	}
	for i := range t.shards {
		capacity := o.MaxEntries / n
		if i < o.MaxEntries%n {
			capacity++
		}
		t.shards[i] = newShard[K, V](capacity)
	}
	return t, nil
}

func defaultSize[K comparable, V any](k K, v V) int {
	n := 0
	if s, ok := any(k).(string); ok {
		n += len(s)
	}
	if s, ok := any(v).(string); ok {
		n += len(s)
	}
	return n
}

func (t *Table[K, V]) locate(k K) (*shard[K, V], uint32) {
	h := maphash.Comparable(t.seed, k)
	return t.shards[h&t.shardMask], uint32(h >> 32)
}

// Get returns the value for k. An expired entry is never returned: it is
// removed (reason expired) and counted as a miss. A hit marks k as used,
// which spares it from the next capacity eviction (see Set).
func (t *Table[K, V]) Get(k K) (V, bool) {
	s, h := t.locate(k)
	s.mu.Lock()
	i := s.find(h, k)
	if i < 0 {
		s.misses++
		s.mu.Unlock()
		var zero V
		return zero, false
	}
	e := s.at(i)
	if e.expired(t.clock()) {
		ev := t.drop(s, i, ReasonExpired)
		s.misses++
		s.mu.Unlock()
		t.report(ev)
		var zero V
		return zero, false
	}
	e.markUsed()
	s.hits++
	v := e.val
	s.mu.Unlock()
	return v, true
}

// Set stores v under k with the table's default TTL. It reports false only
// on a closed table. Setting an existing key marks it used. When k is new and
// its shard is full, the least recently used entry makes room, approximated
// the way page caches do (second chance, or CLOCK): from the oldest end, an
// entry used since it was last considered is spared once and goes back to
// the young end; the first one that was not used is evicted. Each entry is
// spared at most once per pass, so eviction is O(1) amortised, and reads
// write nothing but a bit in the entry they already hold.
func (t *Table[K, V]) Set(k K, v V) bool { return t.set(k, v, t.ttl) }

// SetTTL stores v under k with its own TTL (0 or less: never expires;
// longer than 24 days: 24 days).
func (t *Table[K, V]) SetTTL(k K, v V, ttl time.Duration) bool {
	if ttl < 0 {
		ttl = 0
	}
	if ttl > maxTTL {
		ttl = maxTTL
	}
	return t.set(k, v, ttl)
}

func (t *Table[K, V]) set(k K, v V, ttl time.Duration) bool {
	s, h := t.locate(k)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	ev := t.put(s, h, k, v, ttl)
	s.mu.Unlock()
	t.report(ev)
	return true
}

// eviction is one entry that left a table, to report once the lock is released.
type eviction[K comparable, V any] struct {
	key    K
	val    V
	reason Reason
	ok     bool
}

// drop removes entry i of s (whose lock the caller holds) with reason r and
// returns it, to be reported once the lock is released.
func (t *Table[K, V]) drop(s *shard[K, V], i int32, r Reason) eviction[K, V] {
	e := s.at(i)
	ev := eviction[K, V]{key: e.key, val: e.val, reason: r, ok: true}
	s.remove(i, t.size(ev.key, ev.val))
	s.evictions[r]++
	return ev
}

func (t *Table[K, V]) report(evs ...eviction[K, V]) {
	for _, e := range evs {
		if e.ok {
			t.evicted(e.key, e.val, e.reason)
		}
	}
}

// put stores v under k in s, whose lock the caller holds, making room when
// s is full. It returns the entry evicted for room, if any.
func (t *Table[K, V]) put(s *shard[K, V], h uint32, k K, v V, ttl time.Duration) eviction[K, V] {
	var expires int64
	if ttl > 0 {
		expires = t.clock() + int64(ttl)
	}
	meta := uint32((ttl + time.Millisecond - 1) / time.Millisecond) // Touch never shortens a sub-millisecond TTL to 0
	size := t.size(k, v)
	if i := s.find(h, k); i >= 0 {
		e := s.at(i)
		s.bytes += int64(size - t.size(e.key, e.val))
		e.val, e.expires, e.meta = v, expires, meta|usedBit
		return eviction[K, V]{}
	}
	var ev eviction[K, V]
	if s.count >= s.capacity {
		i := s.victim(t.clock)
		reason := ReasonCapacity
		if s.at(i).expired(t.clock()) {
			reason = ReasonExpired
		}
		ev = t.drop(s, i, reason)
	}
	s.insert(h, k, v, expires, meta, size)
	return ev
}

// KeepTTL, returned as Update's ttl, keeps an existing entry's expiry (a new
// entry then never expires).
const KeepTTL time.Duration = -1

// Update changes k's entry atomically: fn gets the current value (ok is
// false when k is absent or expired) and returns the new value with its TTL
// (0: never expires; KeepTTL: as it was), or keep false to remove k (reason
// manual). fn runs
// under the shard's lock: it must be quick and must not call the table.
// This is what a rate limiter's read-modify-write needs to be exact under
// concurrency. It is a lookup like Get: a hit when k was live, else a miss.
// It reports false only on a closed table.
func (t *Table[K, V]) Update(k K, fn func(old V, ok bool) (v V, ttl time.Duration, keep bool)) bool {
	s, h := t.locate(k)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	var expired, removed, room eviction[K, V]
	var old V
	i := s.find(h, k)
	if i >= 0 && s.at(i).expired(t.clock()) {
		expired = t.drop(s, i, ReasonExpired)
		i = -1
	}
	if i >= 0 {
		old = s.at(i).val
		s.hits++
	} else {
		s.misses++
	}
	v, ttl, keep := fn(old, i >= 0)
	switch {
	case keep && ttl < 0 && i >= 0:
		e := s.at(i)
		s.bytes += int64(t.size(k, v) - t.size(e.key, e.val))
		e.val = v
		e.markUsed()
	case keep:
		room = t.put(s, h, k, v, min(max(ttl, 0), maxTTL))
	case i >= 0:
		removed = t.drop(s, i, ReasonManual)
	}
	s.mu.Unlock()
	t.report(expired, removed, room)
	return true
}

// Touch extends k's life by its TTL (its own, or the table's default) from
// now and marks it used: the seed's updateUserActivity.
// It reports whether k was present and not expired.
func (t *Table[K, V]) Touch(k K) bool {
	s, h := t.locate(k)
	s.mu.Lock()
	i := s.find(h, k)
	if i < 0 {
		s.mu.Unlock()
		return false
	}
	e := s.at(i)
	if e.expires != 0 {
		now := t.clock()
		if e.expires <= now {
			ev := t.drop(s, i, ReasonExpired)
			s.mu.Unlock()
			t.report(ev)
			return false
		}
		e.expires = now + int64(e.meta&ttlMask)*int64(time.Millisecond)
	}
	e.markUsed()
	s.mu.Unlock()
	return true
}

// Delete removes k (reason manual) and reports whether it was there.
func (t *Table[K, V]) Delete(k K) bool {
	s, h := t.locate(k)
	s.mu.Lock()
	i := s.find(h, k)
	if i < 0 {
		s.mu.Unlock()
		return false
	}
	ev := t.drop(s, i, ReasonManual)
	s.mu.Unlock()
	t.report(ev)
	return true
}

// Len is the number of entries, expired ones not yet removed included.
func (t *Table[K, V]) Len() int {
	n := 0
	for _, s := range t.shards {
		s.mu.Lock()
		n += s.count
		s.mu.Unlock()
	}
	return n
}

// Cap is MaxEntries.
func (t *Table[K, V]) Cap() int { return t.max }

// All iterates over the live entries, shard by shard, from a snapshot of
// each shard: fn may call the table. Expired entries are skipped.
func (t *Table[K, V]) All() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		type kv struct {
			k K
			v V
		}
		var buf []kv
		for _, s := range t.shards {
			buf = buf[:0]
			now := t.clock()
			s.mu.Lock()
			for i := s.head; i >= 0; i = s.at(i).next {
				e := s.at(i)
				if e.expires == 0 || e.expires > now {
					buf = append(buf, kv{e.key, e.val})
				}
			}
			s.mu.Unlock()
			for _, p := range buf {
				if !yield(p.k, p.v) {
					return
				}
			}
		}
	}
}

// Sweep removes every expired entry (reason expired) and returns how many.
// Shards that became mostly empty give their memory back.
func (t *Table[K, V]) Sweep() int {
	now := t.clock()
	return t.bulk(ReasonExpired, func(s *shard[K, V], out []victim[K, V]) []victim[K, V] {
		for i := s.tail; i >= 0; {
			e := s.at(i)
			prev := e.prev
			if e.expires != 0 && e.expires <= now {
				out = append(out, victim[K, V]{e.key, e.val})
				s.remove(i, t.size(e.key, e.val))
			}
			i = prev
		}
		return out
	})
}

// Shed removes the least recently used fraction (0–1) of every shard's
// entries with reason and returns how many went, picked as a capacity
// eviction picks (see Set).
func (t *Table[K, V]) Shed(fraction float64, reason Reason) int {
	if fraction <= 0 {
		return 0
	}
	var q shedQuota
	return t.bulkCompact(reason, 0.9, func(s *shard[K, V], out []victim[K, V]) []victim[K, V] {
		n := q.next(s.count, math.Min(fraction, 1))
		for ; n > 0 && s.tail >= 0; n-- {
			// The same choice as a capacity eviction's: an entry read,
			// touched or updated since it was last considered is spared
			// once (review: popping the tail shed the earliest-connected
			// users however active they were).
			i := s.victim(t.clock)
			e := s.at(i)
			out = append(out, victim[K, V]{e.key, e.val})
			s.remove(i, t.size(e.key, e.val))
		}
		return out
	})
}

// shedQuota spreads a shed of fraction of a whole table over its shards,
// visited one after the other: each shard gives its part, with what the
// shards before it could not give in whole entries carried over, so that
// the table loses ceil(fraction × entries), not ceil(fraction × shard) per
// shard (20 entries over 256 shards lost all 20 to a 20 % shed).
type shedQuota struct {
	owed  float64 // fraction × the entries of the shards visited so far
	taken int     // entries given so far
}

// next is the number of entries a shard of count entries gives.
func (q *shedQuota) next(count int, fraction float64) int {
	q.owed += float64(count) * fraction
	n := min(max(int(math.Ceil(q.owed-1e-9))-q.taken, 0), count)
	q.taken += n
	return n
}

type victim[K comparable, V any] struct {
	k K
	v V
}

// bulk runs pick on every shard under its lock, counts the victims with
// reason, compacts shards that became sparse, and calls OnEvict afterwards.
func (t *Table[K, V]) bulk(reason Reason, pick func(*shard[K, V], []victim[K, V]) []victim[K, V]) int {
	return t.bulkCompact(reason, 0.25, pick)
}

// bulkCompact is bulk compacting shards whose live share of the slab fell
// to at most live (0.25 for a sweep; 0.9 when shedding, whose point is to
// give memory back at once).
func (t *Table[K, V]) bulkCompact(reason Reason, live float64, pick func(*shard[K, V], []victim[K, V]) []victim[K, V]) int {
	var out []victim[K, V]
	for _, s := range t.shards {
		s.mu.Lock()
		before := len(out)
		out = pick(s, out)
		s.evictions[reason] += uint64(len(out) - before)
		// Whether or not this pass removed anything: entries deleted one
		// by one (sockets that disconnected) left a slab the size of the
		// peak, and the table reported megabytes with no entries until
		// traffic came back (QA: the watchdog stayed critical on it).
		s.maybeCompact(live)
		s.mu.Unlock()
	}
	for _, v := range out {
		t.evicted(v.k, v.v, reason)
	}
	return len(out)
}

// Close removes every entry with reason shutdown (OnEvict is called for
// each) and frees the table's memory. Afterwards Get and Touch miss, Set
// stores nothing and reports false, Len is 0. Close is idempotent.
func (t *Table[K, V]) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	var out []victim[K, V]
	for _, s := range t.shards {
		s.mu.Lock()
		for i := s.head; i >= 0; i = s.at(i).next {
			e := s.at(i)
			out = append(out, victim[K, V]{e.key, e.val})
		}
		s.evictions[ReasonShutdown] += uint64(s.count)
		s.reset()
		s.closed = true
		s.mu.Unlock()
	}
	for _, v := range out {
		t.evicted(v.k, v.v, ReasonShutdown)
	}
	return nil
}

func (t *Table[K, V]) evicted(k K, v V, r Reason) {
	if t.onEvict != nil {
		t.onEvict(k, v, r)
	}
}
