package limiter

import (
	"context"
	"time"

	"github.com/chatguard/chatguard/sessions"
)

// Store makes one decision for key under l, atomically: concurrent calls for
// one key never admit more than the limit.
type Store interface {
	Allow(ctx context.Context, key string, l Limit) (Result, error)
}

// MemoryStore keeps each key's TAT in a bounded table (the eventRateLimits
// budget): a key lives exactly as long as it holds state that differs from
// a fresh key's.
type MemoryStore struct {
	t   *sessions.Table[string, int64]
	now func() time.Time
}

// NewMemoryStore stores in t; now is the clock (nil = time.Now).
func NewMemoryStore(t *sessions.Table[string, int64], now func() time.Time) *MemoryStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryStore{t: t, now: now}
}

// Allow decides one request. It fails only on a closed table.
func (m *MemoryStore) Allow(_ context.Context, key string, l Limit) (Result, error) {
	now := m.now().UnixNano()
	var res Result
	ok := m.t.Update(key, func(tat int64, _ bool) (int64, time.Duration, bool) {
		var next int64
		res, next = gcra(l, tat, now)
		return next, time.Duration(next - now), next > now
	})
	if !ok {
		return Result{}, sessions.ErrClosed
	}
	return res, nil
}
