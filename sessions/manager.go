package sessions

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// The seed's tables, which every chatguard process has.
const (
	TableConnectedUsers    = "connectedUsers"
	TableConversationUsers = "conversationUsers"
	TableEventRateLimits   = "eventRateLimits"
	TableUserRoles         = "userRoles"
	// TableRateLimitDebts: what the rate-limit fallback admitted while
	// Redis failed, until Redis has taken it (only with a Redis store).
	TableRateLimitDebts = "rateLimitDebts"
)

// TableStats is one table's figures, for /api/internal/stats and metrics.
type TableStats struct {
	Name      string
	Size      int
	Capacity  int
	TTL       time.Duration
	Hits      uint64
	Misses    uint64
	Evictions [numReasons]uint64
	// Bytes estimates the memory the table holds: its slab and index plus
	// the contents its Size function reports.
	Bytes int64
}

// HitRate is hits / (hits + misses), 0 without lookups.
func (s TableStats) HitRate() float64 {
	if s.Hits+s.Misses == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}

// managed is what the Manager needs of a table, whatever its types.
type managed interface {
	Stats() TableStats
	Sweep() int
	Shed(fraction float64, reason Reason) int
	Close() error
}

// Stats returns the table's figures.
func (t *Table[K, V]) Stats() TableStats {
	st := TableStats{Name: t.name, Capacity: t.max, TTL: t.ttl}
	for _, s := range t.shards {
		s.mu.Lock()
		st.Size += s.count
		st.Hits += s.hits
		st.Misses += s.misses
		for r := range st.Evictions {
			st.Evictions[r] += s.evictions[r]
		}
		st.Bytes += s.footprint() + s.bytes
		s.mu.Unlock()
	}
	return st
}

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	// SweepInterval is the period of the global sweep of expired entries
	// (the seed's 5 minutes); 0 means no periodic sweep.
	SweepInterval time.Duration
	// Logger receives sweep and shedding lines; nil discards them.
	Logger *logrus.Entry
}

// Manager owns named tables: it sweeps them periodically, reports them and
// sheds them under memory pressure. Close it to stop the sweep and close
// every table.
type Manager struct {
	log *logrus.Entry

	mu     sync.Mutex
	tables map[string]managed
	order  []string
	closed bool

	cleanupCycles atomic.Uint64

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewManager returns a Manager and starts its sweep goroutine.
func NewManager(o ManagerOptions) *Manager {
	m := &Manager{
		log:    o.Logger,
		tables: map[string]managed{},
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if m.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		m.log = logrus.NewEntry(l)
	}
	if o.SweepInterval > 0 {
		go m.sweepLoop(o.SweepInterval)
	} else {
		close(m.done)
	}
	return m
}

// NewManagedTable makes a table owned by m under name (unique in m).
func NewManagedTable[K comparable, V any](m *Manager, name string, o Options[K, V]) (*Table[K, V], error) {
	t, err := NewTable(o)
	return manage(m, name, t, err)
}

func (t *Table[K, V]) setName(name string) { t.name = name }

// manage names t (just made, with err) and registers it in m.
func manage[T interface {
	managed
	setName(string)
}](m *Manager, name string, t T, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, fmt.Errorf("sessions: table %s: %w", name, err)
	}
	t.setName(name)
	if err := m.add(name, t); err != nil {
		return zero, err
	}
	return t, nil
}

// add registers t under name.
func (m *Manager) add(name string, t managed) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if _, dup := m.tables[name]; dup {
		return fmt.Errorf("sessions: table %s exists already", name)
	}
	m.tables[name] = t
	m.order = append(m.order, name)
	return nil
}

// list returns the tables in creation order.
func (m *Manager) list() []managed {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]managed, 0, len(m.order))
	for _, n := range m.order {
		out = append(out, m.tables[n])
	}
	return out
}

// Stats returns every table's figures, in creation order.
func (m *Manager) Stats() []TableStats {
	tables := m.list()
	out := make([]TableStats, len(tables))
	for i, t := range tables {
		out[i] = t.Stats()
	}
	return out
}

// Bytes is the estimated memory of all tables.
func (m *Manager) Bytes() int64 {
	var n int64
	for _, s := range m.Stats() {
		n += s.Bytes
	}
	return n
}

// CleanupCycles counts global sweeps.
func (m *Manager) CleanupCycles() uint64 { return m.cleanupCycles.Load() }

// Sweep removes expired entries from every table; one cleanup cycle.
func (m *Manager) Sweep() int {
	start := time.Now()
	n := 0
	for _, t := range m.list() {
		n += t.Sweep()
	}
	m.cleanupCycles.Add(1)
	m.log.WithFields(logrus.Fields{"removed": n, "duration": float64(time.Since(start).Microseconds()) / 1000}).Debug("table sweep")
	return n
}

// Shed is the emergency cleanup: expired entries first, then the least
// recently used fraction of the largest tables — those that together hold
// at least half of the tables' memory — with reason emergency. It returns
// the entries shed per table and, apart, the expired ones swept first
// (accounting QA: the log counted those as shed, the metrics as expired).
func (m *Manager) Shed(fraction float64) (shed, expired map[string]int) {
	out, expired := map[string]int{}, map[string]int{}
	tables := m.list()
	for _, t := range tables {
		if n := t.Sweep(); n > 0 {
			expired[t.Stats().Name] += n
		}
	}
	stats := make([]TableStats, len(tables))
	var total int64
	for i, t := range tables {
		stats[i] = t.Stats()
		total += stats[i].Bytes
	}
	idx := make([]int, len(tables))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return stats[idx[a]].Bytes > stats[idx[b]].Bytes })
	var covered int64
	for _, i := range idx {
		if covered*2 >= total {
			break
		}
		covered += stats[i].Bytes
		if n := tables[i].Shed(fraction, ReasonEmergency); n > 0 {
			out[stats[i].Name] += n
		}
	}
	return out, expired
}

func (m *Manager) sweepLoop(every time.Duration) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.Sweep()
		}
	}
}

// Close stops the sweep and closes every table (OnEvict sees reason
// shutdown). It is idempotent.
func (m *Manager) Close() error {
	var errs []error
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.done
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		for _, t := range m.list() {
			errs = append(errs, t.Close())
		}
	})
	return errors.Join(errs...)
}
