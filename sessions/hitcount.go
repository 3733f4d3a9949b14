package sessions

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// hitCount counts lookups that found an entry without a counter shared by
// the cores: each P adds to a slot of its own, which a sync.Pool (one item
// per P) hands it, and load sums every slot. A slot whose pool item the
// garbage collector drops goes back to a free list, with its count: none
// is ever lost, and there are about as many slots as Ps.
type hitCount struct {
	pool  sync.Pool // *hitRef
	slots *hitSlots // apart, so that a slot's cleanup does not keep the table alive
}

type hitSlots struct {
	mu   sync.Mutex
	all  []*hitSlot
	free []*hitSlot
}

type hitSlot struct {
	n atomic.Uint64
	_ [56]byte // a line of its own
}

type hitRef struct{ slot *hitSlot }

func (h *hitCount) add(n uint64) {
	r, _ := h.pool.Get().(*hitRef)
	if r == nil {
		r = h.ref()
	}
	r.slot.n.Add(n)
	h.pool.Put(r)
}

// ref makes a pool item around a free slot, or a new one.
func (h *hitCount) ref() *hitRef {
	hs := h.slots
	hs.mu.Lock()
	var s *hitSlot
	if k := len(hs.free); k > 0 {
		s, hs.free = hs.free[k-1], hs.free[:k-1]
	} else {
		s = new(hitSlot)
		hs.all = append(hs.all, s)
	}
	hs.mu.Unlock()
	r := &hitRef{slot: s}
	runtime.AddCleanup(r, func(s *hitSlot) {
		hs.mu.Lock()
		hs.free = append(hs.free, s)
		hs.mu.Unlock()
	}, s)
	return r
}

func (h *hitCount) load() uint64 {
	h.slots.mu.Lock()
	defer h.slots.mu.Unlock()
	var n uint64
	for _, s := range h.slots.all {
		n += s.n.Load()
	}
	return n
}
