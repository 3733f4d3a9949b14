package sessions

import (
	"container/list"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a settable clock.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

type evictLog struct {
	mu  sync.Mutex
	got []string
}

func (l *evictLog) add(k string, v int, r Reason) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, fmt.Sprintf("%s=%d:%s", k, v, r))
}

func (l *evictLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got...)
}

func mustTable[K comparable, V any](t testing.TB, o Options[K, V]) *Table[K, V] {
	t.Helper()
	tb, err := NewTable(o)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// The seed's test: an entry set with a 100 ms TTL is gone after 150 ms.
func TestEntryExpiresAfterTTL(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var ev evictLog
	tb := mustTable(t, Options[string, int]{MaxEntries: 10, TTL: 100 * time.Millisecond, Now: clk.Now, OnEvict: ev.add})
	tb.Set("user1", 1)
	clk.Advance(99 * time.Millisecond)
	if v, ok := tb.Get("user1"); !ok || v != 1 {
		t.Fatalf("before TTL: %v %v", v, ok)
	}
	clk.Advance(51 * time.Millisecond) // 150 ms
	if _, ok := tb.Get("user1"); ok {
		t.Fatal("expired entry returned")
	}
	if got := ev.list(); len(got) != 1 || got[0] != "user1=1:expired" {
		t.Fatalf("evictions %v", got)
	}
	if tb.Len() != 0 {
		t.Fatalf("Len %d", tb.Len())
	}
}

// The same with the real clock, as the seed wrote it.
func TestEntryExpiresRealClock(t *testing.T) {
	t.Parallel()
	tb := mustTable(t, Options[string, string]{MaxEntries: 10, TTL: 100 * time.Millisecond})
	tb.Set("user1", "data")
	time.Sleep(150 * time.Millisecond)
	if _, ok := tb.Get("user1"); ok {
		t.Fatal("expired entry returned")
	}
}

func TestTouchExtendsAndPerEntryTTL(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tb := mustTable(t, Options[string, int]{MaxEntries: 10, TTL: time.Second, Now: clk.Now})
	tb.Set("a", 1)
	tb.SetTTL("admin", 2, time.Hour)
	tb.SetTTL("forever", 3, 0)
	clk.Advance(900 * time.Millisecond)
	if !tb.Touch("a") {
		t.Fatal("Touch of a live entry failed")
	}
	clk.Advance(900 * time.Millisecond)
	if _, ok := tb.Get("a"); !ok {
		t.Fatal("touched entry expired early")
	}
	clk.Advance(59 * time.Minute)
	if _, ok := tb.Get("a"); ok {
		t.Fatal("a outlived its TTL")
	}
	if !tb.Touch("admin") { // extends by its own hour, not the default second
		t.Fatal("Touch admin")
	}
	clk.Advance(30 * time.Minute)
	if _, ok := tb.Get("admin"); !ok {
		t.Fatal("admin's own TTL not kept by Touch")
	}
	clk.Advance(1000 * time.Hour)
	if _, ok := tb.Get("forever"); !ok {
		t.Fatal("TTL 0 entry expired")
	}
	if tb.Touch("missing") {
		t.Fatal("Touch of a missing key")
	}
}

func TestCapacityEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	var ev evictLog
	tb := mustTable(t, Options[string, int]{MaxEntries: 3, OnEvict: ev.add})
	tb.Set("a", 1)
	tb.Set("b", 2)
	tb.Set("c", 3)
	tb.Get("a")       // a is used: spared once; b is the oldest unused
	tb.Set("d", 4)    // evicts b; order (young→old) d a c
	tb.Touch("c")     // c used
	tb.Set("e", 5)    // c is spared; a, spared once already and unused since, goes
	tb.Set("d", 40)   // overwrite: no eviction
	tb.Delete("c")    // manual
	tb.Delete("nope") // nothing
	want := []string{"b=2:capacity", "a=1:capacity", "c=3:manual"}
	if got := ev.list(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("evictions %v, want %v", got, want)
	}
	if v, _ := tb.Get("d"); v != 40 || tb.Len() != 2 {
		t.Fatalf("d=%d len=%d", v, tb.Len())
	}
}

func TestCloseBehaviour(t *testing.T) {
	t.Parallel()
	var ev evictLog
	tb := mustTable(t, Options[string, int]{MaxEntries: 100, OnEvict: ev.add})
	tb.Set("a", 1)
	tb.Set("b", 2)
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if got := ev.list(); len(got) != 2 {
		t.Fatalf("shutdown evictions %v", got)
	}
	if tb.Set("c", 3) || tb.Len() != 0 || tb.Touch("a") || tb.Delete("a") {
		t.Fatal("closed table accepted work")
	}
	if _, ok := tb.Get("a"); ok {
		t.Fatal("closed table returned an entry")
	}
	if st := tb.Stats(); st.Evictions[ReasonShutdown] != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestModel checks a one-shard table against a straightforward model of
// second-chance LRU and TTL semantics over a long random sequence.
func TestModel(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3, 4} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, seed))
			clk := newClock()
			var got []string
			const capacity = 37
			tb := mustTable(t, Options[string, int]{MaxEntries: capacity, TTL: 50 * time.Millisecond, Now: clk.Now, Shards: 1,
				OnEvict: func(k string, v int, r Reason) { got = append(got, fmt.Sprintf("%s=%d:%s", k, v, r)) }})
			m := newModel(capacity, clk)
			for step := 0; step < 50000; step++ {
				k := fmt.Sprint(rng.IntN(80))
				switch op := rng.IntN(100); {
				case op < 40:
					v := rng.IntN(1000)
					tb.Set(k, v)
					m.set(k, v, 50*time.Millisecond)
				case op < 45:
					ttl := time.Duration(rng.IntN(100)) * time.Millisecond
					v := rng.IntN(1000)
					tb.SetTTL(k, v, ttl)
					m.set(k, v, ttl)
				case op < 75:
					v, ok := tb.Get(k)
					mv, mok := m.get(k)
					if ok != mok || v != mv {
						t.Fatalf("step %d Get(%s) = %d,%v; model %d,%v", step, k, v, ok, mv, mok)
					}
				case op < 85:
					if a, b := tb.Touch(k), m.touch(k); a != b {
						t.Fatalf("step %d Touch(%s) = %v; model %v", step, k, a, b)
					}
				case op < 92:
					if a, b := tb.Delete(k), m.del(k); a != b {
						t.Fatalf("step %d Delete(%s) = %v; model %v", step, k, a, b)
					}
				case op < 93:
					tb.Sweep()
					m.sweep()
				default:
					clk.Advance(time.Duration(rng.IntN(10)) * time.Millisecond)
				}
				if fmt.Sprint(got) != fmt.Sprint(m.evicted) {
					t.Fatalf("step %d evictions %v; model %v", step, got, m.evicted)
				}
				got, m.evicted = got[:0], m.evicted[:0]
				if tb.Len() != m.l.Len() {
					t.Fatalf("step %d Len %d; model %d", step, tb.Len(), m.l.Len())
				}
			}
		})
	}
}

type modelEntry struct {
	k       string
	v       int
	expires int64
	ttl     time.Duration
	used    bool
}

type model struct {
	capacity int
	clk      *fakeClock
	l        *list.List // front = most recent
	idx      map[string]*list.Element
	evicted  []string
}

func newModel(capacity int, clk *fakeClock) *model {
	return &model{capacity: capacity, clk: clk, l: list.New(), idx: map[string]*list.Element{}}
}

func (m *model) expired(e *modelEntry) bool {
	return e.expires != 0 && e.expires <= m.clk.Now().UnixNano()
}

func (m *model) drop(el *list.Element, r Reason) {
	e := el.Value.(*modelEntry)
	m.l.Remove(el)
	delete(m.idx, e.k)
	m.evicted = append(m.evicted, fmt.Sprintf("%s=%d:%s", e.k, e.v, r))
}

func (m *model) set(k string, v int, ttl time.Duration) {
	var exp int64
	if ttl > 0 {
		exp = m.clk.Now().Add(ttl).UnixNano()
	}
	if el, ok := m.idx[k]; ok {
		e := el.Value.(*modelEntry)
		e.v, e.expires, e.ttl, e.used = v, exp, ttl, true
		return
	}
	if m.l.Len() >= m.capacity {
		for { // second chance
			back := m.l.Back()
			e := back.Value.(*modelEntry)
			if m.expired(e) {
				m.drop(back, ReasonExpired)
				break
			}
			if !e.used {
				m.drop(back, ReasonCapacity)
				break
			}
			e.used = false
			m.l.MoveToFront(back)
		}
	}
	m.idx[k] = m.l.PushFront(&modelEntry{k: k, v: v, expires: exp, ttl: ttl})
}

func (m *model) get(k string) (int, bool) {
	el, ok := m.idx[k]
	if !ok {
		return 0, false
	}
	if m.expired(el.Value.(*modelEntry)) {
		m.drop(el, ReasonExpired)
		return 0, false
	}
	el.Value.(*modelEntry).used = true
	return el.Value.(*modelEntry).v, true
}

func (m *model) touch(k string) bool {
	el, ok := m.idx[k]
	if !ok {
		return false
	}
	e := el.Value.(*modelEntry)
	if m.expired(e) {
		m.drop(el, ReasonExpired)
		return false
	}
	if e.expires != 0 {
		e.expires = m.clk.Now().Add(e.ttl).UnixNano()
	}
	e.used = true
	return true
}

func (m *model) del(k string) bool {
	el, ok := m.idx[k]
	if ok {
		m.drop(el, ReasonManual)
	}
	return ok
}

func (m *model) sweep() {
	for el := m.l.Back(); el != nil; {
		prev := el.Prev()
		if m.expired(el.Value.(*modelEntry)) {
			m.drop(el, ReasonExpired)
		}
		el = prev
	}
}

// Concurrent writers never push the table past its cap, and every entry
// that leaves is reported exactly once.
func TestConcurrentWritersRespectCap(t *testing.T) {
	t.Parallel()
	const capacity, writers, perWriter = 1000, 8, 5000
	var evicted atomic.Int64
	tb := mustTable(t, Options[string, int]{MaxEntries: capacity, OnEvict: func(string, int, Reason) { evicted.Add(1) }})
	stop := make(chan struct{})
	var maxSeen atomic.Int64
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := int64(tb.Len()); n > maxSeen.Load() {
				maxSeen.Store(n)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				k := fmt.Sprintf("%d-%d", w, i)
				tb.Set(k, i)
				tb.Get(k)
				if i%7 == 0 {
					tb.Delete(k)
				}
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	watcher.Wait()
	if maxSeen.Load() > capacity {
		t.Fatalf("table reached %d entries, cap %d", maxSeen.Load(), capacity)
	}
	if got := int64(tb.Len()) + evicted.Load(); got != writers*perWriter {
		t.Fatalf("live %d + evicted %d != inserted %d", tb.Len(), evicted.Load(), writers*perWriter)
	}
	st := tb.Stats()
	var sum uint64
	for _, n := range st.Evictions {
		sum += n
	}
	if int64(sum) != evicted.Load() {
		t.Fatalf("stats count %d evictions, callbacks %d", sum, evicted.Load())
	}
}

func TestSweepShedAndCompaction(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var ev atomic.Int64
	tb := mustTable(t, Options[int, int]{MaxEntries: 100000, TTL: time.Minute, Now: clk.Now, OnEvict: func(int, int, Reason) { ev.Add(1) }})
	for i := 0; i < 50000; i++ {
		if i%2 == 0 {
			tb.SetTTL(i, i, time.Second)
		} else {
			tb.Set(i, i)
		}
	}
	full := tb.Stats().Bytes
	clk.Advance(2 * time.Second)
	if n := tb.Sweep(); n != 25000 {
		t.Fatalf("swept %d", n)
	}
	if n := tb.Shed(0.9, ReasonEmergency); n < 22500 || n > 22500+256 { // rounded up per shard
		t.Fatalf("shed %d of 25000 at 90%%", n)
	}
	st := tb.Stats()
	if st.Evictions[ReasonExpired] != 25000 || int(st.Evictions[ReasonEmergency])+st.Size != 25000 || ev.Load() != 25000+int64(st.Evictions[ReasonEmergency]) {
		t.Fatalf("stats %+v, callbacks %d", st, ev.Load())
	}
	if st.Bytes*4 > full {
		t.Fatalf("memory not given back: %d bytes of %d", st.Bytes, full)
	}
	// What is left is still reachable, and the most recent entries survived.
	if _, ok := tb.Get(49999); !ok {
		t.Fatal("most recent entry shed")
	}
	for k := range tb.All() {
		if _, ok := tb.Get(k); !ok {
			t.Fatalf("All yielded %d which Get misses", k)
		}
	}
}

func TestStatsAndOptions(t *testing.T) {
	t.Parallel()
	if _, err := NewTable(Options[string, int]{}); err == nil {
		t.Fatal("MaxEntries 0 accepted")
	}
	if _, err := NewTable(Options[string, int]{MaxEntries: 1, TTL: -time.Second}); err == nil {
		t.Fatal("negative TTL accepted")
	}
	tb := mustTable(t, Options[string, string]{MaxEntries: 5})
	tb.Set("k", "value")
	tb.Get("k")
	tb.Get("k")
	tb.Get("x")
	st := tb.Stats()
	if st.Hits != 2 || st.Misses != 1 || st.HitRate() < 0.66 || st.HitRate() > 0.67 || st.Size != 1 || st.Capacity != 5 || st.Bytes <= 6 {
		t.Fatalf("stats %+v", st)
	}
	one := mustTable(t, Options[int, int]{MaxEntries: 1, Shards: 64})
	one.Set(1, 1)
	one.Set(2, 2)
	if one.Len() != 1 {
		t.Fatalf("MaxEntries 1 with many shards holds %d", one.Len())
	}
}

func TestUpdate(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var ev evictLog
	tb := mustTable(t, Options[string, int]{MaxEntries: 2, TTL: time.Minute, Now: clk.Now, OnEvict: ev.add, Shards: 1})
	inc := func(old int, ok bool) (int, time.Duration, bool) {
		if !ok {
			return 1, time.Second, true
		}
		return old + 1, time.Second, true
	}
	tb.Update("a", inc)
	tb.Update("a", inc)
	if v, _ := tb.Get("a"); v != 2 {
		t.Fatalf("a = %d", v)
	}
	clk.Advance(2 * time.Second) // a expired: Update starts over
	tb.Update("a", inc)
	if v, _ := tb.Get("a"); v != 1 {
		t.Fatalf("a after expiry = %d", v)
	}
	tb.Update("b", inc)
	tb.Update("c", inc) // full: evicts the oldest unused (b; a was read)
	tb.Update("a", func(int, bool) (int, time.Duration, bool) { return 0, 0, false })
	want := []string{"a=2:expired", "b=1:capacity", "a=1:manual"}
	if got := ev.list(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("evictions %v, want %v", got, want)
	}
	tb.Close()
	if tb.Update("x", inc) {
		t.Fatal("Update on a closed table")
	}
}

// 200 goroutines race to take one of 50 slots under one key: exactly 50 win.
func TestUpdateIsExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	tb := mustTable(t, Options[string, int]{MaxEntries: 1000})
	var admitted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < 200; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tb.Update("login:1.2.3.4", func(n int, _ bool) (int, time.Duration, bool) {
				if n < 50 {
					admitted.Add(1)
					return n + 1, 0, true
				}
				return n, 0, true
			})
		}()
	}
	close(start)
	wg.Wait()
	if admitted.Load() != 50 {
		t.Fatalf("%d admitted, want 50", admitted.Load())
	}
}

// A small table holds exactly MaxEntries before it evicts (one shard).
func TestSmallTableFillsBeforeEvicting(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 100, 1000, 8191} {
		var ev atomic.Int64
		tb := mustTable(t, Options[int, int]{MaxEntries: n, OnEvict: func(int, int, Reason) { ev.Add(1) }})
		for i := 0; i < n; i++ {
			tb.Set(i, i)
		}
		if ev.Load() != 0 || tb.Len() != n {
			t.Errorf("MaxEntries %d: %d evictions before full, len %d", n, ev.Load(), tb.Len())
		}
		tb.Set(n, n)
		if ev.Load() != 1 || tb.Len() != n {
			t.Errorf("MaxEntries %d: %d evictions after one more, len %d", n, ev.Load(), tb.Len())
		}
	}
}

// Shedding gives the memory back at once, so that the watchdog's next
// reading sees the relief.
func TestShedLowersTheMemoryEstimate(t *testing.T) {
	t.Parallel()
	tb := mustTable(t, Options[int, int]{MaxEntries: 200000})
	for i := 0; i < 200000; i++ {
		tb.Set(i, i)
	}
	before := tb.Stats().Bytes
	tb.Shed(0.2, ReasonEmergency)
	after := tb.Stats().Bytes
	if float64(after) > 0.85*float64(before) {
		t.Fatalf("shedding 20%% of entries left %.0f%% of the bytes", 100*float64(after)/float64(before))
	}
	if tb.Len() < 159000 || tb.Len() > 161000 {
		t.Fatalf("len %d", tb.Len())
	}
}

// A sub-millisecond TTL is not shortened to nothing by Touch.
func TestSubMillisecondTTL(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tb := mustTable(t, Options[string, int]{MaxEntries: 10, Now: clk.Now})
	tb.SetTTL("a", 1, 500*time.Microsecond)
	if !tb.Touch("a") {
		t.Fatal("touch")
	}
	if _, ok := tb.Get("a"); !ok {
		t.Fatal("touched entry expired at once")
	}
}

// An emergency shed picks its victims as a capacity eviction does: entries
// used since they were last considered are spared (before, it took the
// oldest entries however recently they were read).
func TestShedSparesRecentlyUsedEntries(t *testing.T) {
	t.Parallel()
	var shed []string
	var mu sync.Mutex
	tb := mustTable(t, Options[string, int]{MaxEntries: 10, OnEvict: func(k string, _ int, _ Reason) {
		mu.Lock()
		shed = append(shed, k)
		mu.Unlock()
	}})
	for i := range 10 {
		tb.Set(fmt.Sprintf("u%d", i), i)
	}
	tb.Get("u0")   // read
	tb.Touch("u1") // activity
	if n := tb.Shed(0.2, ReasonEmergency); n != 2 {
		t.Fatalf("shed %d, want 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(shed, "u0") || slices.Contains(shed, "u1") {
		t.Fatalf("shed %v: a recently used entry went", shed)
	}
}

// Entries deleted one by one (disconnects, leaves) give their memory back at
// the next sweep, even one that finds nothing expired (QA: a table with no
// entries reported 5.4 MB after a spike, and the watchdog stayed critical).
func TestSweepCompactsAfterDeletes(t *testing.T) {
	t.Parallel()
	tb := mustTable(t, Options[int, int]{MaxEntries: 100000, TTL: time.Hour})
	for i := 0; i < 50000; i++ {
		tb.Set(i, i)
	}
	full := tb.Stats().Bytes
	for i := 0; i < 50000; i++ {
		tb.Delete(i)
	}
	if n := tb.Sweep(); n != 0 {
		t.Fatalf("swept %d, want nothing expired", n)
	}
	if st := tb.Stats(); st.Size != 0 || st.Bytes*10 > full {
		t.Fatalf("after deleting every entry and a sweep: %d entries, %d bytes of %d", st.Size, st.Bytes, full)
	}
	tb.Set(1, 1) // still usable
	if v, ok := tb.Get(1); !ok || v != 1 {
		t.Fatal("the compacted table lost a new entry")
	}
}

// An emptied table holds nothing, as a new one: a few entries that came
// and went (a handful of users connecting and leaving) left every shard
// they touched its first chunk, and the table reported kilobytes with no
// entry (QA: 8,832 bytes after 6 users left, through every sweep).
func TestEmptiedTableHoldsNothing(t *testing.T) {
	t.Parallel()
	tb := mustTable(t, Options[string, string]{MaxEntries: 50000, TTL: time.Hour})
	for i := 0; i < 20; i++ {
		tb.Set(fmt.Sprintf("user%d@example.com", i), "sock")
	}
	for i := 0; i < 20; i++ {
		tb.Delete(fmt.Sprintf("user%d@example.com", i))
	}
	tb.Sweep()
	if st := tb.Stats(); st.Size != 0 || st.Bytes != 0 {
		t.Fatalf("after every entry left and a sweep: %d entries, %d bytes, want 0 and 0", st.Size, st.Bytes)
	}
	tb.Set("again@example.com", "sock")
	if v, ok := tb.Get("again@example.com"); !ok || v != "sock" {
		t.Fatal("the emptied table lost a new entry")
	}
}
