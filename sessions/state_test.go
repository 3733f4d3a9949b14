package sessions

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

func mustState(t testing.TB, o StateOptions) *StateTable {
	t.Helper()
	tb, err := NewStateTable(o)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// statePeekFP returns the cell holding f, without the side effects of Get
// (no expiry check, no counting).
func statePeekFP(tb *StateTable, f Fingerprint) (stateCell, bool) {
	s := tb.shard(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.find(f)
	if !ok {
		return stateCell{}, false
	}
	return s.array()[i], true
}

func statePeek(tb *StateTable, key string) (stateCell, bool) {
	return statePeekFP(tb, tb.Fingerprint(key))
}

// statePos is the position of key's cell in its shard, -1 when absent.
func statePos(tb *StateTable, key string) int {
	f := tb.Fingerprint(key)
	s := tb.shard(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.find(f); ok {
		return i
	}
	return -1
}

// stateShardIndex is the index of the shard f belongs to.
func stateShardIndex(tb *StateTable, f Fingerprint) int {
	s := tb.shard(f)
	for i := range tb.shards {
		if &tb.shards[i] == s {
			return i
		}
	}
	panic("no shard")
}

// checkStateTable verifies every shard's invariants: count is the number of
// occupied cells and within the shard's capacity, the array is empty or a
// power of two of at least stateMinCells cells and at most 3/4 full, no
// fingerprint appears twice, every entry lives in its own shard and a lookup
// of it finds it where it is (no empty cell cuts its probe run: what
// backward-shift deletion must preserve).
func checkStateTable(t testing.TB, tb *StateTable) {
	t.Helper()
	var problems []string
	for si := range tb.shards {
		s := &tb.shards[si]
		s.mu.Lock()
		n := len(s.array())
		if n != 0 && n < stateMinCells {
			problems = append(problems, fmt.Sprintf("shard %d: %d cells", si, n))
		}
		occupied := 0
		seen := map[Fingerprint]bool{}
		for p, c := range s.array() {
			if c.lo == 0 {
				continue
			}
			occupied++
			f := Fingerprint{c.hi, c.lo}
			if seen[f] {
				problems = append(problems, fmt.Sprintf("shard %d: %v twice", si, f))
			}
			seen[f] = true
			if tb.shard(f) != s {
				problems = append(problems, fmt.Sprintf("shard %d holds %v of another shard", si, f))
			}
			if i, ok := s.find(f); !ok || i != p {
				problems = append(problems, fmt.Sprintf("shard %d: entry at %d found at %d,%v", si, p, i, ok))
			}
		}
		if occupied != s.count {
			problems = append(problems, fmt.Sprintf("shard %d: %d occupied cells, count %d", si, occupied, s.count))
		}
		if s.count > s.capacity {
			problems = append(problems, fmt.Sprintf("shard %d: count %d over capacity %d", si, s.count, s.capacity))
		}
		if s.count*4 > n*3 {
			problems = append(problems, fmt.Sprintf("shard %d: %d entries in %d cells", si, s.count, n))
		}
		s.mu.Unlock()
	}
	if len(problems) > 0 {
		t.Fatalf("table invariants broken:\n%s", strings.Join(problems, "\n"))
	}
}

type stateCall struct {
	now, old int64
	ok       bool
}

// stateUpdate runs Update with fn returning (v, exp, keep) and reports what
// fn was given.
func stateUpdate(tb *StateTable, key string, v, exp int64, keep bool) (stateCall, bool) {
	var c stateCall
	r := tb.Update(key, func(now, old int64, ok bool) (int64, int64, bool) {
		c = stateCall{now, old, ok}
		return v, exp, keep
	})
	return c, r
}

func TestStateOptions(t *testing.T) {
	t.Parallel()
	if _, err := NewStateTable(StateOptions{}); err == nil {
		t.Fatal("MaxEntries 0 accepted")
	}
	if _, err := NewStateTable(StateOptions{MaxEntries: 1, TTL: -time.Second}); err == nil {
		t.Fatal("negative TTL accepted")
	}
	for _, c := range []struct{ max, shards, want int }{
		{10, 0, 1}, {1 << 20, 0, 256}, {1 << 30, 0, 256}, {100, 3, 4}, {100, 16, 16}, {10, 64, 8}, {1, 64, 1},
	} {
		tb := mustState(t, StateOptions{MaxEntries: c.max, Shards: c.shards})
		if len(tb.shards) != c.want {
			t.Errorf("MaxEntries %d Shards %d: %d shards, want %d", c.max, c.shards, len(tb.shards), c.want)
		}
		sum := 0
		for i := range tb.shards {
			sum += tb.shards[i].capacity
		}
		if sum != c.max || tb.Cap() != c.max {
			t.Errorf("MaxEntries %d Shards %d: shard capacities sum to %d, Cap %d", c.max, c.shards, sum, tb.Cap())
		}
	}
	one := mustState(t, StateOptions{MaxEntries: 1, Shards: 64})
	one.Set("a", 1)
	one.Set("b", 2)
	if one.Len() != 1 {
		t.Fatalf("MaxEntries 1 holds %d", one.Len())
	}
	// The default clock is Unix time.
	wall := mustState(t, StateOptions{MaxEntries: 1})
	if d := time.Duration(wall.Now() - time.Now().UnixNano()); d < -time.Minute || d > time.Minute {
		t.Fatalf("default clock off by %v", d)
	}
	st := wall.Stats()
	if st.Name != "" || st.Capacity != 1 || st.Size != 0 || st.Bytes != 0 {
		t.Fatalf("new table stats %+v", st)
	}
}

func TestStateUpdateSemantics(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tb := mustState(t, StateOptions{MaxEntries: 16, Shards: 1, Now: clk.Now})
	t0 := clk.ns.Load()
	sec := int64(time.Second)

	// A new key: absent, old value 0.
	c, ok := stateUpdate(tb, "a", 5, t0+10*sec, true)
	if !ok || c != (stateCall{t0, 0, false}) {
		t.Fatalf("new key: Update %v, fn got %+v", ok, c)
	}
	if v, ok := tb.Get("a"); !ok || v != 5 || tb.Len() != 1 {
		t.Fatalf("after insert: %d %v len %d", v, ok, tb.Len())
	}
	// A live key: its value; KeepExpiry keeps t0+10s.
	clk.Advance(5 * time.Second)
	if c, _ = stateUpdate(tb, "a", 6, KeepExpiry, true); c != (stateCall{t0 + 5*sec, 5, true}) {
		t.Fatalf("live key: fn got %+v", c)
	}
	if cell, _ := statePeek(tb, "a"); cell.val != 6 || cell.exp != t0+10*sec {
		t.Fatalf("KeepExpiry on a live entry: val %d exp %d, want 6 %d", cell.val, cell.exp, t0+10*sec)
	}
	clk.Advance(5*time.Second - time.Millisecond)
	if v, ok := tb.Get("a"); !ok || v != 6 {
		t.Fatalf("a read %d %v 1 ms before its expiry", v, ok)
	}
	// At its expiry the entry reads as absent and is replaced in place.
	clk.Advance(time.Millisecond)
	pos := statePos(tb, "a")
	before := tb.Stats().Evictions
	if c, _ = stateUpdate(tb, "a", 7, 0, true); c != (stateCall{t0 + 10*sec, 0, false}) {
		t.Fatalf("expired key: fn got %+v", c)
	}
	after := tb.Stats().Evictions
	if p := statePos(tb, "a"); p != pos || tb.Len() != 1 || after[ReasonExpired] != before[ReasonExpired]+1 {
		t.Fatalf("expired entry not replaced in place: position %d→%d, len %d, expired %d→%d",
			pos, p, tb.Len(), before[ReasonExpired], after[ReasonExpired])
	}
	// Expiry 0 is never.
	clk.Advance(1000 * time.Hour)
	if v, ok := tb.Get("a"); !ok || v != 7 {
		t.Fatalf("expiry 0 entry: %d %v", v, ok)
	}
	// KeepExpiry on a new key: never.
	if c, _ = stateUpdate(tb, "b", 1, KeepExpiry, true); c.ok {
		t.Fatalf("b: fn got %+v", c)
	}
	if cell, _ := statePeek(tb, "b"); cell.exp != 0 || cell.val != 1 {
		t.Fatalf("KeepExpiry on a new entry: %+v", cell)
	}
	clk.Advance(1000 * time.Hour)
	if v, ok := tb.Get("b"); !ok || v != 1 {
		t.Fatalf("KeepExpiry new entry gone: %d %v", v, ok)
	}
	// keep false removes a live entry, reason manual.
	if c, ok = stateUpdate(tb, "a", 99, 0, false); !ok || c != (stateCall{clk.ns.Load(), 7, true}) {
		t.Fatalf("remove: %v %+v", ok, c)
	}
	if _, ok := tb.Get("a"); ok || tb.Len() != 1 || tb.Stats().Evictions[ReasonManual] != 1 {
		t.Fatalf("a not removed: len %d stats %+v", tb.Len(), tb.Stats())
	}
	// keep false on an absent key changes nothing.
	if c, ok = stateUpdate(tb, "nope", 1, 0, false); !ok || c.ok || c.old != 0 || tb.Len() != 1 {
		t.Fatalf("remove absent: %v %+v len %d", ok, c, tb.Len())
	}
	// keep false on an expired entry removes it, reason expired.
	stateUpdate(tb, "c", 3, clk.ns.Load()+sec, true)
	clk.Advance(2 * time.Second)
	if c, _ = stateUpdate(tb, "c", 0, 0, false); c.ok || c.old != 0 {
		t.Fatalf("expired c: fn got %+v", c)
	}
	if statePos(tb, "c") != -1 || tb.Len() != 1 {
		t.Fatalf("expired c not removed: len %d", tb.Len())
	}
	// KeepExpiry on an expired entry: a new entry that never expires.
	stateUpdate(tb, "d", 4, clk.ns.Load()+sec, true)
	clk.Advance(2 * time.Second)
	if c, _ = stateUpdate(tb, "d", 9, KeepExpiry, true); c.ok || c.old != 0 {
		t.Fatalf("expired d: fn got %+v", c)
	}
	if cell, _ := statePeek(tb, "d"); cell.exp != 0 || cell.val != 9 {
		t.Fatalf("KeepExpiry on an expired entry: %+v", cell)
	}
	want := [numReasons]uint64{ReasonExpired: 3, ReasonManual: 1}
	if got := tb.Stats().Evictions; got != want {
		t.Fatalf("evictions %v, want %v", got, want)
	}
}

func TestStateGetSetDelete(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tb := mustState(t, StateOptions{MaxEntries: 100, TTL: time.Minute, Now: clk.Now})
	if tb.Cap() != 100 || tb.Len() != 0 {
		t.Fatalf("Cap %d Len %d", tb.Cap(), tb.Len())
	}
	// counts checks the hits and misses Gets added since the last call.
	var last TableStats
	counts := func(hits, misses uint64) {
		t.Helper()
		st := tb.Stats()
		if st.Hits-last.Hits != hits || st.Misses-last.Misses != misses {
			t.Fatalf("hits +%d misses +%d, want +%d +%d", st.Hits-last.Hits, st.Misses-last.Misses, hits, misses)
		}
		last = st
	}
	counts(0, 0)
	if v, ok := tb.Get("a"); ok || v != 0 {
		t.Fatalf("Get of a missing key: %d %v", v, ok)
	}
	counts(0, 1)
	if !tb.Set("a", 1) || !tb.Set("a", 2) || tb.Len() != 1 {
		t.Fatalf("Set: len %d", tb.Len())
	}
	last = tb.Stats()
	if v, ok := tb.Get("a"); !ok || v != 2 {
		t.Fatalf("Get a: %d %v", v, ok)
	}
	tb.Get("a")
	counts(2, 0)
	// Peek reads the same without counting.
	if v, ok := tb.Peek("a"); !ok || v != 2 {
		t.Fatalf("Peek a: %d %v", v, ok)
	}
	if _, ok := tb.Peek("nothing"); ok {
		t.Fatal("Peek of a missing key")
	}
	counts(0, 0)
	if cell, _ := statePeek(tb, "a"); cell.exp != clk.ns.Load()+int64(time.Minute) {
		t.Fatalf("Set: expiry %d, want now+TTL", cell.exp-clk.ns.Load())
	}
	clk.Advance(time.Minute - 1)
	if _, ok := tb.Get("a"); !ok {
		t.Fatal("a expired before its TTL")
	}
	counts(1, 0)
	clk.Advance(1)
	if _, ok := tb.Get("a"); ok {
		t.Fatal("a outlived its TTL")
	}
	counts(0, 1)
	if tb.Len() != 0 || tb.Stats().Evictions[ReasonExpired] != 1 {
		t.Fatalf("expired a not removed by Get: len %d %+v", tb.Len(), tb.Stats().Evictions)
	}

	tb.SetTTL("hour", 3, time.Hour)
	tb.SetTTL("zero", 4, 0)
	tb.SetTTL("negative", 5, -time.Second)
	clk.Advance(time.Hour - 1)
	last = tb.Stats()
	if v, ok := tb.Get("hour"); !ok || v != 3 {
		t.Fatalf("hour: %d %v", v, ok)
	}
	clk.Advance(1)
	if _, ok := tb.Get("hour"); ok {
		t.Fatal("hour outlived its TTL")
	}
	clk.Advance(10000 * time.Hour)
	if v, ok := tb.Get("zero"); !ok || v != 4 {
		t.Fatalf("TTL 0: %d %v", v, ok)
	}
	if v, ok := tb.Get("negative"); !ok || v != 5 {
		t.Fatalf("negative TTL: %d %v", v, ok)
	}
	counts(3, 1)
	if st := tb.Stats(); st.HitRate() != float64(st.Hits)/float64(st.Hits+st.Misses) || st.Size != 2 || st.Capacity != 100 || st.TTL != time.Minute {
		t.Fatalf("stats %+v", st)
	}

	if !tb.Delete("zero") || tb.Delete("zero") || tb.Delete("never-set") {
		t.Fatal("Delete results")
	}
	if _, ok := tb.Get("zero"); ok || tb.Len() != 1 {
		t.Fatalf("deleted key still there, len %d", tb.Len())
	}
	tb.SetTTL("short", 6, time.Second)
	clk.Advance(time.Second)
	if tb.Delete("short") { // expired: not there
		t.Fatal("Delete of an expired entry reported true")
	}
	want := [numReasons]uint64{ReasonExpired: 3, ReasonManual: 1} // a, hour, short
	if got := tb.Stats().Evictions; got != want || tb.Len() != 1 {
		t.Fatalf("evictions %v, want %v; len %d", got, want, tb.Len())
	}
}

func TestStateCapacityEvictsEarliestExpiry(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tb := mustState(t, StateOptions{MaxEntries: 4, Shards: 1, Now: clk.Now})
	at := func(d time.Duration) int64 { return clk.ns.Load() + int64(d) }
	present := func() []string {
		var out []string
		for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
			if _, ok := statePeek(tb, k); ok {
				out = append(out, k)
			}
		}
		return out
	}
	expect := func(keys string, ev [numReasons]uint64) {
		t.Helper()
		if got := strings.Join(present(), ""); got != keys || tb.Len() != len(keys) {
			t.Fatalf("present %q (len %d), want %q", got, tb.Len(), keys)
		}
		if got := tb.Stats().Evictions; got != ev {
			t.Fatalf("evictions %v, want %v", got, ev)
		}
	}
	stateUpdate(tb, "a", 1, at(10*time.Second), true)
	stateUpdate(tb, "b", 2, at(5*time.Second), true)
	stateUpdate(tb, "c", 3, at(20*time.Second), true)
	stateUpdate(tb, "d", 4, 0, true)
	expect("abcd", [numReasons]uint64{})
	stateUpdate(tb, "e", 5, at(30*time.Second), true) // b expires first
	expect("acde", [numReasons]uint64{ReasonCapacity: 1})
	clk.Advance(15 * time.Second)                      // a has expired
	stateUpdate(tb, "f", 6, at(100*time.Second), true) // the expired a goes
	expect("cdef", [numReasons]uint64{ReasonCapacity: 1, ReasonExpired: 1})
	stateUpdate(tb, "g", 7, 0, true) // c (5 s left) goes, not the never-expiring d
	expect("defg", [numReasons]uint64{ReasonCapacity: 2, ReasonExpired: 1})
	stateUpdate(tb, "h", 8, at(time.Second), true) // e goes; h expires first only once in
	expect("dfgh", [numReasons]uint64{ReasonCapacity: 3, ReasonExpired: 1})
	stateUpdate(tb, "h", 9, 0, true) // an existing key evicts nothing
	expect("dfgh", [numReasons]uint64{ReasonCapacity: 3, ReasonExpired: 1})
	stateUpdate(tb, "a", 10, 0, true) // f is the only one that expires
	expect("adgh", [numReasons]uint64{ReasonCapacity: 4, ReasonExpired: 1})

	// Randomly: with 4 entries an eviction scans them all, so its victim is
	// an expired entry if there is one, else one that expires first.
	rng := rand.New(rand.NewPCG(7, 7))
	r := mustState(t, StateOptions{MaxEntries: 4, Shards: 1, Now: clk.Now})
	model := map[string]int64{} // key → expiry
	sortExp := func(e int64) int64 {
		if e == 0 {
			return math.MaxInt64
		}
		return e
	}
	for i := 0; i < 500; i++ {
		if rng.IntN(3) == 0 {
			clk.Advance(time.Duration(rng.IntN(30)) * time.Millisecond)
		}
		now := clk.ns.Load()
		exp := int64(0)
		if rng.IntN(5) > 0 {
			exp = now + int64(1+rng.IntN(100))*int64(time.Millisecond)
		}
		k := fmt.Sprint("r", i)
		before := r.Stats().Evictions
		stateUpdate(r, k, int64(i), exp, true)
		after := r.Stats().Evictions
		var gone []string
		for mk := range model {
			if _, ok := statePeek(r, mk); !ok {
				gone = append(gone, mk)
			}
		}
		if len(model) < 4 {
			if len(gone) != 0 || after != before {
				t.Fatalf("step %d: %v evicted below capacity", i, gone)
			}
		} else {
			if len(gone) != 1 {
				t.Fatalf("step %d: %v evicted, want one", i, gone)
			}
			v := gone[0]
			var expired []string
			minExp := int64(math.MaxInt64)
			for mk, e := range model {
				if e != 0 && e <= now {
					expired = append(expired, mk)
				}
				minExp = min(minExp, sortExp(e))
			}
			switch {
			case len(expired) > 0:
				if !slices.Contains(expired, v) || after[ReasonExpired] != before[ReasonExpired]+1 || after[ReasonCapacity] != before[ReasonCapacity] {
					t.Fatalf("step %d: evicted %s, but %v had expired (evictions %v→%v)", i, v, expired, before, after)
				}
			default:
				if sortExp(model[v]) != minExp || after[ReasonCapacity] != before[ReasonCapacity]+1 || after[ReasonExpired] != before[ReasonExpired] {
					t.Fatalf("step %d: evicted %s expiring %d, earliest %d (evictions %v→%v)", i, v, model[v], minExp, before, after)
				}
			}
			delete(model, v)
		}
		model[k] = exp
		if r.Len() != len(model) || r.Len() > 4 {
			t.Fatalf("step %d: len %d, model %d", i, r.Len(), len(model))
		}
	}

	// Many shards: the bound holds for the table.
	m := mustState(t, StateOptions{MaxEntries: 100, Shards: 8, Now: clk.Now})
	for i := 0; i < 2000; i++ {
		m.Set(fmt.Sprint(i), int64(i))
		if m.Len() > 100 {
			t.Fatalf("%d entries, MaxEntries 100", m.Len())
		}
	}
	if st := m.Stats(); st.Size != 100 || st.Evictions[ReasonCapacity] != 1900 {
		t.Fatalf("stats %+v", st)
	}
	checkStateTable(t, m)
}

type stateModelEntry struct{ v, exp int64 }

// TestStateModel checks a one-shard table against a map, phase by phase
// filling it (growth) and draining it (deletes, expiries, sweeps: shrink).
func TestStateModel(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			clk := newClock()
			const ttl = 100 * time.Millisecond
			tb := mustState(t, StateOptions{MaxEntries: 1 << 12, Shards: 1, TTL: ttl, Now: clk.Now})
			keys := make([]string, 300)
			for i := range keys {
				keys[i] = fmt.Sprint("key-", i)
			}
			m := map[string]stateModelEntry{} // expired entries not yet removed included
			now := func() int64 { return clk.ns.Load() }
			expired := func(e stateModelEntry) bool { return e.exp != 0 && e.exp <= now() }
			live := func(k string) (stateModelEntry, bool) {
				e, ok := m[k]
				if !ok || expired(e) {
					return stateModelEntry{}, false
				}
				return e, true
			}
			randExp := func() int64 {
				if rng.IntN(5) < 2 {
					return 0
				}
				return now() + int64(1+rng.IntN(1000))*int64(time.Millisecond)
			}
			get := func(step int, k string) {
				t.Helper()
				want, wantOK := live(k)
				v, ok := tb.Get(k)
				if ok != wantOK || v != want.v {
					t.Fatalf("step %d: Get(%s) = %d,%v; model %d,%v", step, k, v, ok, want.v, wantOK)
				}
				if _, present := m[k]; present && !wantOK {
					delete(m, k) // Get removes an expired entry
				}
			}
			cells := func() int {
				s := &tb.shards[0]
				s.mu.Lock()
				defer s.mu.Unlock()
				return len(s.array())
			}
			maxCells, shrinks := 0, 0
			for step := 0; step < 6000; step++ {
				// Weights of update, set, delete, get, advance; the rest sweeps.
				w := [5]int{45, 55, 60, 90, 97}
				keepPct, maxAdvance := 97, 5
				if step/1500%2 == 1 { // drain
					w = [5]int{10, 12, 45, 75, 95}
					keepPct, maxAdvance = 40, 60
				}
				k := keys[rng.IntN(len(keys))]
				cellsBefore := cells()
				switch op := rng.IntN(100); {
				case op < w[0]:
					want, wantOK := live(k)
					keep := rng.IntN(100) < keepPct
					add := rng.Int64N(1000)
					exp := KeepExpiry
					if rng.IntN(3) > 0 {
						exp = randExp()
					}
					var got stateCall
					if !tb.Update(k, func(n, old int64, ok bool) (int64, int64, bool) {
						got = stateCall{n, old, ok}
						return old + add, exp, keep
					}) {
						t.Fatalf("step %d: Update reported false", step)
					}
					if got != (stateCall{now(), want.v, wantOK}) {
						t.Fatalf("step %d: Update(%s) fn got %+v; model %d,%v", step, k, got, want.v, wantOK)
					}
					_, present := m[k]
					switch {
					case keep:
						if exp == KeepExpiry {
							exp = want.exp // 0 when not live
						}
						m[k] = stateModelEntry{want.v + add, exp}
					case present:
						delete(m, k)
					}
				case op < w[1]:
					v := rng.Int64N(1000)
					if rng.IntN(2) == 0 {
						tb.Set(k, v)
						m[k] = stateModelEntry{v, now() + int64(ttl)}
					} else {
						d := time.Duration(rng.IntN(1000)-100) * time.Millisecond
						tb.SetTTL(k, v, d)
						e := stateModelEntry{v, 0}
						if d > 0 {
							e.exp = now() + int64(d)
						}
						m[k] = e
					}
				case op < w[2]:
					_, wantOK := live(k)
					if got := tb.Delete(k); got != wantOK {
						t.Fatalf("step %d: Delete(%s) = %v; model %v", step, k, got, wantOK)
					}
					delete(m, k)
				case op < w[3]:
					get(step, k)
				case op < w[4]:
					clk.Advance(time.Duration(rng.IntN(maxAdvance*1000)) * time.Microsecond)
				default:
					want := 0
					for mk, e := range m {
						if expired(e) {
							want++
							delete(m, mk)
						}
					}
					if n := tb.Sweep(); n != want {
						t.Fatalf("step %d: Sweep removed %d; model %d", step, n, want)
					}
					if tb.Len() != len(m) {
						t.Fatalf("step %d: after Sweep len %d; model holds %d live", step, tb.Len(), len(m))
					}
				}
				if c := cells(); c < cellsBefore { // a Sweep, a Delete or a removing Update
					shrinks++
				}
				get(step, k)
				if tb.Len() != len(m) {
					t.Fatalf("step %d: len %d; model %d", step, tb.Len(), len(m))
				}
				checkStateTable(t, tb)
				maxCells = max(maxCells, cells())
				if step%500 == 499 {
					for _, k := range keys {
						get(step, k)
					}
				}
			}
			t.Logf("at most %d cells, %d shrinks", maxCells, shrinks)
			if maxCells < 512 || shrinks == 0 {
				t.Fatalf("the run did not exercise resizing: at most %d cells, %d shrinks", maxCells, shrinks)
			}
			if st := tb.Stats(); st.Evictions[ReasonCapacity] != 0 {
				t.Fatalf("evicted for capacity: %+v", st)
			}
		})
	}
}

// Entries whose probe runs wrap around the end of the array: removing some
// (Sweep, then Shed) must leave the others reachable.
func TestStateBackwardShiftWraparound(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tb := mustState(t, StateOptions{MaxEntries: 64, Shards: 1, Now: clk.Now})
	now := clk.ns.Load()
	sec := int64(time.Second)
	// Six entries fit the smallest array (8 cells); a home is the top three
	// bits of the fingerprint's low half.
	h6, h7 := uint64(6)<<61, uint64(7)<<61
	entries := []struct {
		f   Fingerprint
		exp int64
	}{
		{Fingerprint{1, h6 | 1}, now + 1*sec},   // cell 6
		{Fingerprint{2, h6 | 33}, now + 50*sec}, // cell 7, displaced
		{Fingerprint{3, h7 | 9}, now + 2*sec},   // home 7, wraps to cell 0
		{Fingerprint{4, h6 | 41}, now + 40*sec}, // home 6, wraps to cell 1
		{Fingerprint{5, 17}, now + 30*sec},      // home 0, cell 2
		{Fingerprint{6, 25}, 0},                 // home 0, cell 3
	}
	for i, e := range entries {
		if !tb.Put(e.f, int64(i), e.exp) {
			t.Fatalf("Put %d", i)
		}
	}
	s := &tb.shards[0]
	if n := len(s.array()); n != 8 || s.array()[6].hi != 1 || s.array()[7].hi != 2 || s.array()[0].hi != 3 || s.array()[1].hi != 4 || s.array()[2].hi != 5 {
		t.Fatalf("layout not as planned (%d cells)", n)
	}
	checkStateTable(t, tb)
	clk.Advance(2 * time.Second) // the first and third expire
	if n := tb.Sweep(); n != 2 {
		t.Fatalf("Sweep removed %d, want 2", n)
	}
	checkStateTable(t, tb)
	for i, e := range entries {
		c, ok := statePeekFP(tb, e.f)
		if want := i != 0 && i != 2; ok != want || ok && c.val != int64(i) {
			t.Fatalf("after Sweep entry %d: %+v %v", i, c, ok)
		}
	}
	// Shed half of 4: the two expiring first (entries 4 and 3).
	if n := tb.Shed(0.5, ReasonEmergency); n != 2 {
		t.Fatalf("Shed removed %d", n)
	}
	checkStateTable(t, tb)
	for i, e := range entries {
		if _, ok := statePeekFP(tb, e.f); ok != (i == 1 || i == 5) {
			t.Fatalf("after Shed entry %d present %v", i, ok)
		}
	}
}

func TestStateSweep(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tb := mustState(t, StateOptions{MaxEntries: 4096, Shards: 4, Now: clk.Now})
	if b := tb.Stats().Bytes; b != 0 {
		t.Fatalf("new table holds %d bytes", b)
	}
	for i := 0; i < 1000; i++ {
		ttl := time.Duration(0)
		if i%2 == 0 {
			ttl = time.Second
		}
		tb.SetTTL(fmt.Sprint(i), int64(i), ttl)
	}
	full := tb.Stats().Bytes
	if full < 1000*int64(unsafe.Sizeof(stateCell{})) {
		t.Fatalf("1000 entries in %d bytes", full)
	}
	if n := tb.Sweep(); n != 0 {
		t.Fatalf("Sweep removed %d live entries", n)
	}
	clk.Advance(time.Second)
	if n := tb.Sweep(); n != 500 {
		t.Fatalf("Sweep removed %d, want 500", n)
	}
	for i := 0; i < 1000; i++ {
		c, ok := statePeek(tb, fmt.Sprint(i))
		if ok != (i%2 == 1) || ok && c.val != int64(i) {
			t.Fatalf("after Sweep %d: %+v %v", i, c, ok)
		}
	}
	checkStateTable(t, tb)
	st := tb.Stats()
	if st.Size != 500 || st.Evictions[ReasonExpired] != 500 || st.Bytes > full {
		t.Fatalf("after Sweep %+v (full %d bytes)", st, full)
	}
	for i := 1; i < 1000; i += 2 {
		tb.SetTTL(fmt.Sprint(i), int64(i), time.Second)
	}
	clk.Advance(time.Second)
	if n := tb.Sweep(); n != 500 {
		t.Fatalf("second Sweep removed %d", n)
	}
	if st := tb.Stats(); st.Size != 0 || st.Bytes != 0 || st.Evictions[ReasonExpired] != 1000 {
		t.Fatalf("emptied table: %+v", st)
	}
	if n := tb.Sweep(); n != 0 {
		t.Fatalf("Sweep of an empty table removed %d", n)
	}
	// The table works after giving its memory back.
	tb.Set("again", 1)
	if v, ok := tb.Get("again"); !ok || v != 1 {
		t.Fatalf("after emptying: %d %v", v, ok)
	}
}

// A small table over many shards loses the fraction asked of the whole
// table, not a whole entry of every shard that has one.
func TestShedFractionOfASmallTable(t *testing.T) {
	t.Parallel()
	st := mustState(t, StateOptions{MaxEntries: 1 << 20, Shards: 256})
	for i := range 20 {
		st.Set(fmt.Sprint("login|", i), 1)
	}
	if n := st.Shed(0.2, ReasonEmergency); n != 4 || st.Len() != 16 {
		t.Errorf("state table of 20 over 256 shards: Shed(0.2) removed %d, left %d; want 4 and 16", n, st.Len())
	}
	tb, err := NewTable(Options[string, int]{MaxEntries: 1 << 16, Shards: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for i := range 30 {
		tb.Set(fmt.Sprint("user", i), i)
	}
	if n := tb.Shed(0.2, ReasonEmergency); n != 6 || tb.Len() != 24 {
		t.Errorf("table of 30 over 16 shards: Shed(0.2) removed %d, left %d; want 6 and 24", n, tb.Len())
	}
}

func TestStateShed(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tb := mustState(t, StateOptions{MaxEntries: 4096, Shards: 4, Now: clk.Now})
	rng := rand.New(rand.NewPCG(3, 4))
	perm := rng.Perm(400)
	now := clk.ns.Load()
	exps := map[string]int64{}
	byShard := make([][]string, len(tb.shards))
	for i, p := range perm {
		k := fmt.Sprint("k", i)
		exp := now + int64(p+1)*int64(time.Second)
		if i%10 == 0 {
			exp = 0 // never: shed last
		}
		stateUpdate(tb, k, int64(i), exp, true)
		exps[k] = exp
		si := stateShardIndex(tb, tb.Fingerprint(k))
		byShard[si] = append(byShard[si], k)
	}
	if n := tb.Shed(0, ReasonEmergency); n != 0 || tb.Len() != 400 {
		t.Fatalf("Shed(0) removed %d", n)
	}
	if n := tb.Shed(-1, ReasonEmergency); n != 0 || tb.Len() != 400 {
		t.Fatalf("Shed(-1) removed %d", n)
	}
	const want = 100 // a quarter of the table
	if n := tb.Shed(0.25, ReasonEmergency); n != want {
		t.Fatalf("Shed(0.25) removed %d, want %d", n, want)
	}
	// Each shard gave about a quarter of its entries: those expiring first.
	for si, ks := range byShard {
		if len(ks) == 0 {
			t.Fatalf("shard %d got no keys", si)
		}
		slices.SortFunc(ks, func(a, b string) int {
			ea, eb := exps[a], exps[b]
			if ea == 0 {
				ea = math.MaxInt64
			}
			if eb == 0 {
				eb = math.MaxInt64
			}
			return cmp.Compare(ea, eb)
		})
		gone := 0
		for gone < len(ks) {
			if _, ok := statePeek(tb, ks[gone]); ok {
				break
			}
			gone++
		}
		for _, k := range ks[gone:] {
			if _, ok := statePeek(tb, k); !ok {
				t.Fatalf("shard %d: %s (expiry %d) shed before entries expiring sooner", si, k, exps[k])
			}
		}
		if q := float64(len(ks)) / 4; float64(gone) < math.Floor(q)-1 || float64(gone) > math.Ceil(q)+1 {
			t.Errorf("shard %d gave %d of %d entries", si, gone, len(ks))
		}
	}
	checkStateTable(t, tb)
	if st := tb.Stats(); st.Size != 400-want || st.Evictions != [numReasons]uint64{ReasonEmergency: uint64(want)} {
		t.Fatalf("after Shed: %+v", st)
	}
	// A fraction over 1 is 1; the reason is the caller's.
	left := tb.Len()
	if n := tb.Shed(2, ReasonCapacity); n != left {
		t.Fatalf("Shed(2) removed %d of %d", n, left)
	}
	if st := tb.Stats(); st.Size != 0 || st.Bytes != 0 || st.Evictions[ReasonCapacity] != uint64(left) {
		t.Fatalf("after Shed(2): %+v", st)
	}
	if n := tb.Shed(1, ReasonEmergency); n != 0 {
		t.Fatalf("Shed of an empty table removed %d", n)
	}
}

func TestStateClose(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tb := mustState(t, StateOptions{MaxEntries: 100, Shards: 4, Now: clk.Now})
	for i := 0; i < 10; i++ {
		tb.Set(fmt.Sprint(i), int64(i))
	}
	f := tb.Fingerprint("0")
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if tb.Update("x", func(_, _ int64, _ bool) (int64, int64, bool) { return 1, 0, true }) {
		t.Fatal("Update on a closed table reported true")
	}
	if tb.Set("x", 1) || tb.SetTTL("y", 1, time.Hour) || tb.Put(f, 1, 0) || tb.Delete("0") {
		t.Fatal("closed table accepted work")
	}
	if _, ok := tb.Get("0"); ok {
		t.Fatal("closed table returned an entry")
	}
	if tb.Len() != 0 || tb.Sweep() != 0 || tb.Shed(1, ReasonEmergency) != 0 {
		t.Fatal("closed table holds entries")
	}
	tb.Entries(func(Fingerprint, int64, int64) bool {
		t.Fatal("Entries of a closed table yielded")
		return false
	})
	st := tb.Stats()
	if st.Evictions != [numReasons]uint64{ReasonShutdown: 10} || st.Bytes != 0 || st.Size != 0 {
		t.Fatalf("closed table stats %+v", st)
	}
}

func TestStateEntriesAndRestore(t *testing.T) {
	t.Parallel()
	clk := newClock()
	volatile := func(k string) bool { return strings.HasPrefix(k, "v:") }
	src := mustState(t, StateOptions{MaxEntries: 4096, Shards: 4, Now: clk.Now, Volatile: volatile})
	now := clk.ns.Load()
	type kv struct{ v, exp int64 }
	saved := map[string]kv{} // what Entries must give
	var keys []string
	for i := 0; i < 300; i++ {
		k := fmt.Sprint("user:", i)
		e := kv{int64(i * 7), 0}
		switch i % 3 {
		case 1:
			e.exp = now + int64(time.Hour)
		case 2:
			e.exp = now + int64(time.Second) // expired, not swept, when saved
		}
		stateUpdate(src, k, e.v, e.exp, true)
		keys = append(keys, k)
		if i%3 != 2 {
			saved[k] = e
		}
	}
	for i := 0; i < 50; i++ {
		k := fmt.Sprint("v:", i)
		stateUpdate(src, k, 1, 0, true)
		keys = append(keys, k)
	}
	clk.Advance(time.Second)
	byFP := map[Fingerprint]string{}
	for k := range saved {
		byFP[src.Fingerprint(k)] = k
	}
	type entry struct {
		f      Fingerprint
		v, exp int64
	}
	var got []entry
	seen := map[Fingerprint]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Entries(func(f Fingerprint, v, exp int64) bool {
			src.Get("user:0") // yield may call the table
			seen[f]++
			got = append(got, entry{f, v, exp})
			return true
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Entries deadlocked when yield called the table")
	}
	if len(got) != len(saved) {
		t.Fatalf("Entries yielded %d, want %d", len(got), len(saved))
	}
	for _, e := range got {
		k, ok := byFP[e.f]
		if !ok || seen[e.f] != 1 {
			t.Fatalf("Entries yielded %v (key %q) %d times", e.f, k, seen[e.f])
		}
		if w := saved[k]; e.v != w.v || e.exp != w.exp {
			t.Fatalf("%s: yielded %d,%d, want %d,%d", k, e.v, e.exp, w.v, w.exp)
		}
	}
	calls := 0
	src.Entries(func(Fingerprint, int64, int64) bool { calls++; return false })
	if calls != 1 {
		t.Fatalf("Entries went on after yield returned false: %d calls", calls)
	}

	// A restart: another table, another shard count, the same seed.
	dst := mustState(t, StateOptions{MaxEntries: 4096, Shards: 16, Now: clk.Now, Volatile: volatile})
	if err := dst.SetSeed(src.Seed()); err != nil || dst.Seed() != src.Seed() {
		t.Fatalf("SetSeed on an empty table: %v", err)
	}
	for _, e := range got {
		if !dst.Put(e.f, e.v, e.exp) {
			t.Fatalf("Put %v", e)
		}
	}
	if dst.Len() != len(saved) {
		t.Fatalf("restored %d, want %d", dst.Len(), len(saved))
	}
	for _, k := range keys {
		v, ok := dst.Get(k)
		w, want := saved[k]
		if ok != want || v != w.v {
			t.Fatalf("restored Get(%s) = %d,%v; want %d,%v", k, v, ok, w.v, want)
		}
	}
	clk.Advance(time.Hour) // the hour-long entries expire in the restored table too
	for k, w := range saved {
		if _, ok := dst.Get(k); ok != (w.exp == 0) {
			t.Fatalf("restored %s (expiry %d) present %v an hour later", k, w.exp, ok)
		}
	}
	seed := dst.Seed()
	if err := dst.SetSeed(seed + 1); err == nil || dst.Seed() != seed {
		t.Fatal("SetSeed on a non-empty table accepted")
	}

	// Put of an expired entry stores nothing.
	n := dst.Len()
	f := dst.Fingerprint("late")
	if dst.Put(f, 1, clk.ns.Load()-1) || dst.Put(f, 1, clk.ns.Load()) || dst.Len() != n {
		t.Fatal("Put stored an expired entry")
	}
	if _, ok := dst.Get("late"); ok {
		t.Fatal("expired Put readable")
	}
	if !dst.Put(f, 2, 0) || !dst.Put(f, 3, clk.ns.Load()+int64(time.Second)) || dst.Len() != n+1 {
		t.Fatal("Put of a live entry")
	}
	if v, ok := dst.Get("late"); !ok || v != 3 {
		t.Fatalf("Put overwrite: %d %v", v, ok)
	}
	clk.Advance(time.Second) // the overwrite's expiry holds
	if _, ok := dst.Get("late"); ok {
		t.Fatal("Put overwrite kept the old expiry")
	}
}

func TestStateFingerprint(t *testing.T) {
	t.Parallel()
	volatile := func(k string) bool { return strings.HasPrefix(k, "v:") }
	a := mustState(t, StateOptions{MaxEntries: 10, Volatile: volatile})
	b := mustState(t, StateOptions{MaxEntries: 1 << 16, Shards: 32, Volatile: volatile})
	c := mustState(t, StateOptions{MaxEntries: 10, Volatile: volatile})
	for tb, seed := range map[*StateTable]uint64{a: 1, b: 1, c: 2} {
		if err := tb.SetSeed(seed); err != nil {
			t.Fatal(err)
		}
	}
	keys := []string{"", "a", "b", "user:1", "v:x", "login:1.2.3.4"}
	fps := map[Fingerprint]string{}
	for _, k := range keys {
		f := a.Fingerprint(k)
		if f != a.Fingerprint(k) || f != b.Fingerprint(k) {
			t.Fatalf("%q: fingerprint not stable for one seed", k)
		}
		if g := c.Fingerprint(k); g.Hi == f.Hi || g.Lo == f.Lo {
			t.Fatalf("%q: seeds 1 and 2 give %v and %v", k, f, g)
		}
		if f.Lo&1 == 0 || (f.Lo&volatileBit != 0) != volatile(k) {
			t.Fatalf("%q: fingerprint %v (volatile %v)", k, f, volatile(k))
		}
		if o, dup := fps[f]; dup {
			t.Fatalf("%q and %q share %v", k, o, f)
		}
		fps[f] = k
	}
}

func TestStateConcurrentUpdatesAreExact(t *testing.T) {
	t.Parallel()
	tb := mustState(t, StateOptions{MaxEntries: 1024, Shards: 16})
	const goroutines, per = 8, 1000
	others := []string{"o1", "o2", "o3", "o4", "o5"}
	inc := func(_, old int64, _ bool) (int64, int64, bool) { return old + 1, KeepExpiry, true }
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < per; i++ {
				tb.Update("hot", inc)
				tb.Update(others[(g+i)%len(others)], inc)
			}
		}()
	}
	close(start)
	wg.Wait()
	if v, ok := tb.Get("hot"); !ok || v != goroutines*per {
		t.Fatalf("hot = %d %v, want %d", v, ok, goroutines*per)
	}
	for _, k := range others {
		if v, ok := tb.Get(k); !ok || v != goroutines*per/int64(len(others)) {
			t.Fatalf("%s = %d %v, want %d", k, v, ok, goroutines*per/len(others))
		}
	}
	if tb.Len() != 1+len(others) {
		t.Fatalf("len %d", tb.Len())
	}
}

// A mix of everything on many keys across 16 shards, for the race detector;
// afterwards every entry that went in is either there or counted as gone.
func TestStateConcurrentMix(t *testing.T) {
	t.Parallel()
	clk := newClock()
	const maxEntries = 1024
	tb := mustState(t, StateOptions{MaxEntries: maxEntries, Shards: 16, TTL: 20 * time.Millisecond, Now: clk.Now})
	var inserted atomic.Int64
	stop := make(chan struct{})
	var bg, wg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 5 {
			case 0:
				tb.Sweep()
			case 1:
				tb.Shed(0.05, ReasonEmergency)
			case 2:
				n := 0
				tb.Entries(func(Fingerprint, int64, int64) bool { n++; return true })
				if n > maxEntries {
					t.Errorf("Entries yielded %d", n)
				}
			case 3:
				if n := tb.Len(); n > maxEntries {
					t.Errorf("len %d", n)
				}
			case 4:
				tb.Stats()
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w, 11))
			for i := 0; i < 3000; i++ {
				k := fmt.Sprint(rng.IntN(3000))
				switch rng.IntN(10) {
				case 0, 1, 2, 3:
					tb.Update(k, func(now, old int64, ok bool) (int64, int64, bool) {
						if !ok {
							inserted.Add(1)
						}
						return old + 1, now + int64(rng.IntN(50))*int64(time.Millisecond), true
					})
				case 4:
					tb.Delete(k)
				case 5:
					if rng.IntN(10) == 0 {
						clk.Advance(time.Millisecond)
					}
				default:
					tb.Get(k)
				}
			}
		}(uint64(w))
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	checkStateTable(t, tb)
	st := tb.Stats()
	var evicted uint64
	for _, n := range st.Evictions {
		evicted += n
	}
	if int64(st.Size)+int64(evicted) != inserted.Load() || st.Size > maxEntries {
		t.Fatalf("%d entries + %d evicted != %d inserted", st.Size, evicted, inserted.Load())
	}
}

func TestNewManagedStateTable(t *testing.T) {
	t.Parallel()
	clk := newClock()
	m := NewManager(ManagerOptions{})
	defer m.Close()
	if _, err := NewManagedTable(m, "other", Options[string, int]{MaxEntries: 10}); err != nil {
		t.Fatal(err)
	}
	st, err := NewManagedStateTable(m, "state", StateOptions{MaxEntries: 4096, TTL: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewManagedStateTable(m, "state", StateOptions{MaxEntries: 1}); err == nil {
		t.Fatal("duplicate name accepted")
	}
	if _, err := NewManagedStateTable(m, "other", StateOptions{MaxEntries: 1}); err == nil {
		t.Fatal("name of another table accepted")
	}
	if _, err := NewManagedTable(m, "state", Options[string, int]{MaxEntries: 1}); err == nil {
		t.Fatal("Table under a state table's name accepted")
	}
	if _, err := NewManagedStateTable(m, "bad", StateOptions{}); err == nil || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("invalid options: %v", err)
	}
	for i := 0; i < 1000; i++ {
		st.Set(fmt.Sprint(i), int64(i))
	}
	for i := 0; i < 10; i++ {
		st.SetTTL(fmt.Sprint("short", i), 1, time.Second)
	}
	stats := m.Stats()
	if len(stats) != 2 || stats[1].Name != "state" || stats[1].Size != 1010 || stats[1].Capacity != 4096 || stats[1].TTL != time.Minute {
		t.Fatalf("manager stats %+v", stats)
	}
	clk.Advance(time.Second)
	if n := m.Sweep(); n != 10 || st.Len() != 1000 {
		t.Fatalf("Manager.Sweep removed %d, len %d", n, st.Len())
	}
	shed, _ := m.Shed(0.5)
	if shed["state"] != 500 || st.Len() != 500 || st.Stats().Evictions[ReasonEmergency] != 500 {
		t.Fatalf("Manager.Shed %v, len %d", shed, st.Len())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if st.Len() != 0 || st.Set("x", 1) || st.Stats().Evictions[ReasonShutdown] != 500 {
		t.Fatalf("Manager.Close did not close the state table: %+v", st.Stats())
	}
	if _, err := NewManagedStateTable(m, "late", StateOptions{MaxEntries: 1}); !errors.Is(err, ErrClosed) {
		t.Fatal("state table made in a closed manager")
	}
}

// An emergency shed must give memory back at once (its point), and so must
// removals that leave a shard sparse, without waiting for a sweep.
func TestStateGivesMemoryBack(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tb := mustState(t, StateOptions{MaxEntries: 100000, Shards: 4, TTL: time.Hour, Now: clk.Now})
	for i := 0; i < 40000; i++ {
		tb.Set(fmt.Sprint(i), int64(i))
	}
	full := tb.Stats().Bytes
	if n := tb.Shed(0.2, ReasonEmergency); n < 8000 || n > 8004 { // 20 % of each of 4 shards, rounded up
		t.Fatalf("shed %d, want 8000–8004", n)
	}
	shed := tb.Stats().Bytes
	if shed > full*85/100 {
		t.Fatalf("shedding 20%% of the entries left %d of %d bytes", shed, full)
	}
	for i := 0; i < 40000; i++ {
		tb.Delete(fmt.Sprint(i))
	}
	if b := tb.Stats().Bytes; b != 0 || tb.Len() != 0 {
		t.Fatalf("deleting every entry left %d bytes, %d entries", b, tb.Len())
	}
	checkStateTable(t, tb)
}

// A decision on a live entry reads its shard's array pointer and writes
// nothing else of the shard: the pointer has a line of its own, never
// written by the mutex's users, and shards are whole lines apart, so that
// both cores keep it in their caches.
func TestStateShardLayout(t *testing.T) {
	t.Parallel()
	var s stateShard
	if n := unsafe.Sizeof(s); n%64 != 0 {
		t.Fatalf("stateShard is %d bytes, not a whole number of cache lines", n)
	}
	if off := unsafe.Offsetof(s.mu); off < 64 || unsafe.Offsetof(s.cells) != 0 {
		t.Fatalf("the array pointer (at %d) shares a line with the mutex (at %d)", unsafe.Offsetof(s.cells), off)
	}
}

// Decisions on live entries take no mutex: they hold the entry's cell. This
// runs them against everything that moves cells under the mutex — inserts
// that grow the array, deletions that shift entries back and shrink it,
// sweeps, sheds — in the same shard, and then checks that no increment was
// lost or applied to a copy being moved or a replaced array.
func TestStateLockFreeUpdatesSurviveMoves(t *testing.T) {
	t.Parallel()
	tb := mustState(t, StateOptions{MaxEntries: 1 << 16, Shards: 1})
	const counted, workers, per = 24, 4, 4000
	keys := make([]string, counted)
	for i := range keys {
		keys[i] = fmt.Sprint("counted-", i)
	}
	inc := func(_, old int64, _ bool) (int64, int64, bool) { return old + 1, KeepExpiry, true }
	stop := make(chan struct{})
	var churn, wg sync.WaitGroup
	churn.Add(1)
	go func() {
		defer churn.Done()
		for round := 0; ; round++ {
			select {
			case <-stop:
				return
			default:
			}
			n := 200 + round%7*300 // grow to different sizes
			for i := 0; i < n; i++ {
				tb.SetTTL(fmt.Sprint("churn-", round, "-", i), 1, time.Hour)
			}
			tb.Shed(0.02, ReasonEmergency) // churn keys expire first: never a counted one
			for i := 0; i < n; i++ {
				tb.Delete(fmt.Sprint("churn-", round, "-", i))
			}
			tb.Sweep()
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				for j, k := range keys {
					if (i+j+w)%5 == 0 {
						tb.Get(k)
					}
					if !tb.Update(k, inc) {
						t.Error("Update reported false")
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	churn.Wait()
	checkStateTable(t, tb)
	for _, k := range keys {
		if v, ok := tb.Get(k); !ok || v != workers*per {
			t.Errorf("%s = %d %v, want %d", k, v, ok, workers*per)
		}
	}
}
