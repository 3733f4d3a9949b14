// Package limiter benchmarks chatguard's rate-limit stores against the peers
// a user would otherwise pick, doing the same work in the same run:
//   - the memory store against golang.org/x/time/rate (one rate.Limiter per
//     key in a map under a mutex) at 1 M keys;
//   - the Redis store against go-redis/redis_rate v10 on the same Redis
//     (a redis-server the benchmark starts on a free port).
//
// cd bench && go test -run '^$' -bench . -benchmem ./limiter/
package limiter

import (
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/chatguard/chatguard/limiter"
	"github.com/chatguard/chatguard/sessions"
)

const keys = 1 << 20

var sink atomic.Uint64

// keyOf writes key i into buf, as the proxy builds a request's key: in a
// buffer of its own, hot in cache, not in a table of a million strings.
func keyOf(buf []byte, i uint64) []byte {
	buf = append(buf[:0], "messages|user=user"...)
	buf = strconv.AppendUint(buf, i, 10)
	return append(buf, "@example.com"...)
}

var keyNames = func() []string {
	k := make([]string, keys)
	var buf []byte
	for i := range k {
		buf = keyOf(buf, uint64(i))
		k[i] = string(buf)
	}
	return k
}()

// A generous limit: the benchmark measures the decision, not rejections.
var lim = limiter.Limit{Rate: 1_000_000, Period: time.Minute}

type xrate struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func (x *xrate) allow(k string) bool {
	x.mu.Lock()
	l, ok := x.m[k]
	if !ok {
		l = rate.NewLimiter(rate.Every(time.Minute/1_000_000), 1_000_000)
		x.m[strings.Clone(k)] = l
	}
	x.mu.Unlock()
	return l.Allow()
}

// parallel runs op on keys picked at random among the million, each built
// afresh in the goroutine's buffer (op must not keep the string).
func parallel(b *testing.B, op func(k string)) {
	var seed atomic.Uint64
	b.ReportAllocs()
	runtime.GC() // the fill's garbage is not the decisions' cost
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := seed.Add(0x9E3779B97F4A7C15)
		buf := make([]byte, 0, 64)
		for pb.Next() {
			i = i*6364136223846793005 + 1442695040888963407
			buf = keyOf(buf, i>>44&(keys-1))
			op(unsafe.String(&buf[0], len(buf)))
		}
	})
}

// BenchmarkMemory: the memory store and x/time/rate, each filled with the
// million keys first; "harness" is the cost of picking and building a key
// alone, to read the others against.
func BenchmarkMemory(b *testing.B) {
	b.Run("harness", func(b *testing.B) { parallel(b, func(string) {}) })
	// The machine's floor: one dependent random read in 64 MiB (what a
	// decision's one cache miss costs), one chain per goroutine.
	b.Run("random-read-64MiB", func(b *testing.B) {
		const lines = 1 << 20 // 64-byte lines
		next := make([]uint64, lines*8)
		perm := rand.Perm(lines)
		for i := range perm {
			next[perm[i]*8] = uint64(perm[(i+1)%lines] * 8)
		}
		var seed atomic.Uint64
		runtime.GC()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			j := uint64(perm[seed.Add(1)*7919%lines] * 8)
			for pb.Next() {
				j = next[j]
			}
			sink.Add(j)
		})
	})
	tb, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 2 * keys})
	if err != nil {
		b.Fatal(err)
	}
	defer tb.Close()
	store := limiter.NewMemoryStore(tb)
	ctx := context.Background()
	for _, k := range keyNames {
		store.Allow(ctx, k, lim)
	}
	b.Run("chatguard", func(b *testing.B) {
		parallel(b, func(k string) { store.Allow(ctx, k, lim) })
	})
	x := &xrate{m: make(map[string]*rate.Limiter, keys)}
	for _, k := range keyNames {
		x.allow(k)
	}
	b.Run("x-time-rate", func(b *testing.B) {
		parallel(b, func(k string) { x.allow(k) })
	})
}

// startRedis starts a redis-server on a free port; it returns its address
// and its pid (for its CPU time).
func startRedis(b *testing.B) (string, int) {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		b.Skip("redis-server:", err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("redis-cli", "-p", fmt.Sprint(port), "ping").Output()
		if strings.TrimSpace(string(out)) == "PONG" {
			return addr, cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			b.Fatal("redis-server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkRedis runs each store with 8 concurrent callers (the issue's
// p99 condition) and with 64 (a busy proxy: 64 requests waiting on their
// decisions at once); it reports p99 latency per decision besides ns/op
// (wall time per decision over all callers). Callers are SetParallelism ×
// GOMAXPROCS goroutines.
func BenchmarkRedis(b *testing.B) {
	addr, redisPid := startRedis(b)
	ctx := context.Background()
	client, err := limiter.NewRedisClient("redis://"+addr, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	store := limiter.NewRedisStore(client, "chatguard:rl:", time.Second)
	defer store.Close()
	peer := redis_rate.NewLimiter(redis.NewClient(&redis.Options{Addr: addr}))
	procs := runtime.GOMAXPROCS(0)
	run := func(name string, callers int, op func(k string) error) {
		b.Run(fmt.Sprintf("%s/callers=%d", name, callers), func(b *testing.B) {
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(max(callers/procs, 1))
			var seed atomic.Uint64
			b.ReportAllocs()
			redis0, self0 := cpuTime(redisPid), selfCPU()
			b.RunParallel(func(pb *testing.PB) {
				i := seed.Add(0x9E3779B97F4A7C15)
				var mine []time.Duration
				for pb.Next() {
					i = i*6364136223846793005 + 1442695040888963407
					start := time.Now()
					if err := op(keyNames[i>>44&(keys-1)]); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(start))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			redis1, self1 := cpuTime(redisPid), selfCPU()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			}
			// Where the two cores went: Redis's CPU and this process's
			// (callers, client library, store), per decision.
			if redis0 >= 0 && redis1 >= 0 {
				b.ReportMetric(float64((redis1-redis0).Microseconds())/float64(b.N), "redis-cpu-µs/op")
			}
			b.ReportMetric(float64((self1-self0).Microseconds())/float64(b.N), "self-cpu-µs/op")
		})
	}
	// Interleaved, so that both stores see the same machine.
	for _, callers := range []int{8, 64} {
		run("chatguard", callers, func(k string) error { _, err := store.Allow(ctx, k, lim); return err })
		run("redis_rate", callers, func(k string) error {
			_, err := peer.Allow(ctx, k, redis_rate.Limit{Rate: 1_000_000, Period: time.Minute, Burst: 1_000_000})
			return err
		})
	}
}

// cpuTime is the user+system CPU time of process pid so far, from
// /proc/pid/stat (clock ticks of 10 ms); -1 when it cannot be read.
func cpuTime(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(raw)
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return -1
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// selfCPU is this process's user+system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRedisInFlight is what the store could reach with 8 decisions in
// flight at most (BenchmarkRedis's 8 callers) if handing decisions to a
// flusher and answers back cost nothing: conns goroutines, each on a
// connection of its own, send batch keys at a time through the store's
// script and wait for the answer, no queue between them (conns × batch = 8).
// "gcra" runs the store's script; "empty" a script that only answers, so
// that its rows are the round trips alone. ns/op is wall time per decision.
func BenchmarkRedisInFlight(b *testing.B) {
	addr, _ := startRedis(b)
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 16})
	defer client.Close()
	empty := redis.NewScript(`local out = {} for i = 1, 4 * #KEYS do out[i] = 0 end return out`)
	scripts := []struct {
		name   string
		script *redis.Script
	}{{"gcra", limiter.GCRAScript}, {"empty", empty}}
	interval := lim.Period.Microseconds() / int64(lim.Rate)
	for _, s := range scripts {
		if err := s.script.Load(ctx, client).Err(); err != nil {
			b.Fatal(err)
		}
		for _, conns := range []int{8, 4, 2, 1} {
			batch := 8 / conns
			b.Run(fmt.Sprintf("%s/conns=%d,batch=%d", s.name, conns, batch), func(b *testing.B) {
				var left atomic.Int64
				left.Store(int64(b.N))
				var wg sync.WaitGroup
				b.ResetTimer()
				for g := 0; g < conns; g++ {
					wg.Add(1)
					go func(seed uint64) {
						defer wg.Done()
						conn := client.Conn()
						defer conn.Close()
						batchKeys := make([]string, batch)
						args := make([]any, 0, 3*batch)
						i := seed
						for left.Add(-int64(batch)) > -int64(batch) {
							args = args[:0]
							for j := range batchKeys {
								i = i*6364136223846793005 + 1442695040888963407
								batchKeys[j] = "chatguard:rl:" + keyNames[i>>44&(keys-1)]
								args = append(args, interval, interval*int64(lim.Rate), 0)
							}
							if err := s.script.EvalSha(ctx, conn, batchKeys, args...).Err(); err != nil {
								b.Error(err)
								return
							}
						}
					}(uint64(g+1) * 0x9E3779B97F4A7C15)
				}
				wg.Wait()
			})
		}
	}
}
