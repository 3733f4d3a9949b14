package sessions

import (
	"sync"
	"unsafe"
)

// A shard is one independently locked part of a Table: an open-addressing
// index (linear probing, backward-shift deletion) over a chunked slab of
// entries threaded on an intrusive LRU list. Every field is guarded by mu.
//
// Memory per entry beyond its key and value: the entry's bookkeeping
// (expires, used bit and ttl, hash, list links: 24 bytes) and its index slot (8 bytes at
// a load between 3/8 and 3/4, so 11–21 bytes).
type shard[K comparable, V any] struct {
	mu sync.Mutex

	slots    []uint64 // 0 = empty; else hash<<32 | (slab index + 1)
	chunks   [][]entry[K, V]
	free     int32 // head of the free list (linked by next), -1 = none
	used     int32 // slab slots handed out so far (live + free)
	head     int32 // most recently used, -1 = none
	tail     int32 // least recently used, -1 = none
	count    int
	capacity int
	closed   bool

	hits, misses uint64
	evictions    [numReasons]uint64
	bytes        int64 // sum of Size() of live entries

	_ [64]byte // keep neighbouring shards' locks off this cache line
}

type entry[K comparable, V any] struct {
	key     K
	val     V
	expires int64  // unix nanoseconds; 0 = never
	meta    uint32 // usedBit | the TTL it was set with in ms (for Touch)
	hash    uint32 // high half of the key's hash: its index position and tag
	prev    int32
	next    int32
}

const (
	chunkBits = 6
	chunkSize = 1 << chunkBits
	minSlots  = 16
	freeMark  = -2 // prev of an entry on the free list

	usedBit = 1 << 31     // meta: used since last considered for eviction
	ttlMask = usedBit - 1 // meta: TTL in milliseconds
)

func (e *entry[K, V]) markUsed() {
	if e.meta&usedBit == 0 { // a read-mostly cache line stays clean
		e.meta |= usedBit
	}
}

func (e *entry[K, V]) expired(now int64) bool {
	return e.expires != 0 && e.expires <= now
}

// victim picks the entry a full shard evicts: from the oldest end, an
// expired entry at once; a used one is spared (its bit cleared, moved to the
// young end); the first unused one is the victim.
func (s *shard[K, V]) victim(clock func() int64) int32 {
	now := clock()
	for {
		i := s.tail
		e := s.at(i)
		if e.meta&usedBit == 0 || e.expired(now) {
			return i
		}
		e.meta &^= usedBit
		s.moveToFront(i)
	}
}

func newShard[K comparable, V any](capacity int) *shard[K, V] {
	return &shard[K, V]{capacity: capacity, free: -1, head: -1, tail: -1}
}

func (s *shard[K, V]) at(i int32) *entry[K, V] {
	return &s.chunks[i>>chunkBits][i&(chunkSize-1)]
}

// find returns the slab index of k, or -1.
func (s *shard[K, V]) find(h uint32, k K) int32 {
	if len(s.slots) == 0 {
		return -1
	}
	mask := uint32(len(s.slots) - 1)
	for p := h & mask; ; p = (p + 1) & mask {
		v := s.slots[p]
		if v == 0 {
			return -1
		}
		if uint32(v>>32) == h {
			i := int32(uint32(v)) - 1
			if s.at(i).key == k {
				return i
			}
		}
	}
}

// slotOf returns the index position that holds slab index i.
func (s *shard[K, V]) slotOf(i int32) uint32 {
	mask := uint32(len(s.slots) - 1)
	want := uint64(i + 1)
	for p := s.at(i).hash & mask; ; p = (p + 1) & mask {
		if s.slots[p]&0xffffffff == want {
			return p
		}
	}
}

// insert adds a new entry as the most recently used. The caller has made room.
func (s *shard[K, V]) insert(h uint32, k K, v V, expires int64, meta uint32, size int) {
	if (s.count+1)*4 > len(s.slots)*3 {
		s.resize(max(minSlots, len(s.slots)*2))
	}
	s.push(entry[K, V]{key: k, val: v, expires: expires, meta: meta, hash: h})
	s.bytes += int64(size)
}

// push stores e in a free slab slot, makes it the most recently used and
// indexes it. The index must have room.
func (s *shard[K, V]) push(e entry[K, V]) {
	var i int32
	if s.free >= 0 {
		i = s.free
		s.free = s.at(i).next
	} else {
		if int(s.used)>>chunkBits >= len(s.chunks) {
			s.chunks = append(s.chunks, make([]entry[K, V], chunkSize))
		}
		i = s.used
		s.used++
	}
	e.prev, e.next = -1, s.head
	*s.at(i) = e
	if s.head >= 0 {
		s.at(s.head).prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
	s.place(e.hash, i)
	s.count++
}

func (s *shard[K, V]) place(h uint32, i int32) {
	mask := uint32(len(s.slots) - 1)
	p := h & mask
	for s.slots[p] != 0 {
		p = (p + 1) & mask
	}
	s.slots[p] = uint64(h)<<32 | uint64(i+1)
}

// remove unlinks slab index i, frees its slot and clears it (so that the
// garbage collector does not keep its key and value alive).
func (s *shard[K, V]) remove(i int32, size int) {
	s.deleteSlot(s.slotOf(i))
	e := s.at(i)
	if e.prev >= 0 {
		s.at(e.prev).next = e.next
	} else {
		s.head = e.next
	}
	if e.next >= 0 {
		s.at(e.next).prev = e.prev
	} else {
		s.tail = e.prev
	}
	*e = entry[K, V]{prev: freeMark, next: s.free}
	s.free = i
	s.count--
	s.bytes -= int64(size)
}

// deleteSlot empties position p and shifts later members of its probe run
// back, so that lookups never need tombstones.
func (s *shard[K, V]) deleteSlot(p uint32) {
	mask := uint32(len(s.slots) - 1)
	for {
		s.slots[p] = 0
		q := p
		for {
			q = (q + 1) & mask
			v := s.slots[q]
			if v == 0 {
				return
			}
			home := uint32(v>>32) & mask
			// The entry at q may move to p unless its home lies cyclically in (p, q].
			if (q > p && (home <= p || home > q)) || (q < p && home <= p && home > q) {
				s.slots[p] = v
				p = q
				break
			}
		}
	}
}

func (s *shard[K, V]) moveToFront(i int32) {
	if s.head == i {
		return
	}
	e := s.at(i)
	// unlink (i is not the head, so e.prev >= 0)
	s.at(e.prev).next = e.next
	if e.next >= 0 {
		s.at(e.next).prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = -1, s.head
	s.at(s.head).prev = i
	s.head = i
}

// resize rebuilds the index with n slots (a power of two).
func (s *shard[K, V]) resize(n int) {
	s.slots = make([]uint64, n)
	for i := s.head; i >= 0; i = s.at(i).next {
		s.place(s.at(i).hash, i)
	}
}

// maybeCompact gives memory back when at most the share live of the slab
// holds entries: they move to a fresh slab, in LRU order, and the index
// shrinks.
func (s *shard[K, V]) maybeCompact(live float64) {
	if s.count == 0 {
		// Emptied: back to holding nothing, as a new shard (QA: every
		// shard once used kept its first chunk, and a table with no
		// entry reported 9–141 KB for good).
		if s.used > 0 {
			s.reset()
		}
		return
	}
	if int(s.used) <= chunkSize || float64(s.count) > live*float64(s.used) {
		return
	}
	oldChunks, oldTail, count, bytes := s.chunks, s.tail, s.count, s.bytes
	old := func(i int32) *entry[K, V] { return &oldChunks[i>>chunkBits][i&(chunkSize-1)] }
	s.reset()
	n := minSlots
	for (count+1)*4 > n*3 {
		n *= 2
	}
	s.slots = make([]uint64, n)
	for i := oldTail; i >= 0; i = old(i).prev {
		s.push(*old(i))
	}
	s.bytes = bytes
}

// reset drops everything.
func (s *shard[K, V]) reset() {
	s.slots, s.chunks = nil, nil
	s.free, s.used, s.head, s.tail, s.count, s.bytes = -1, 0, -1, -1, 0, 0
}

// footprint is the memory the shard's structures hold, in bytes.
func (s *shard[K, V]) footprint() int64 {
	return int64(len(s.chunks))*chunkSize*int64(unsafe.Sizeof(entry[K, V]{})) + int64(len(s.slots))*8
}
