package limiter

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chatguard/chatguard/sessions"
)

// fullTable is a table of n live limit entries, as a store in Redis mode
// mirrors every active key.
func fullTable(b *testing.B, n int) *sessions.StateTable {
	b.Helper()
	tb, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: n})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tb.Close() })
	m := NewMemoryStore(tb)
	for i := range n {
		m.Mirror("rl:user:"+strconv.Itoa(i)+"@example.com", 10*time.Minute)
	}
	return tb
}

// BenchmarkPersistSave is one periodic save of a table of 1 M keys.
func BenchmarkPersistSave(b *testing.B) {
	tb := fullTable(b, 1_000_000)
	p, err := NewPersister(PersistOptions{Table: tb, Path: filepath.Join(b.TempDir(), "rl.json"), Logger: discardLog()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := p.Save(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPersistLoad is a start with the file of a table of 1 M keys.
func BenchmarkPersistLoad(b *testing.B) {
	tb := fullTable(b, 1_000_000)
	path := filepath.Join(b.TempDir(), "rl.json")
	p, err := NewPersister(PersistOptions{Table: tb, Path: path, Logger: discardLog()})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Save(); err != nil {
		b.Fatal(err)
	}
	into, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 1_000_000})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { into.Close() })
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := NewPersister(PersistOptions{Table: into, Path: path, Logger: discardLog()}); err != nil {
			b.Fatal(err)
		}
	}
}
