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
// concurrent use.
type StateTable struct {
	shards     []stateShard
	shardShift uint // shard = fingerprint.Hi >> shardShift
	seed       atomic.Uint64
	ttl        time.Duration
	max        int
	now        func() int64
	volatile   func(string) bool
	name       string // set by NewManagedStateTable

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
)

type stateShard struct {
	// What every decision reads and writes, in one cache line: with two
	// cores deciding at once, each line a decision writes may have to come
	// over from the other core, so there is one.
	mu      sync.Mutex
	cells   []stateCell // at most 3/4 full
	count   int
	hits    uint64
	misses  uint64
	expired uint64 // evictions for expiry found on the way (Update, Get)

	// Read often, written rarely.
	capacity  int
	closed    bool
	evictions [numReasons]uint64 // the others, and expiries a sweep removed

	_ [64 - 8 - 8 - 8*numReasons]byte // two whole lines per shard
}

type stateCell struct {
	hi, lo uint64 // lo == 0: empty
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
	lo := h.Lo | 1
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
// manual). fn runs under the shard's lock: it must be quick and must not
// call the table. This is a rate limiter's read-modify-write, exact under
// concurrency. It reports false only on a closed table.
func (t *StateTable) Update(key string, fn func(now, old int64, ok bool) (v, expires int64, keep bool)) bool {
	f := t.Fingerprint(key)
	s := t.shard(f)
	now := t.now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	i, found := s.find(f)
	live := found && !s.cells[i].expired(now)
	var old int64
	if live {
		old = s.cells[i].val
		s.hits++
	} else {
		s.misses++
	}
	v, exp, keep := fn(now, old, live)
	switch {
	case keep && found:
		c := &s.cells[i]
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

// Get returns key's value. An expired entry is never returned: it is removed
// (reason expired) and counted as a miss.
func (t *StateTable) Get(key string) (int64, bool) {
	f := t.Fingerprint(key)
	s := t.shard(f)
	now := t.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := s.find(f)
	if found && s.cells[i].expired(now) {
		s.remove(i)
		s.expired++
		s.shrink(1.0/8, 1.0/2)
		found = false
	}
	if !found {
		s.misses++
		return 0, false
	}
	s.hits++
	return s.cells[i].val, true
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
	f.Lo |= 1
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
		s.cells[i].val, s.cells[i].exp = v, expires
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
		for _, c := range s.cells {
			if c.lo != 0 && c.lo&volatileBit == 0 && !c.expired(now) {
				buf = append(buf, c)
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
	st := TableStats{Name: t.name, Capacity: t.max, TTL: t.ttl}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		st.Size += s.count
		st.Hits += s.hits
		st.Misses += s.misses
		for r := range st.Evictions {
			st.Evictions[r] += s.evictions[r]
		}
		st.Evictions[ReasonExpired] += s.expired
		st.Bytes += int64(len(s.cells)) * int64(unsafe.Sizeof(stateCell{}))
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
		n += s.removeWhere(len(s.cells), ReasonExpired, 1.0/8, 1.0/2, func(c *stateCell) bool { return c.expired(now) })
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
			for _, c := range s.cells {
				if c.lo != 0 {
					exps = append(exps, c.sortExp())
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
		s.cells = nil
		s.closed = true
		s.mu.Unlock()
	}
	return nil
}

func (c *stateCell) expired(now int64) bool { return c.exp != 0 && c.exp <= now }

// sortExp orders entries by expiry, "never" last.
func (c *stateCell) sortExp() int64 {
	if c.exp == 0 {
		return math.MaxInt64
	}
	return c.exp
}

// home is where an entry of fingerprint low half lo belongs: lo scaled to
// the array's size (any size, not only powers of two; the shard was chosen
// by the high half).
func (s *stateShard) home(lo uint64) int {
	h, _ := bits.Mul64(lo, uint64(len(s.cells)))
	return int(h)
}

// next is the position after p, wrapping at the end of the array.
func (s *stateShard) next(p int) int {
	if p++; p == len(s.cells) {
		return 0
	}
	return p
}

// dist is how far forward to is from from, cyclically.
func (s *stateShard) dist(from, to int) int {
	if to >= from {
		return to - from
	}
	return to + len(s.cells) - from
}

// find returns f's position, or the empty position where it would go (-1
// in a shard that holds no cells).
func (s *stateShard) find(f Fingerprint) (int, bool) {
	if len(s.cells) == 0 {
		return -1, false
	}
	for p := s.home(f.Lo); ; p = s.next(p) {
		c := &s.cells[p]
		if c.lo == 0 {
			return p, false
		}
		if c.hi == f.Hi && c.lo == f.Lo {
			return p, true
		}
	}
}

// insert adds f, which is absent, making room when the shard is full.
func (s *stateShard) insert(f Fingerprint, v, exp, now int64) {
	if s.count >= s.capacity {
		s.evict(f.Lo, now)
	}
	if (s.count+1)*4 > len(s.cells)*3 {
		s.resize(max(len(s.cells)*2, stateMinCells))
	}
	p, _ := s.find(f)
	s.cells[p] = stateCell{f.Hi, f.Lo, v, exp}
	s.count++
}

// evict removes, among the first stateEvictScan entries from lo's home on,
// the one that expires first; an expired one at once.
func (s *stateShard) evict(lo uint64, now int64) {
	victim, seen := -1, 0
	for p := s.home(lo); seen < stateEvictScan && seen < s.count; p = s.next(p) {
		c := &s.cells[p]
		if c.lo == 0 {
			continue
		}
		seen++
		if c.expired(now) {
			victim = p
			break
		}
		if victim < 0 || c.sortExp() < s.cells[victim].sortExp() {
			victim = p
		}
	}
	if victim < 0 {
		return
	}
	if s.cells[victim].expired(now) {
		s.evictions[ReasonExpired]++
	} else {
		s.evictions[ReasonCapacity]++
	}
	s.remove(victim)
}

// remove empties position i and moves later entries of its probe run back,
// so that lookups never meet a hole (no tombstones).
func (s *stateShard) remove(i int) {
	hole := i
	for p := s.next(hole); ; p = s.next(p) {
		c := s.cells[p]
		if c.lo == 0 {
			break
		}
		// c moves into the hole unless the hole lies before its home.
		if s.dist(s.home(c.lo), p) >= s.dist(hole, p) {
			s.cells[hole] = c
			hole = p
		}
	}
	s.cells[hole] = stateCell{}
	s.count--
}

// removeWhere removes up to most entries that pick selects, counted under
// reason, gives memory back if the shard became sparse, and returns how many
// went.
func (s *stateShard) removeWhere(most int, reason Reason, sparse, fill float64, pick func(*stateCell) bool) int {
	n := 0
	for p := 0; p < len(s.cells) && n < most; {
		if c := &s.cells[p]; c.lo != 0 && pick(c) {
			s.remove(p) // a later entry may have moved into p: look again
			s.evictions[reason]++
			n++
			continue
		}
		p++
	}
	s.shrink(sparse, fill)
	return n
}

// shrink gives memory back: all of it when the shard is empty; otherwise,
// once the shard holds at most sparse of its cells, it is rebuilt fill full
// when that is smaller. A sweep or a removal passes 1/8 and 1/2, so that a
// shard is not rebuilt for a few keys and has room to grow again; a shed,
// whose point is memory, 2/3 and 2/3: any saving (growth starts at 3/4).
func (s *stateShard) shrink(sparse, fill float64) {
	switch {
	case s.count == 0:
		s.cells = nil
	case len(s.cells) > stateMinCells && float64(s.count) <= float64(len(s.cells))*sparse:
		if n := max(stateMinCells, int(math.Ceil(float64(s.count)/fill))); n < len(s.cells) {
			s.resize(n)
		}
	}
}

// resize moves every entry into an array of n cells.
func (s *stateShard) resize(n int) {
	old := s.cells
	s.cells = make([]stateCell, n)
	for _, c := range old {
		if c.lo == 0 {
			continue
		}
		p := s.home(c.lo)
		for s.cells[p].lo != 0 {
			p = s.next(p)
		}
		s.cells[p] = c
	}
}
