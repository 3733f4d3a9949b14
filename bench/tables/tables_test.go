// Package tables benchmarks chatguard's sessions.Table against the peers a
// user would otherwise pick — hashicorp/golang-lru/v2's expirable LRU and
// jellydator/ttlcache/v3 — doing the same work at 1 M entries, in one run:
// go test -bench . -benchmem ./tables/
package tables

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/jellydator/ttlcache/v3"

	"github.com/chatguard/chatguard/sessions"
)

const entries = 1 << 20

var (
	keys  = makeKeys("user", "@example.com:send-message")
	fresh = makeKeys("new", "")
)

func makeKeys(prefix, suffix string) []string {
	k := make([]string, entries)
	for i := range k {
		k[i] = prefix + strconv.Itoa(i) + suffix
	}
	return k
}

// cache is the work every contender does.
type cache interface {
	Get(k string) bool
	Set(k string, v int64)
	Touch(k string) bool
	Close()
}

type chatguard struct {
	t *sessions.Table[string, int64]
}

func (c chatguard) Get(k string) bool     { _, ok := c.t.Get(k); return ok }
func (c chatguard) Set(k string, v int64) { c.t.Set(k, v) }
func (c chatguard) Touch(k string) bool   { return c.t.Touch(k) }
func (c chatguard) Close()                { _ = c.t.Close() }

type lru struct{ c *expirable.LRU[string, int64] }

func (c lru) Get(k string) bool     { _, ok := c.c.Get(k); return ok }
func (c lru) Set(k string, v int64) { c.c.Add(k, v) }

// Touch: expirable has none; a Get moves the entry, re-adding extends its TTL.
func (c lru) Touch(k string) bool {
	v, ok := c.c.Get(k)
	if ok {
		c.c.Add(k, v)
	}
	return ok
}
func (c lru) Close() { c.c.Purge() }

type ttl struct {
	c *ttlcache.Cache[string, int64]
}

func (c ttl) Get(k string) bool     { return c.c.Get(k) != nil }
func (c ttl) Set(k string, v int64) { c.c.Set(k, v, ttlcache.DefaultTTL) }
func (c ttl) Touch(k string) bool   { c.c.Touch(k); return true }
func (c ttl) Close()                { c.c.DeleteAll() }

var contenders = []struct {
	name string
	make func() cache
}{
	{"chatguard", func() cache {
		t, err := sessions.NewTable(sessions.Options[string, int64]{MaxEntries: entries, TTL: 10 * time.Minute})
		if err != nil {
			panic(err)
		}
		return chatguard{t}
	}},
	{"golang-lru-expirable", func() cache {
		return lru{expirable.NewLRU[string, int64](entries, nil, 10*time.Minute)}
	}},
	{"ttlcache", func() cache {
		return ttl{ttlcache.New[string, int64](ttlcache.WithTTL[string, int64](10*time.Minute), ttlcache.WithCapacity[string, int64](entries))}
	}},
}

func filled(mk func() cache) cache {
	c := mk()
	for i, k := range keys {
		c.Set(k, int64(i))
	}
	return c
}

// BenchmarkParallel: each contender at 1 M entries, every goroutine (one per
// CPU) picking keys at random: Get, Touch, Set of an existing key, and Set of
// a new key (which evicts).
func BenchmarkParallel(b *testing.B) {
	for _, ct := range contenders {
		c := filled(ct.make)
		var seed atomic.Uint64
		run := func(op string, f func(i uint64)) {
			b.Run(op+"/"+ct.name, func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := seed.Add(0x9E3779B97F4A7C15)
					for pb.Next() {
						i = i*6364136223846793005 + 1442695040888963407
						f(i >> 44 & (entries - 1))
					}
				})
			})
		}
		run("Get", func(i uint64) { c.Get(keys[i]) })
		run("Touch", func(i uint64) { c.Touch(keys[i]) })
		run("SetExisting", func(i uint64) { c.Set(keys[i], int64(i)) })
		run("SetNew", func(i uint64) { c.Set(fresh[i], int64(i)) })
		c.Close()
		runtime.GC()
	}
}

// BenchmarkMemory: live heap per entry at 1 M entries, beyond the key's
// string header and the value (the key's bytes are shared with the keys slice).
func BenchmarkMemory(b *testing.B) {
	for _, ct := range contenders {
		b.Run(ct.name, func(b *testing.B) {
			for n := 0; n < b.N; n++ {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				c := filled(ct.make)
				runtime.GC()
				runtime.ReadMemStats(&after)
				per := float64(after.HeapAlloc-before.HeapAlloc) / entries
				b.ReportMetric(per-(16+8), "overhead-B/entry")
				runtime.KeepAlive(c)
				c.Close()
			}
		})
	}
}
