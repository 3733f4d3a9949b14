// Package memstats reads the process's memory figures cheaply and returns
// memory to the operating system on request (the seed's SIGUSR2 runbook step).
package memstats

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
)

// Heap holds the figures /api/internal/stats reports, in bytes.
type Heap struct {
	HeapUsed  uint64 `json:"heapUsed"`
	HeapTotal uint64 `json:"heapTotal"`
	RSS       uint64 `json:"rss"`
}

// Read returns the live heap (objects), the heap the runtime holds (objects,
// unused and free spans not yet returned) and the resident set size.
func Read() Heap {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	metrics.Read(s)
	var h Heap
	h.HeapUsed = value(s[0])
	h.HeapTotal = h.HeapUsed + value(s[1]) + value(s[2])
	h.RSS = rss()
	return h
}

func value(s metrics.Sample) uint64 {
	if s.Value.Kind() == metrics.KindUint64 {
		return s.Value.Uint64()
	}
	return 0
}

// rss reads VmRSS from /proc/self/status; 0 where there is none.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n * 1024
			}
		}
	}
	return 0
}

// FreeOSMemory runs a garbage collection and returns as much memory to the
// OS as possible, reporting the figures before and after.
func FreeOSMemory() (before, after Heap) {
	before = Read()
	debug.FreeOSMemory()
	return before, Read()
}
