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
// a fresh key's. Its clock is the table's.
type MemoryStore struct {
	t *sessions.StateTable
}

// NewMemoryStore stores in t.
func NewMemoryStore(t *sessions.StateTable) *MemoryStore {
	return &MemoryStore{t: t}
}

// Allow decides one request. It fails only on a closed table.
func (m *MemoryStore) Allow(_ context.Context, key string, l Limit) (Result, error) {
	var res Result
	ok := m.t.Update(key, func(now, tat int64, _ bool) (int64, int64, bool) {
		var next int64
		res, next = gcra(l, tat, now)
		return next, next, next > now
	})
	if !ok {
		return Result{}, sessions.ErrClosed
	}
	return res, nil
}

// Mirror copies a decision made elsewhere (Redis) into key's state: its TAT
// becomes now + resetAfter, the debt the other store holds for key. If that
// store fails, the next decision here starts where it left off instead of
// from a fresh key.
func (m *MemoryStore) Mirror(key string, resetAfter time.Duration) {
	m.t.Update(key, func(now, _ int64, _ bool) (int64, int64, bool) {
		next := now + int64(resetAfter)
		return next, next, next > now
	})
}
