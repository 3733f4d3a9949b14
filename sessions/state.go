package sessions

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/zeebo/xxh3"
)

// A StateTable is a bounded table of int64 states with expiries — a rate
// limiter's theoretical arrival times, counters, deadlines — built for the
// one access a limiter makes on every request: read, decide, write one key.
//
// It never stores a key. A key is reduced to a 128-bit fingerprint (seeded
// XXH3; two keys share one in about 2^-128, far below anything a limiter can
// notice), and an entry is the fingerprint, the value and the expiry, 32
// bytes held inline in an open-addressing array (linear probing,
// backward-shift deletion). A decision touches one or two adjacent cache
// lines — the key's slot — instead of an index slot, an entry and the key's
// bytes, and the table holds no pointers for the garbage collector to scan.
//
// When a shard is full, a new key evicts, among the entries next to its slot,
// the one that expires first (an expired one at once): for rate-limit state
// the entry nearest to being as good as absent. Expired entries read as
// absent and are removed by Sweep.
//
// Times are Unix nanoseconds from the table's clock (see Now). It is safe for
// concurrent use. A decision on a live entry takes no lock shared with
// other keys: it holds the entry's own cell (a bit in the cell, see
// stateCell), so two cores deciding at once never pass a lock's cache line
// between them; adding, removing and moving entries is done under the
// shard's mutex.
type StateTable struct {
	shards     []stateShard
	shardShift uint // shard = fingerprint.Hi >> shardShift
	seed       atomic.Uint64
	ttl        time.Duration
	max        int
	now        func() int64
	volatile   func(string) bool
	name       string // set by NewManagedStateTable
	hits       hitCount

	closed atomic.Bool
}

// StateOptions configure a StateTable.
type StateOptions struct {
	// MaxEntries bounds the table; it must be > 0.
	MaxEntries int
	// TTL is how long Set keeps an entry; 0 means forever.
	TTL time.Duration
	// Now is the clock; nil means the monotonic clock, read as Unix time
	// from the moment the table was made (immune to wall-clock jumps).
	Now func() time.Time
	// Volatile reports keys whose entries Entries leaves out (state not
	// worth saving across a restart); nil means none.
	Volatile func(key string) bool
	// Shards is the number of independently locked parts, rounded up to a
	// power of two; 0 means one per 4096 entries, at most 256.
	Shards int
}

// Fingerprint is what a StateTable keeps of a key.
type Fingerprint struct{ Hi, Lo uint64 }

// KeepExpiry, returned as Update's expiry, keeps a live entry's expiry (a new
// entry then never expires).
const KeepExpiry int64 = -1

const (
	stateMinCells  = 8
	stateEvictScan = 8 // entries an eviction compares
	volatileBit    = 2 // in Fingerprint.Lo; bit 0 is always set (0 marks an empty cell)
	heldBit        = 4 // in stateCell.lo only: the cell is held (never in a Fingerprint)
	stateTries     = 4 // lock-free attempts before the shard's mutex
)

type stateShard struct {
	// The array, read by every decision and replaced only when it grows or
	// shrinks: a line of its own, which both cores keep in their caches.
	cells atomic.Pointer[[]stateCell] // at most 3/4 full; nil when empty
	_     [56]byte

	// Under mu: what adds, removes and moves entries.
	mu        sync.Mutex
	count     int
	misses    uint64
	expired   uint64 // evictions for expiry found on the way (Update, Get)
	capacity  int
	closed    bool
	evictions [numReasons]uint64 // the others, and expiries a sweep removed

	_ [128 - 48 - 8*numReasons]byte // whole lines per shard
}

// A stateCell is one entry. lo and hi are read without locks (atomically),
// so that a lookup needs none; lo == 0 marks an empty cell. val and exp
// belong to whoever holds the cell: heldBit set in lo by a compare-and-swap,
// cleared by the store that ends the hold. Only the shard's mutex holder
// fills, moves and empties cells, and it holds a cell before moving or
// emptying it, so a lock-free decision that holds a cell holding its key
// has the entry itself. An array that was replaced keeps its cells held for
// good: a decision that read it before the swap finds them held and starts
// again from the new one.
type stateCell struct {
	hi, lo uint64
	val    int64
	exp    int64 // 0 = never
}

// NewStateTable returns a StateTable with a random fingerprint seed.
func NewStateTable(o StateOptions) (*StateTable, error) {
	if o.MaxEntries <= 0 {
		return nil, errors.New("sessions: MaxEntries must be > 0")
	}
	if o.TTL < 0 {
		return nil, errors.New("sessions: TTL must be >= 0")
	}
	n := o.Shards
	if n <= 0 {
		n = min(o.MaxEntries/4096, 256)
	}
	n = max(n, 1)
	n = 1 << bits.Len(uint(n-1))
	for n > o.MaxEntries {
		n >>= 1
	}
	t := &StateTable{
		shards:     make([]stateShard, n),
		shardShift: uint(64 - bits.TrailingZeros(uint(n))),
		ttl:        o.TTL,
		max:        o.MaxEntries,
		volatile:   o.Volatile,
		hits:       hitCount{slots: new(hitSlots)},
	}
	if o.Now != nil {
		t.now = func() int64 { return o.Now().UnixNano() }
	} else {
		base := time.Now()
		unix := base.UnixNano()
		t.now = func() int64 { return unix + int64(time.Since(base)) }
	}
	var seed [8]byte
	_, _ = rand.Read(seed[:]) // never fails (crypto/rand panics rather)
	t.seed.Store(binary.LittleEndian.Uint64(seed[:]))
	for i := range t.shards {
		s := &t.shards[i]
		s.capacity = o.MaxEntries / n
		if i < o.MaxEntries%n {
			s.capacity++
		}
	}
	return t, nil
}

// NewManagedStateTable makes a StateTable owned by m under name (unique in m).
func NewManagedStateTable(m *Manager, name string, o StateOptions) (*StateTable, error) {
	t, err := NewStateTable(o)
	return manage(m, name, t, err)
}

func (t *StateTable) setName(name string) { t.name = name }

// Now is the table's clock, in Unix nanoseconds.
func (t *StateTable) Now() int64 { return t.now() }

// Seed is the fingerprint seed: fingerprints saved under one seed mean
// something only to a table with the same seed.
func (t *StateTable) Seed() uint64 { return t.seed.Load() }

// SetSeed replaces the fingerprint seed, so that fingerprints saved by an
// earlier process (see Entries and Put) find their keys again. The table
// must be empty (ErrNotEmpty otherwise); the check and the change are one
// step, with every shard locked. Call it before the table is shared: an
// Update that computed its fingerprint just before the change would still
// store under the old seed.
func (t *StateTable) SetSeed(seed uint64) error {
	for i := range t.shards {
		t.shards[i].mu.Lock()
	}
	defer func() {
		for i := range t.shards {
			t.shards[i].mu.Unlock()
		}
	}()
	for i := range t.shards {
		if t.shards[i].count > 0 {
			return ErrNotEmpty
		}
	}
	t.seed.Store(seed)
	return nil
}

// ErrNotEmpty: the seed of a table that holds entries cannot change.
var ErrNotEmpty = errors.New("sessions: the seed of a table that holds entries cannot change")

// Fingerprint is key's fingerprint in this table.
func (t *StateTable) Fingerprint(key string) Fingerprint {
	h := xxh3.HashString128Seed(key, t.seed.Load())
	lo := h.Lo&^heldBit | 1
	if t.volatile != nil && t.volatile(key) {
		lo |= volatileBit
	} else {
		lo &^= volatileBit
	}
	return Fingerprint{h.Hi, lo}
}

func (t *StateTable) shard(f Fingerprint) *stateShard {
	if t.shardShift >= 64 {
		return &t.shards[0]
	}
	return &t.shards[f.Hi>>t.shardShift]
}

// Update changes key's entry atomically: fn gets the table's time and the
// current value (ok is false when key is absent or expired) and returns the
// new value with its expiry (Unix nanoseconds on the table's clock; 0:
// never; KeepExpiry: as it was), or keep false to remove key (reason
// manual). fn runs while key's entry is held: it must be quick and must not
// call the table. It may run more than once, and only its last run counts
// (a removal is done again under the shard's mutex): it must only compute.
// This is a rate limiter's read-modify-write, exact under concurrency. It
// reports false only on a closed table.
func (t *StateTable) Update(key string, fn func(now, old int64, ok bool) (v, expires int64, keep bool)) bool {
	f := t.Fingerprint(key)
	s := t.shard(f)
	now := t.now()
	if s.tryUpdate(f, now, fn) {
		t.hits.add(1)
		return true
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	cells := s.array()
	i, found := s.find(f)
	var c *stateCell
	var live bool
	if found {
		c = &cells[i]
		c.hold()
		live = !c.expired(now)
	}
	var old int64
	if live {
		old = c.val
		t.hits.add(1)
	} else {
		s.misses++
	}
	v, exp, keep := fn(now, old, live)
	switch {
	case keep && found:
		if !live {
			s.expired++ // replaced in place
		}
		if exp == KeepExpiry {
			if live {
				exp = c.exp
			} else {
				exp = 0
			}
		}
		c.val, c.exp = v, exp
		c.release(f.Lo)
	case keep:
		if exp == KeepExpiry {
			exp = 0
		}
		s.insert(f, v, exp, now)
	case found:
		s.remove(i)
		if live {
			s.evictions[ReasonManual]++
		} else {
			s.expired++
		}
		s.shrink(1.0/8, 1.0/2)
	}
	s.mu.Unlock()
	return true
}

// tryUpdate is Update on a live entry, without the shard's mutex: it holds
// the entry's cell instead. It reports false when the entry is absent,
// expired or being moved, or fn would remove it: then the caller takes the
// mutex.
func (s *stateShard) tryUpdate(f Fingerprint, now int64, fn func(now, old int64, ok bool) (int64, int64, bool)) bool {
	c := s.holdLive(f, now)
	if c == nil {
		return false
	}
	v, exp, keep := fn(now, c.val, true)
	if !keep {
		c.release(f.Lo)
		return false
	}
	if exp == KeepExpiry {
		exp = c.exp
	}
	c.val, c.exp = v, exp
	c.release(f.Lo)
	return true
}

// holdLive finds f's cell without the shard's mutex and holds it, if it
// holds a live entry; nil otherwise (absent, expired, or held too long by
// others: the caller takes the mutex).
func (s *stateShard) holdLive(f Fingerprint, now int64) *stateCell {
	for try := 0; try < stateTries; try++ {
		cp := s.cells.Load()
		if cp == nil {
			return nil
		}
		cells := *cp
		c := probe(cells, f)
		if c == nil {
			return nil
		}
		if !atomic.CompareAndSwapUint64(&c.lo, f.Lo, f.Lo|heldBit) {
			continue // held (by a decision, a move, or a replaced array) or refilled
		}
		if atomic.LoadUint64(&c.hi) != f.Hi || c.expired(now) {
			c.release(f.Lo)
			return nil
		}
		return c
	}
	return nil
}

// probe finds f's cell in cells, reading without locks: nil when absent,
// which a concurrent move can make it report wrongly, never the reverse (a
// found cell is checked again once held). It gives up after a whole turn
// (an array being changed under it).
func probe(cells []stateCell, f Fingerprint) *stateCell {
	n := len(cells)
	if n == 0 {
		return nil
	}
	p := home(f.Lo, n)
	for range n {
		c := &cells[p]
		lo := atomic.LoadUint64(&c.lo) &^ heldBit
		if lo == 0 {
			return nil
		}
		if lo == f.Lo && atomic.LoadUint64(&c.hi) == f.Hi {
			return c
		}
		if p++; p == n {
			p = 0
		}
	}
	return nil
}

// Get returns key's value. An expired entry is never returned: it is removed
// (reason expired) and counted as a miss.
func (t *StateTable) Get(key string) (int64, bool) { return t.get(key, true) }

// Peek is Get without counting a hit or a miss: a lookup on the side of
// the table's own work (the IP-block check before every request), which
// would otherwise drown its hit rate.
func (t *StateTable) Peek(key string) (int64, bool) { return t.get(key, false) }

func (t *StateTable) get(key string, count bool) (int64, bool) {
	f := t.Fingerprint(key)
	s := t.shard(f)
	now := t.now()
	if c := s.holdLive(f, now); c != nil {
		v := c.val
		c.release(f.Lo)
		if count {
			t.hits.add(1)
		}
		return v, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cells := s.array()
	i, found := s.find(f)
	if found {
		c := &cells[i]
		c.hold()
		if c.expired(now) {
			s.remove(i)
			s.expired++
			s.shrink(1.0/8, 1.0/2)
			found = false
		} else {
			v := c.val
			c.release(f.Lo)
			if count {
				t.hits.add(1)
			}
			return v, true
		}
	}
	if count {
		s.misses++
	}
	return 0, false
}

// Set stores v under key for the table's TTL. It reports false only on a
// closed table.
func (t *StateTable) Set(key string, v int64) bool { return t.SetTTL(key, v, t.ttl) }

// SetTTL stores v under key for ttl (0 or less: forever).
func (t *StateTable) SetTTL(key string, v int64, ttl time.Duration) bool {
	return t.Update(key, func(now, _ int64, _ bool) (int64, int64, bool) {
		if ttl <= 0 {
			return v, 0, true
		}
		return v, now + int64(ttl), true
	})
}

// Delete removes key (reason manual) and reports whether it was there.
func (t *StateTable) Delete(key string) bool {
	var was bool
	t.Update(key, func(_, _ int64, ok bool) (int64, int64, bool) {
		was = ok
		return 0, 0, false
	})
	return was
}

// Put stores an entry by its fingerprint (as Entries gave it), unless it has
// expired: how saved state comes back. It reports false when the entry was
// not stored (expired, or a closed table).
func (t *StateTable) Put(f Fingerprint, v, expires int64) bool {
	f.Lo = f.Lo&^heldBit | 1
	s := t.shard(f)
	now := t.now()
	if expires != 0 && expires <= now {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if i, found := s.find(f); found {
		c := &s.array()[i]
		c.hold()
		c.val, c.exp = v, expires
		c.release(f.Lo)
		return true
	}
	s.insert(f, v, expires, now)
	return true
}

// Entries calls yield for every live entry whose key is not volatile, shard
// by shard, from a copy of each shard: yield may call the table.
func (t *StateTable) Entries(yield func(f Fingerprint, v, expires int64) bool) {
	var buf []stateCell
	for i := range t.shards {
		s := &t.shards[i]
		now := t.now()
		buf = buf[:0]
		s.mu.Lock()
		cells := s.array()
		for p := range cells {
			c := &cells[p]
			if lo := c.loLoad(); lo != 0 && lo&volatileBit == 0 {
				c.hold()
				if !c.expired(now) {
					buf = append(buf, stateCell{c.hi, lo, c.val, c.exp})
				}
				c.release(lo)
			}
		}
		s.mu.Unlock()
		for _, c := range buf {
			if !yield(Fingerprint{c.hi, c.lo}, c.val, c.exp) {
				return
			}
		}
	}
}

// Len is the number of entries, expired ones not yet removed included.
func (t *StateTable) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += s.count
		s.mu.Unlock()
	}
	return n
}

// Cap is MaxEntries.
func (t *StateTable) Cap() int { return t.max }

// Stats returns the table's figures; Bytes is the memory its cells hold.
func (t *StateTable) Stats() TableStats {
	st := TableStats{Name: t.name, Capacity: t.max, TTL: t.ttl, Hits: t.hits.load()}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		st.Size += s.count
		st.Misses += s.misses
		for r := range st.Evictions {
			st.Evictions[r] += s.evictions[r]
		}
		st.Evictions[ReasonExpired] += s.expired
		st.Bytes += int64(len(s.array())) * int64(unsafe.Sizeof(stateCell{}))
		s.mu.Unlock()
	}
	return st
}

// Sweep removes every expired entry (reason expired) and returns how many.
// Shards that became mostly empty give their memory back.
func (t *StateTable) Sweep() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		now := t.now()
		s.mu.Lock()
		n += s.removeWhere(len(s.array()), ReasonExpired, 1.0/8, 1.0/2, func(c *stateCell) bool { return c.expired(now) })
		s.mu.Unlock()
	}
	return n
}

// Shed removes the fraction (0–1) of every shard's entries that expire first,
// with reason, and returns how many went.
func (t *StateTable) Shed(fraction float64, reason Reason) int {
	if fraction <= 0 {
		return 0
	}
	fraction = math.Min(fraction, 1)
	n := 0
	var exps []int64
	var q shedQuota
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		want := q.next(s.count, fraction)
		if want > 0 {
			exps = exps[:0]
			cells := s.array()
			for p := range cells {
				c := &cells[p]
				if lo := c.loLoad(); lo != 0 {
					c.hold()
					exps = append(exps, c.sortExp())
					c.release(lo)
				}
			}
			slices.Sort(exps)
			limit := exps[want-1]
			n += s.removeWhere(want, reason, 2.0/3, 2.0/3, func(c *stateCell) bool { return c.sortExp() <= limit })
		}
		s.mu.Unlock()
	}
	return n
}

// Close removes every entry (reason shutdown) and frees the table's memory.
// Afterwards Get misses, Update and Set store nothing and report false, Len
// is 0. Close is idempotent.
func (t *StateTable) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.evictions[ReasonShutdown] += uint64(s.count)
		s.count = 0
		retire(s.array())
		s.cells.Store(nil)
		s.closed = true
		s.mu.Unlock()
	}
	return nil
}
