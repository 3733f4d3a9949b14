package sessions

// The cells and shards of a StateTable: open addressing with linear probing
// and backward-shift deletion, eviction next to a key's slot, resizing.

import (
	"math"
	"math/bits"
	"runtime"
	"sync/atomic"
)

// loLoad is the cell's lo without its held bit: 0 for an empty cell.
func (c *stateCell) loLoad() uint64 { return atomic.LoadUint64(&c.lo) &^ heldBit }

// hold takes the cell, waiting for a holder to end; the cell must hold an
// entry, and the caller the shard's mutex (so the entry stays the same).
func (c *stateCell) hold() {
	for spins := 0; ; spins++ {
		lo := atomic.LoadUint64(&c.lo)
		if lo&heldBit == 0 && atomic.CompareAndSwapUint64(&c.lo, lo, lo|heldBit) {
			return
		}
		if spins >= 64 {
			runtime.Gosched() // the holder was preempted
		}
	}
}

// release ends a hold; lo is the cell's lo (a fingerprint's).
func (c *stateCell) release(lo uint64) { atomic.StoreUint64(&c.lo, lo) }

// set fills the cell (held, or empty) with an entry and ends any hold.
func (c *stateCell) set(hi, lo uint64, v, exp int64) {
	atomic.StoreUint64(&c.hi, hi)
	c.val, c.exp = v, exp
	atomic.StoreUint64(&c.lo, lo)
}

func (c *stateCell) expired(now int64) bool { return c.exp != 0 && c.exp <= now }

// sortExp orders entries by expiry, "never" last.
func (c *stateCell) sortExp() int64 {
	if c.exp == 0 {
		return math.MaxInt64
	}
	return c.exp
}

// array is the shard's cells (nil when it has none).
func (s *stateShard) array() []stateCell {
	if cp := s.cells.Load(); cp != nil {
		return *cp
	}
	return nil
}

// home is where an entry of fingerprint low half lo belongs in an array of
// n cells: lo scaled to n (any size, not only powers of two; the shard was
// chosen by the high half).
func home(lo uint64, n int) int {
	h, _ := bits.Mul64(lo, uint64(n))
	return int(h)
}

// next is the position after p in an array of n cells, wrapping at the end.
func next(p, n int) int {
	if p++; p == n {
		return 0
	}
	return p
}

// dist is how far forward to is from from, cyclically, in n cells.
func dist(from, to, n int) int {
	if to >= from {
		return to - from
	}
	return to + n - from
}

// find returns f's position, or the empty position where it would go (-1
// in a shard that holds no cells). The caller holds the shard's mutex.
func (s *stateShard) find(f Fingerprint) (int, bool) {
	cells := s.array()
	n := len(cells)
	if n == 0 {
		return -1, false
	}
	for p := home(f.Lo, n); ; p = next(p, n) {
		c := &cells[p]
		lo := c.loLoad()
		if lo == 0 {
			return p, false
		}
		if lo == f.Lo && atomic.LoadUint64(&c.hi) == f.Hi {
			return p, true
		}
	}
}

// insert adds f, which is absent, making room when the shard is full.
func (s *stateShard) insert(f Fingerprint, v, exp, now int64) {
	if s.count >= s.capacity {
		s.evict(f.Lo, now)
	}
	if n := len(s.array()); (s.count+1)*4 > n*3 {
		s.resize(max(n*2, stateMinCells))
	}
	p, _ := s.find(f)
	s.array()[p].set(f.Hi, f.Lo, v, exp)
	s.count++
}

// evict removes, among the first stateEvictScan entries from lo's home on,
// the one that expires first; an expired one at once.
func (s *stateShard) evict(lo uint64, now int64) {
	cells := s.array()
	n := len(cells)
	victim, seen := -1, 0
	var victimExp int64
	expired := false
	for p := home(lo, n); seen < stateEvictScan && seen < s.count; p = next(p, n) {
		c := &cells[p]
		clo := c.loLoad()
		if clo == 0 {
			continue
		}
		seen++
		c.hold()
		e, gone := c.sortExp(), c.expired(now)
		c.release(clo)
		if gone {
			victim, expired = p, true
			break
		}
		if victim < 0 || e < victimExp {
			victim, victimExp = p, e
		}
	}
	if victim < 0 {
		return
	}
	if expired {
		s.evictions[ReasonExpired]++
	} else {
		s.evictions[ReasonCapacity]++
	}
	cells[victim].hold()
	s.remove(victim)
}

// remove empties position i, which the caller holds, and moves later
// entries of its probe run back, so that lookups never meet a hole (no
// tombstones). Each entry moved is held while it is copied; its copy is
// published before the old cell is reused, so a lock-free lookup finds the
// entry at one place or the other, and can only hold the new one.
func (s *stateShard) remove(i int) {
	cells := s.array()
	n := len(cells)
	hole := i
	for p := next(hole, n); ; p = next(p, n) {
		c := &cells[p]
		lo := c.loLoad()
		if lo == 0 {
			break
		}
		// c moves into the hole unless the hole lies before its home.
		if dist(home(lo, n), p, n) >= dist(hole, p, n) {
			c.hold()
			cells[hole].set(atomic.LoadUint64(&c.hi), lo, c.val, c.exp)
			hole = p
		}
	}
	cells[hole].set(0, 0, 0, 0)
	s.count--
}

// removeWhere removes up to most entries that pick selects (it sees each
// held), counted under reason, gives memory back if the shard became
// sparse, and returns how many went.
func (s *stateShard) removeWhere(most int, reason Reason, sparse, fill float64, pick func(*stateCell) bool) int {
	n := 0
	cells := s.array()
	for p := 0; p < len(cells) && n < most; {
		c := &cells[p]
		lo := c.loLoad()
		if lo == 0 {
			p++
			continue
		}
		c.hold()
		if pick(c) {
			s.remove(p) // a later entry may have moved into p: look again
			s.evictions[reason]++
			n++
			continue
		}
		c.release(lo)
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
	n := len(s.array())
	switch {
	case s.count == 0:
		s.cells.Store(nil) // every cell is empty: nothing to retire
	case n > stateMinCells && float64(s.count) <= float64(n)*sparse:
		if m := max(stateMinCells, int(math.Ceil(float64(s.count)/fill))); m < n {
			s.resize(m)
		}
	}
}

// resize moves every entry into an array of n cells. The old array's
// entries stay held: a lock-free lookup that still reads it retries.
func (s *stateShard) resize(n int) {
	old := s.array()
	cells := make([]stateCell, n)
	for i := range old {
		c := &old[i]
		lo := c.loLoad()
		if lo == 0 {
			continue
		}
		c.hold()
		p := home(lo, n)
		for cells[p].lo != 0 {
			p = next(p, n)
		}
		cells[p] = stateCell{c.hi, lo, c.val, c.exp}
	}
	s.cells.Store(&cells)
}

// retire holds every entry of an array that is being dropped, for good.
func retire(cells []stateCell) {
	for i := range cells {
		if cells[i].loLoad() != 0 {
			cells[i].hold()
		}
	}
}
