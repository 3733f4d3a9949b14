package sessions

import (
	"math/rand/v2"
	"testing"
)

// check verifies a shard's invariants: the index holds exactly the live
// entries, each reachable from its home position without crossing an empty
// slot, and the LRU list links them all both ways.
func (s *shard[K, V]) check(t *testing.T) {
	t.Helper()
	n, prev := 0, int32(-1)
	for i := s.head; i >= 0; i = s.at(i).next {
		e := s.at(i)
		if e.prev != prev {
			t.Fatalf("entry %d prev %d, want %d", i, e.prev, prev)
		}
		prev = i
		if got := s.find(e.hash, e.key); got != i {
			t.Fatalf("entry %d (hash %#x) found at %d", i, e.hash, got)
		}
		n++
		if n > s.count {
			t.Fatalf("list longer than count %d", s.count)
		}
	}
	if prev != s.tail || n != s.count {
		t.Fatalf("list of %d ends at %d; count %d tail %d", n, prev, s.count, s.tail)
	}
	occupied := 0
	for _, v := range s.slots {
		if v != 0 {
			occupied++
		}
	}
	if occupied != s.count {
		t.Fatalf("%d occupied slots for %d entries", occupied, s.count)
	}
}

// TestShardIndexAdversarialHashes drives one shard with hashes drawn from a
// few values that collide and wrap around the end of the index.
func TestShardIndexAdversarialHashes(t *testing.T) {
	t.Parallel()
	for seed := uint64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		s := newShard[int, int](200)
		hashes := []uint32{0, 1, 15, 14, 31, 63, 0xffffffff, 0xfffffffe, 7, 0x80000000}
		live := map[int]uint32{}
		for step := 0; step < 5000; step++ {
			k := rng.IntN(300)
			h, ok := live[k]
			switch {
			case !ok && s.count < s.capacity && rng.IntN(2) == 0:
				h = hashes[rng.IntN(len(hashes))]
				s.insert(h, k, k, 0, 0, 0)
				live[k] = h
			case ok && rng.IntN(3) == 0:
				s.remove(s.find(h, k), 0)
				delete(live, k)
			case ok:
				if s.find(h, k) < 0 {
					t.Fatalf("seed %d step %d: live key %d lost", seed, step, k)
				}
				s.moveToFront(s.find(h, k))
			case s.count > 0 && rng.IntN(50) == 0:
				for s.count > len(live)/4 && s.tail >= 0 {
					e := s.at(s.tail)
					delete(live, e.key)
					s.remove(s.tail, 0)
				}
				s.maybeCompact(0.25)
			}
			s.check(t)
		}
	}
}
