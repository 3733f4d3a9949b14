package limiter

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatguard/chatguard/sessions"
)

// go-redis probes a node it cannot dial from a goroutine that sleeps 1 s
// between tries and ends at its first look after the client is closed:
// a test whose node died may end less than a second before the check.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

func TestGCRA(t *testing.T) {
	t.Parallel()
	const sec = int64(time.Second)
	login := Limit{Rate: 3, Period: 15 * time.Minute} // the seed's login limit
	var tat int64
	now := int64(1_000_000) * sec
	for i := 0; i < 3; i++ {
		var res Result
		res, tat = gcra(login, tat, now)
		if !res.Allowed || res.Remaining != 2-i {
			t.Fatalf("attempt %d: %+v", i+1, res)
		}
	}
	res, tat2 := gcra(login, tat, now)
	if res.Allowed || res.RetryAfter != 5*time.Minute || tat2 != tat || res.ResetAfter != 15*time.Minute {
		t.Fatalf("4th attempt: %+v", res)
	}
	// One comes back every Period/Rate.
	res, tat = gcra(login, tat, now+int64(5*time.Minute))
	if !res.Allowed || res.Remaining != 0 {
		t.Fatalf("after 5 min: %+v", res)
	}
	// After a full idle Period the whole burst is back.
	res, _ = gcra(login, tat, now+int64(30*time.Minute))
	if !res.Allowed || res.Remaining != 2 {
		t.Fatalf("after idling: %+v", res)
	}
	// A smaller burst spreads the same rate.
	smooth := Limit{Rate: 60, Period: time.Minute, Burst: 1}
	res, tat = gcra(smooth, 0, now)
	if !res.Allowed {
		t.Fatal("first")
	}
	if res, _ = gcra(smooth, tat, now+int64(500*time.Millisecond)); res.Allowed || res.RetryAfter != 500*time.Millisecond {
		t.Fatalf("burst 1: %+v", res)
	}
}

// A limit tightened by mistake and put back leaves no debt beyond the
// restored limit's window: a client that spent 2 of a 24h period's 2 waits
// at most one interval of the restored 7 a minute, not a day (QA: ten hours
// of 429s after a period typo was reverted).
func TestGCRAForgetsTheDebtOfALiftedLimit(t *testing.T) {
	t.Parallel()
	const sec = int64(time.Second)
	now := int64(1_000_000) * sec
	typo := Limit{Rate: 2, Period: 24 * time.Hour}
	restored := Limit{Rate: 7, Period: time.Minute}
	var tat int64
	for i := 0; i < 3; i++ {
		_, tat = gcra(typo, tat, now)
	}
	if tat != now+int64(24*time.Hour) {
		t.Fatalf("TAT under the typo %v ahead", time.Duration(tat-now))
	}
	now += 3 * sec
	res, tat := gcra(restored, tat, now)
	interval := restored.interval()
	if res.Allowed || res.RetryAfter > interval || res.ResetAfter > restored.Period {
		t.Fatalf("under the restored limit: %+v, want a refusal for at most %v", res, interval)
	}
	if res, _ = gcra(restored, tat, now+int64(interval)); !res.Allowed {
		t.Fatalf("one interval later: %+v", res)
	}
	st := newStore(t, nil)
	for i := 0; i < 3; i++ {
		_, _ = st.Allow(context.Background(), "k", typo)
	}
	if res, err := st.Allow(context.Background(), "k", restored); err != nil || res.RetryAfter > interval || res.ResetAfter > restored.Period {
		t.Fatalf("memory store under the restored limit: %+v %v", res, err)
	}
}

func newStore(t *testing.T, now func() time.Time) *MemoryStore {
	t.Helper()
	tb, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 10000, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return NewMemoryStore(tb)
}

// The exactness test: 200 goroutines hit one key with limit 50.
func TestMemoryStoreIsExact(t *testing.T) {
	t.Parallel()
	exactness(t, newStore(t, nil), "messages:ana@example.com")
}

func TestMemoryStoreForgetsIdleKeys(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	tb, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	s := NewMemoryStore(tb)
	l := Limit{Rate: 10, Period: time.Minute}
	if _, err := s.Allow(context.Background(), "k", l); err != nil {
		t.Fatal(err)
	}
	if tb.Len() != 1 {
		t.Fatal("key not stored")
	}
	now.Add(int64(7 * time.Second)) // one interval (6 s) later the key is as good as new
	tb.Sweep()
	if tb.Len() != 0 {
		t.Fatalf("idle key kept: %d", tb.Len())
	}
	tb.Close()
	if _, err := s.Allow(context.Background(), "k", l); !errors.Is(err, sessions.ErrClosed) {
		t.Fatalf("closed table: %v", err)
	}
}

// failingStore decides in a memory store until it is told to fail, as a
// Redis that dies.
type failingStore struct {
	s    *MemoryStore
	fail atomic.Bool
}

func (p *failingStore) Allow(ctx context.Context, key string, l Limit) (Result, error) {
	if p.fail.Load() {
		return Result{}, errors.New("redis: connection refused")
	}
	return p.s.Allow(ctx, key, l)
}

// After the switch to the memory fallback, a key goes on from what Redis
// left it: all of it with one replica, its part (rounded up, within the
// share) in each of several.
func TestFallbackFollowsRedisDecisions(t *testing.T) {
	t.Parallel()
	login := Limit{Rate: 3, Period: 15 * time.Minute}
	for _, tc := range []struct {
		l              Limit
		replicas, used int
		want           int // admitted by this replica in fallback
	}{
		{login, 1, 1, 2},
		{login, 1, 3, 0},
		{login, 2, 0, 1}, // never seen by Redis: a fresh share
		{login, 2, 1, 1},
		{login, 3, 1, 1}, // 2 left among 3 replicas: one each, not none
		{login, 2, 3, 0},
		{Limit{Rate: 30, Period: time.Minute}, 4, 10, 5},          // 20 left, share 7
		{Limit{Rate: 2, Period: time.Minute, Burst: 10}, 4, 5, 2}, // 5 left, share burst 2
	} {
		table := func() *sessions.StateTable {
			tb, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 1000})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tb.Close() })
			return tb
		}
		redis := &failingStore{s: NewMemoryStore(table())}
		f, err := NewFailoverStore(FailoverOptions{Primary: redis, Fallback: NewMemoryStore(table()), Replicas: tc.replicas, Cooldown: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i := 0; i < tc.used; i++ {
			if r, err := f.Allow(ctx, "k", tc.l); err != nil || !r.Allowed {
				t.Fatalf("%v ×%d: request %d refused in Redis: %v", tc.l, tc.replicas, i+1, err)
			}
		}
		redis.fail.Store(true)
		for f.Mode() != ModeFallback {
			_, _ = f.Allow(ctx, "another key", tc.l)
		}
		admitted := 0
		for i := 0; i < 20; i++ {
			if r, _ := f.Allow(ctx, "k", tc.l); r.Allowed {
				admitted++
			}
		}
		if admitted != tc.want {
			t.Errorf("%v, %d replicas, %d used in Redis: fallback admitted %d, want %d", tc.l, tc.replicas, tc.used, admitted, tc.want)
		}
	}
}

// A replica's share of a limit smaller than the number of replicas is 1 per
// a longer period, so that the replicas together keep the limit's rate: 3
// logins per 15 min among 5 replicas is 1 per 25 min each (it was 1 per
// 15 min each: 5 per 15 min together).
func TestFallbackShareOfASmallLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		l        Limit
		replicas int
		want     Limit
	}{
		{Limit{Rate: 3, Period: 15 * time.Minute}, 5, Limit{Rate: 1, Period: 25 * time.Minute}},
		{Limit{Rate: 3, Period: 15 * time.Minute}, 3, Limit{Rate: 1, Period: 15 * time.Minute}},
		{Limit{Rate: 30, Period: time.Minute}, 4, Limit{Rate: 7, Period: time.Minute}},
		{Limit{Rate: 2, Period: time.Minute, Burst: 10}, 4, Limit{Rate: 1, Period: 2 * time.Minute, Burst: 2}},
		{Limit{Rate: 10, Period: time.Minute}, 1, Limit{Rate: 10, Period: time.Minute}},
	} {
		f, err := NewFailoverStore(FailoverOptions{Primary: &failingStore{}, Fallback: &failingStore{}, Replicas: tc.replicas})
		if err != nil {
			t.Fatal(err)
		}
		if got := f.share(tc.l); got != tc.want {
			t.Errorf("%v among %d replicas: share %v, want %v", tc.l, tc.replicas, got, tc.want)
		}
	}
}

// gatedOwing is a primary that takes debts and holds each call until
// release is closed, as a Redis call still out when the breaker opens.
type gatedOwing struct {
	entered chan struct{}
	release chan struct{}
	debts   chan time.Duration
}

func (g *gatedOwing) Allow(ctx context.Context, key string, l Limit) (Result, error) {
	return g.AllowOwing(ctx, key, l, 0)
}

func (g *gatedOwing) AllowOwing(_ context.Context, _ string, l Limit, debt time.Duration) (Result, error) {
	g.debts <- debt
	g.entered <- struct{}{}
	<-g.release
	return Result{Allowed: true, Limit: l}, nil
}

// A debt the fallback raised while a Redis call carrying the older one was
// out stays owed: the call's success pays only what it carried. It used
// to clear the key's debt whatever it had become, and the admissions made
// in fallback meanwhile never reached Redis.
func TestFallbackDebtRaisedDuringACallStaysOwed(t *testing.T) {
	t.Parallel()
	mem, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	g := &gatedOwing{entered: make(chan struct{}), release: make(chan struct{}), debts: make(chan time.Duration, 4)}
	f, err := NewFailoverStore(FailoverOptions{Primary: g, Fallback: NewMemoryStore(mem), Cooldown: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	login := Limit{Rate: 3, Period: 15 * time.Minute}
	f.Trip(errors.New("redis: connection refused"))
	if res, err := f.Allow(ctx, "login|a", login); err != nil || !res.Allowed {
		t.Fatalf("in fallback: %+v, %v", res, err)
	}
	_, first := f.owing("login|a")
	if first <= 0 {
		t.Fatal("no debt after a fallback admission")
	}
	// Back to Redis, and a call carrying the first debt goes out.
	f.mu.Lock()
	f.open, f.failures = false, 0
	f.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Allow(ctx, "login|a", login)
	}()
	<-g.entered
	if got := <-g.debts; got <= 0 || got > first {
		t.Fatalf("the call carried %s, want the debt of %s", got, first)
	}
	// Meanwhile the breaker opens and the fallback admits one more.
	f.Trip(errors.New("redis: i/o timeout"))
	if res, err := f.Allow(ctx, "login|a", login); err != nil || !res.Allowed {
		t.Fatalf("second in fallback: %+v, %v", res, err)
	}
	_, second := f.owing("login|a")
	close(g.release)
	<-done
	if _, left := f.owing("login|a"); left < second-time.Second {
		t.Fatalf("debt after the call came back: %s, want the raised %s (first %s)", left, second, first)
	}
}

// Watch's probe leaves nothing in the fallback's table, whether Redis
// answers it (no mirror) or not (no fallback decision): the table is also
// what the rate-limit file loads into at start, and a load into a table
// that holds entries fails (review: the probe of a quiet Redis came while a
// 1 M-entry file was loading, and the file was set aside).
func TestWatchProbeLeavesNoState(t *testing.T) {
	t.Parallel()
	for _, down := range []bool{false, true} {
		primary, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
		if err != nil {
			t.Fatal(err)
		}
		fallback, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
		if err != nil {
			t.Fatal(err)
		}
		redis := &failingStore{s: NewMemoryStore(primary)}
		redis.fail.Store(down)
		f, err := NewFailoverStore(FailoverOptions{Primary: redis, Fallback: NewMemoryStore(fallback), Cooldown: 40 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		stop, done := make(chan struct{}), make(chan struct{})
		go func() { defer close(done); f.Watch(stop) }()
		time.Sleep(300 * time.Millisecond) // several probes: quiet, then (down) opening the breaker and retrying
		close(stop)
		<-done
		if down && f.Mode() != ModeFallback {
			t.Errorf("Redis down: mode %s after the probes", f.Mode())
		}
		if !down && primary.Len() == 0 {
			t.Error("Redis up: no probe reached it")
		}
		if n := fallback.Len(); n != 0 {
			t.Errorf("Redis down=%v: the probes left %d entries in the fallback's table", down, n)
		}
		primary.Close()
		fallback.Close()
	}
}

// The Redis script counts in whole microseconds: an interval is rounded up,
// never down, so that Redis is never looser than the limit (review: 700 per
// millisecond, 1.43 µs each, ran as 1 µs: up to 1,000 per millisecond).
func TestMicrosUp(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]int64{
		0: 1, 1: 1, time.Microsecond: 1, 1001 * time.Nanosecond: 2, 1428 * time.Nanosecond: 2,
		time.Millisecond: 1000, 15 * time.Minute / 3: 300_000_000,
	} {
		if got := microsUp(d); got != want {
			t.Errorf("microsUp(%v) = %d, want %d", d, got, want)
		}
	}
}
