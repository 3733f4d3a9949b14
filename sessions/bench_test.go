package sessions

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

const benchEntries = 1 << 20

func benchKeys() []string {
	keys := make([]string, benchEntries)
	for i := range keys {
		keys[i] = "user" + strconv.Itoa(i) + "@example.com:send-message"
	}
	return keys
}

func filledTable(b *testing.B, keys []string) *Table[string, int64] {
	tb := mustTable(b, Options[string, int64]{MaxEntries: benchEntries, TTL: 10 * time.Minute})
	for i, k := range keys {
		tb.Set(k, int64(i))
	}
	return tb
}

// BenchmarkTable measures the table at 1 M entries (the eventRateLimits
// size): parallel Get, Touch and Set of existing keys, and Set of new keys
// that each evict the least recently used entry.
func BenchmarkTable(b *testing.B) {
	keys := benchKeys()
	tb := filledTable(b, keys)
	var next atomic.Uint64
	run := func(name string, op func(i uint64)) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := next.Add(1 << 32)
				for pb.Next() {
					i = i*6364136223846793005 + 1442695040888963407
					op(i)
				}
			})
		})
	}
	run("Get", func(i uint64) { tb.Get(keys[i>>44&(benchEntries-1)]) })
	run("Touch", func(i uint64) { tb.Touch(keys[i>>44&(benchEntries-1)]) })
	run("SetExisting", func(i uint64) { tb.Set(keys[i>>44&(benchEntries-1)], int64(i)) })
	fresh := make([]string, benchEntries)
	for i := range fresh {
		fresh[i] = "new" + strconv.Itoa(i)
	}
	run("SetEvicting", func(i uint64) { tb.Set(fresh[i>>44&(benchEntries-1)], int64(i)) })
}

// BenchmarkTableMemory reports the bytes per entry beyond key and value at
// 1 M entries: the live heap after filling, minus the heap of the keys and
// values alone, divided by the entries.
func BenchmarkTableMemory(b *testing.B) {
	keys := benchKeys()
	for n := 0; n < b.N; n++ {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		tb := filledTable(b, keys)
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		// key (string header 16 B; the contents are shared with keys) + value (8 B)
		const keyValue = 16 + 8
		perEntry := float64(after.HeapAlloc-before.HeapAlloc) / benchEntries
		b.ReportMetric(perEntry-keyValue, "overhead-B/entry")
		b.ReportMetric(perEntry, "B/entry")
		runtime.KeepAlive(tb)
		runtime.KeepAlive(keys)
	}
}
