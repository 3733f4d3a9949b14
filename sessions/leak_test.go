package sessions

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMemoryLeakChurn is the seed's memory-leak test, shortened: unique keys
// churn through the seed's tables, at their default sizes, for
// CHATGUARD_LEAK_DURATION (2 s by default; `make test-memory-leak` runs
// minutes). Once the tables are full, the live heap must stay within a band
// instead of growing with the keys pushed through.
func TestMemoryLeakChurn(t *testing.T) {
	duration := 2 * time.Second
	if v := os.Getenv("CHATGUARD_LEAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CHATGUARD_LEAK_DURATION: %v", err)
		}
		duration = d
	}
	m := NewManager(ManagerOptions{})
	defer m.Close()
	std, err := NewStandard(m, standardConfig(), StandardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Fill every table first, so that what follows is steady state (under
	// -race the churn alone would take longer than the test to fill them).
	for i := 0; i < std.EventRateLimits.Cap(); i++ {
		k := "warm:" + strconv.Itoa(i)
		std.EventRateLimits.Set(k, int64(i))
		if i < std.UserRoles.Cap() {
			std.UserRoles.Set(k, "agent")
		}
		if i < std.ConnectedUsers.Cap() {
			std.ConnectedUsers.Set(k, ConnectedUser{SocketID: k, Role: "basic"})
		}
		if i < std.ConversationUsers.Cap() {
			std.ConversationUsers.Set(k, oneMember(k))
		}
	}

	var pushed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				if i%1024 == 0 {
					select {
					case <-stop:
						return
					default:
					}
				}
				k := fmt.Sprintf("w%d:%d", w, i)
				std.EventRateLimits.Set(k, int64(i))
				std.UserRoles.Set(k, "agent")
				std.ConnectedUsers.Set(k, ConnectedUser{SocketID: k, Role: "basic"})
				std.ConversationUsers.Set(k, oneMember(k))
				std.EventRateLimits.Get(k)
				pushed.Add(4)
			}
		}(w)
	}

	samples := 10
	var heap []uint64
	for s := 0; s < samples; s++ {
		time.Sleep(duration / time.Duration(samples))
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heap = append(heap, ms.HeapAlloc)
		t.Logf("sample %2d: live heap %6.1f MiB, %d entries pushed, %d in tables", s, float64(ms.HeapAlloc)/(1<<20), pushed.Load(), sumSize(m))
	}
	close(stop)
	wg.Wait()

	// The first sample may still include the other tables filling up.
	lo, hi := heap[1], heap[1]
	for _, h := range heap[1:] {
		lo, hi = min(lo, h), max(hi, h)
	}
	band := float64(hi-lo) / float64(lo)
	t.Logf("live heap after warm-up: %.1f–%.1f MiB (band %.1f%%) after %d entries pushed through tables of %d",
		float64(lo)/(1<<20), float64(hi)/(1<<20), 100*band, pushed.Load(), capacity(m))
	if band > 0.10 {
		t.Fatalf("live heap grew by %.1f%% under churn", 100*band)
	}
	if int64(capacity(m)) > pushed.Load() && duration >= time.Minute {
		t.Fatalf("only %d entries pushed: the tables never turned over", pushed.Load())
	}
}

func sumSize(m *Manager) int {
	n := 0
	for _, s := range m.Stats() {
		n += s.Size
	}
	return n
}

func capacity(m *Manager) int {
	n := 0
	for _, s := range m.Stats() {
		n += s.Capacity
	}
	return n
}

// oneMember is a conversationUsers value holding user, as Join makes it.
func oneMember(user string) Members {
	return Members{set: map[string]struct{}{user: {}}, n: 1, bytes: memberBytes + len(user), peak: 1}
}
