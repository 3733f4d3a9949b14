package sessions

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/config"
)

func standardConfig() config.Tables { return config.Defaults().Tables }

func TestManagerOwnsTables(t *testing.T) {
	t.Parallel()
	m := NewManager(ManagerOptions{})
	var shutdown atomic.Int64
	std, err := NewStandard(m, standardConfig(), StandardOptions{
		OnConnectedUserEvicted: func(_ string, _ ConnectedUser, r Reason) {
			if r == ReasonShutdown {
				shutdown.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewManagedTable(m, TableUserRoles, Options[string, string]{MaxEntries: 1}); err == nil {
		t.Fatal("duplicate table name accepted")
	}
	std.ConnectedUsers.Set("a@x.co", ConnectedUser{SocketID: "s1", Role: "agent"})
	std.UserRoles.Set("a@x.co", "agent")
	stats := m.Stats()
	if len(stats) != 4 || stats[0].Name != TableConnectedUsers || stats[0].Capacity != 50000 || stats[0].TTL != 2*time.Hour {
		t.Fatalf("stats %+v", stats)
	}
	block := m.StatsBlock()
	global := block["global"].(map[string]any)
	if global["totalMaps"] != 4 || global["totalEntries"] != 2 || global["memoryUsage"].(int64) <= 0 {
		t.Fatalf("global %v", global)
	}
	cu := block["maps"].(map[string]any)[TableConnectedUsers].(map[string]any)
	if cu["size"] != 1 || cu["hitRate"] != "0.0%" || cu["maxEntries"] != 50000 {
		t.Fatalf("connectedUsers block %v", cu)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if shutdown.Load() != 1 || std.ConnectedUsers.Len() != 0 {
		t.Fatalf("shutdown evictions %d", shutdown.Load())
	}
	if _, err := NewManagedTable(m, "late", Options[string, int]{MaxEntries: 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("table made in a closed manager: %v", err)
	}
}

func TestManagerPeriodicSweep(t *testing.T) {
	t.Parallel()
	m := NewManager(ManagerOptions{SweepInterval: 10 * time.Millisecond})
	defer m.Close()
	tb, err := NewManagedTable(m, "t", Options[string, int]{MaxEntries: 10, TTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tb.Set("a", 1)
	deadline := time.Now().Add(5 * time.Second)
	for tb.Len() != 0 || m.CleanupCycles() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("periodic sweep: len %d cycles %d", tb.Len(), m.CleanupCycles())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if tb.Stats().Evictions[ReasonExpired] != 1 {
		t.Fatalf("evictions %+v", tb.Stats().Evictions)
	}
}

func TestManagerShedsTheLargestTables(t *testing.T) {
	t.Parallel()
	m := NewManager(ManagerOptions{})
	defer m.Close()
	big, _ := NewManagedTable(m, "big", Options[int, string]{MaxEntries: 100000})
	small, _ := NewManagedTable(m, "small", Options[int, string]{MaxEntries: 1000})
	for i := 0; i < 50000; i++ {
		big.Set(i, strings.Repeat("x", 100))
	}
	for i := 0; i < 100; i++ {
		small.Set(i, "y")
	}
	shed, expired := m.Shed(0.5)
	if shed["small"] != 0 || shed["big"] < 25000 || big.Stats().Evictions[ReasonEmergency] != uint64(shed["big"]) || len(expired) != 0 {
		t.Fatalf("shed %v, expired %v", shed, expired)
	}
	if small.Len() != 100 {
		t.Fatalf("small table shed: %d", small.Len())
	}
}

// Entries already expired are swept first and said apart: what was shed is
// what the metrics count with reason emergency (accounting QA: the log
// called 10 expired entries shed).
func TestManagerShedSaysExpiredApart(t *testing.T) {
	t.Parallel()
	m := NewManager(ManagerOptions{})
	defer m.Close()
	tb, _ := NewManagedTable(m, "t", Options[int, string]{MaxEntries: 1000})
	for i := 0; i < 10; i++ {
		tb.SetTTL(i, "old", time.Millisecond)
	}
	for i := 10; i < 30; i++ {
		tb.Set(i, "new")
	}
	time.Sleep(5 * time.Millisecond)
	shed, expired := m.Shed(0.5)
	st := tb.Stats()
	if expired["t"] != 10 || shed["t"] != 10 || st.Evictions[ReasonExpired] != 10 || st.Evictions[ReasonEmergency] != 10 {
		t.Fatalf("shed %v, expired %v; evictions %v", shed, expired, st.Evictions)
	}
}

func TestCollectorExportsTables(t *testing.T) {
	t.Parallel()
	m := NewManager(ManagerOptions{})
	defer m.Close()
	if _, err := NewStandard(m, standardConfig(), StandardOptions{}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	// 4 tables × (entries, capacity, bytes, hits, misses, 5 eviction reasons) + cycles
	if n := testutil.CollectAndCount(m.Collector()); n != 4*10+1 {
		t.Fatalf("%d series", n)
	}
	want := `
# HELP chatguard_table_capacity Maximum entries of a managed table.
# TYPE chatguard_table_capacity gauge
chatguard_table_capacity{table="connectedUsers"} 50000
chatguard_table_capacity{table="conversationUsers"} 100000
chatguard_table_capacity{table="eventRateLimits"} 1e+06
chatguard_table_capacity{table="userRoles"} 100000
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "chatguard_table_capacity"); err != nil {
		t.Fatal(err)
	}
}

// watchdogFixture is a manager with one table of 1000 entries and a watchdog
// whose thresholds are given in test readings.
func watchdogFixture(t *testing.T, dir string) (*Manager, *Table[int, int], *Watchdog, *atomic.Int64, *prometheus.Registry) {
	t.Helper()
	m := NewManager(ManagerOptions{})
	t.Cleanup(func() { m.Close() })
	var emergency atomic.Int64
	tb, err := NewManagedTable(m, "t", Options[int, int]{MaxEntries: 10000, OnEvict: func(_, _ int, r Reason) {
		if r == ReasonEmergency {
			emergency.Add(1)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		tb.Set(i, i)
	}
	reg := prometheus.NewRegistry()
	clk := newClock()
	w, err := NewWatchdog(WatchdogOptions{
		Manager: m,
		Thresholds: Thresholds{TableWarning: 100, TableCritical: 200, HeapWarning: 0.7, HeapCritical: 0.85,
			UsersWarning: 40000, UsersCritical: 50000},
		ShedFraction: 0.2, Cooldown: time.Minute,
		ProfileDir: filepath.Join(dir, "profiles"), MaxProfiles: 3, CPUProfile: 20 * time.Millisecond,
		AlertFile: filepath.Join(dir, "alerts.jsonl"), Registerer: reg, Now: clk.Now,
		MemoryLimit: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return m, tb, w, &emergency, reg
}

// Without a memory limit the heap is not judged, and its levels are absent
// as for any check that is off (QA: levels at 0.7 and 0.85 beside a ratio
// that stays 0 read as a healthy heap).
func TestWatchdogWithoutAMemoryLimitHasNoHeapLevels(t *testing.T) {
	t.Parallel()
	m := NewManager(ManagerOptions{})
	t.Cleanup(func() { m.Close() })
	reg := prometheus.NewRegistry()
	w, err := NewWatchdog(WatchdogOptions{
		Manager:    m,
		Thresholds: Thresholds{TableWarning: 100, TableCritical: 200, HeapWarning: 0.7, HeapCritical: 0.85, UsersWarning: 40, UsersCritical: 50},
		Registerer: reg, MemoryLimit: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	levels := 0
	for _, f := range fams {
		if f.GetName() != "chatguard_memory_pressure_level" {
			continue
		}
		for _, mt := range f.GetMetric() {
			levels++
			for _, l := range mt.GetLabel() {
				if l.GetName() == "resource" && l.GetValue() == ResourceHeap {
					t.Errorf("a heap level without a memory limit: %v", mt)
				}
			}
		}
	}
	if levels != 4 {
		t.Errorf("%d levels, want the table's and the users' 2 each", levels)
	}
}

func TestWatchdogLevels(t *testing.T) {
	// Not parallel: CPU profiles are process-wide.
	dir := t.TempDir()
	_, tb, w, emergency, reg := watchdogFixture(t, dir)

	if a := w.Check(Reading{TableBytes: 50, HeapBytes: 100, MemoryLimit: 1000, ConnectedUsers: 10}); len(a) != 0 {
		t.Fatalf("alerts below thresholds: %+v", a)
	}
	a := w.Check(Reading{TableBytes: 150, HeapBytes: 750, MemoryLimit: 1000, ConnectedUsers: 45000})
	if len(a) != 3 || emergency.Load() != 0 {
		t.Fatalf("warnings: %+v, emergency %d", a, emergency.Load())
	}
	for _, al := range a {
		if al.Severity != SeverityWarning || al.RequiresAttention {
			t.Fatalf("warning alert %+v", al)
		}
	}
	if a[0].Type != "WARNING_MEMORY_USAGE" || a[0].Current != 150 || a[0].Threshold != 100 || a[0].Ratio != "1.50" {
		t.Fatalf("table alert %+v", a[0])
	}
	if a[1].Type != "WARNING_HEAP_USAGE" || a[1].Threshold != 700 {
		t.Fatalf("heap alert %+v", a[1])
	}

	// Connected users alone never trigger the emergency cleanup.
	a = w.Check(Reading{ConnectedUsers: 60000})
	if len(a) != 1 || a[0].Type != "CRITICAL_CONNECTED_USERS" || !a[0].RequiresAttention || emergency.Load() != 0 {
		t.Fatalf("users critical: %+v, emergency %d", a, emergency.Load())
	}

	// A critical table reading sheds 20 % of the table, once per cooldown.
	a = w.Check(Reading{TableBytes: 250})
	if len(a) != 1 || a[0].Type != "CRITICAL_MEMORY_USAGE" {
		t.Fatalf("critical: %+v", a)
	}
	if n := emergency.Load(); n < 200 || n > 200+int64(len(tb.shards)) {
		t.Fatalf("emergency evictions %d of 1000 at 20%%", n)
	}
	w.Check(Reading{TableBytes: 250})
	if n := emergency.Load(); n > 200+int64(len(tb.shards)) {
		t.Fatalf("cooldown ignored: %d evictions", n)
	}

	// One JSON line per alert, with the seed's fields.
	f, err := os.Open(filepath.Join(dir, "alerts.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := 0
	for sc := bufio.NewScanner(f); sc.Scan(); lines++ {
		var got map[string]any
		if err := json.Unmarshal(sc.Bytes(), &got); err != nil {
			t.Fatalf("alert line %q: %v", sc.Text(), err)
		}
		for _, k := range []string{"type", "current", "threshold", "ratio", "severity", "requiresAttention"} {
			if _, ok := got[k]; !ok {
				t.Fatalf("alert line lacks %s: %s", k, sc.Text())
			}
		}
	}
	if lines != 3+1+1+1 {
		t.Fatalf("%d alert lines", lines)
	}
	if got := testutil.ToFloat64(w.alerts.WithLabelValues("CRITICAL_MEMORY_USAGE", SeverityCritical)); got != 2 {
		t.Fatalf("alerts_total %v", got)
	}
	if got := testutil.ToFloat64(w.emerg); got != 1 {
		t.Fatalf("emergency cleanups %v", got)
	}
	// The configured levels, in the ratio's unit, for the alert rules to
	// compare with (QA: the shipped rules had the defaults written in).
	for _, lv := range []struct {
		resource, level string
		want            float64
	}{
		{ResourceTableMemory, "warning", 0.5}, {ResourceTableMemory, "critical", 1},
		{ResourceHeap, "warning", 0.7}, {ResourceHeap, "critical", 0.85},
		{ResourceConnectedUsers, "warning", 0.8}, {ResourceConnectedUsers, "critical", 1},
	} {
		if got := testutil.ToFloat64(w.level.WithLabelValues(lv.resource, lv.level)); got != lv.want {
			t.Errorf("level %s/%s = %v, want %v", lv.resource, lv.level, got, lv.want)
		}
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}

	// A heap and a CPU profile were written.
	w.Close() // waits for the CPU profile
	files, _ := filepath.Glob(filepath.Join(dir, "profiles", "*.pprof"))
	var heap, cpu int
	for _, f := range files {
		switch {
		case strings.Contains(f, "heap-"):
			heap++
		case strings.Contains(f, "cpu-"):
			cpu++
		}
	}
	if heap != 1 || cpu != 1 {
		t.Fatalf("profiles %v", files)
	}
}

func TestWatchdogKeepsFewProfiles(t *testing.T) {
	dir := t.TempDir()
	pdir := filepath.Join(dir, "profiles")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"heap-20250101T000000.000.pprof", "cpu-20250101T000000.000.pprof", "heap-20250102T000000.000.pprof", "keep.txt"} {
		if err := os.WriteFile(filepath.Join(pdir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, _, w, _, _ := watchdogFixture(t, dir)
	w.Check(Reading{TableBytes: 1000})
	w.Close()
	files, _ := filepath.Glob(filepath.Join(pdir, "*"))
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	if len(names) != 4 || strings.Contains(strings.Join(names, " "), "20250101") { // the 3 newest profiles + keep.txt
		t.Fatalf("profiles kept: %v", names)
	}
}

func TestWatchdogLoop(t *testing.T) {
	t.Parallel()
	m := NewManager(ManagerOptions{})
	defer m.Close()
	var reads atomic.Int64
	w, err := NewWatchdog(WatchdogOptions{
		Manager: m, Interval: 5 * time.Millisecond,
		Thresholds: Thresholds{TableWarning: 1, TableCritical: 2, HeapWarning: .7, HeapCritical: .85, UsersWarning: 1, UsersCritical: 2},
		Read:       func() Reading { reads.Add(1); return Reading{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for reads.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	w.Close()
	w.Close()
	if reads.Load() < 3 {
		t.Fatalf("loop read %d times", reads.Load())
	}
}

func TestCgroupMemoryLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("v2/self", "0::/kubepods/pod1/c1\n")
	write("v2/root/kubepods/pod1/c1/memory.max", "536870912\n")
	write("v2max/self", "0::/x\n")
	write("v2max/root/x/memory.max", "max\n")
	write("v1/self", "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n")
	write("v1/root/memory/docker/abc/memory.limit_in_bytes", "268435456\n")
	write("v1unl/self", "12:memory:/\n")
	write("v1unl/root/memory/memory.limit_in_bytes", "9223372036854771712\n")
	for _, tc := range []struct {
		dir  string
		want int64
	}{{"v2", 536870912}, {"v2max", 0}, {"v1", 268435456}, {"v1unl", 0}, {"missing", 0}} {
		got := cgroupMemoryLimit(filepath.Join(dir, tc.dir, "self"), filepath.Join(dir, tc.dir, "root"))
		if got != tc.want {
			t.Errorf("%s: %d, want %d", tc.dir, got, tc.want)
		}
	}
}

// The CPU profile being recorded is never pruned, and of an emergency's two
// profiles it is the newer: with max_profiles 1 it is the one kept (QA: it
// was deleted while written, and only the heap profile stayed).
func TestWatchdogKeepsTheCPUProfileItRecords(t *testing.T) {
	dir := t.TempDir()
	m := NewManager(ManagerOptions{})
	t.Cleanup(func() { m.Close() })
	tb, err := NewManagedTable(m, "t", Options[int, int]{MaxEntries: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		tb.Set(i, i)
	}
	pdir := filepath.Join(dir, "profiles")
	w, err := NewWatchdog(WatchdogOptions{
		Manager: m,
		Thresholds: Thresholds{TableWarning: 100, TableCritical: 200, HeapWarning: 0.7, HeapCritical: 0.85,
			UsersWarning: 40000, UsersCritical: 50000},
		ShedFraction: 0.2, Cooldown: time.Minute,
		ProfileDir: pdir, MaxProfiles: 1, CPUProfile: 200 * time.Millisecond,
		Registerer: prometheus.NewRegistry(), Now: newClock().Now, MemoryLimit: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Check(Reading{TableBytes: 1000})
	mid, _ := filepath.Glob(filepath.Join(pdir, "cpu-*.pprof"))
	if len(mid) != 1 {
		t.Errorf("while recording: CPU profiles %v, want the one being written", mid)
	}
	w.Close() // waits for the CPU profile
	files, _ := filepath.Glob(filepath.Join(pdir, "*.pprof"))
	if len(files) != 1 || !strings.Contains(files[0], "cpu-") {
		t.Fatalf("profiles kept: %v, want the CPU profile alone", files)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Size() == 0 {
		t.Errorf("the CPU profile is empty: %v", err)
	}
}

func TestWatchdogRefusesAnUnwritableAlertFile(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m := NewManager(ManagerOptions{})
	defer m.Close()
	// A path under a regular file can never be created, whoever runs the test.
	w, err := NewWatchdog(WatchdogOptions{Manager: m, AlertFile: filepath.Join(notDir, "alerts.jsonl"), Registerer: prometheus.NewRegistry()})
	if err == nil {
		w.Close()
		t.Fatal("NewWatchdog accepted an alert file under a regular file")
	}
	if !strings.Contains(err.Error(), "alert file (alerts.path") {
		t.Fatalf("error %q does not name alerts.path", err)
	}
	good := filepath.Join(dir, "sub", "alerts.jsonl")
	w, err = NewWatchdog(WatchdogOptions{Manager: m, AlertFile: good, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if fi, err := os.Stat(good); err != nil || fi.Size() != 0 {
		t.Fatalf("alert file after start: %v, %v (want an empty file)", fi, err)
	}
}

// A critical heap reading is the seed's "Log + GC forzado": a collection
// that returns memory to the OS, and profiles, once per cooldown. It sheds
// nothing: before, every cooldown with the heap high shed 20 % of the
// tables, connected users included, whatever share of the heap they were
// (review: 1,864 of 2,000 users in an hour of readings).
func TestWatchdogHeapCriticalCollectsWithoutShedding(t *testing.T) {
	// Not parallel: CPU profiles are process-wide.
	dir := t.TempDir()
	_, tb, w, emergency, _ := watchdogFixture(t, dir)
	var logs bytes.Buffer
	l := logrus.New()
	l.SetOutput(&logs)
	l.SetFormatter(&logrus.JSONFormatter{})
	w.log = logrus.NewEntry(l)
	for range 3 {
		a := w.Check(Reading{HeapBytes: 900, MemoryLimit: 1000})
		if len(a) != 1 || a[0].Type != "CRITICAL_HEAP_USAGE" {
			t.Fatalf("alerts %+v", a)
		}
	}
	if n := emergency.Load(); n != 0 || tb.Len() != 1000 {
		t.Fatalf("a heap reading shed %d entries (%d left)", n, tb.Len())
	}
	if got := testutil.ToFloat64(w.emerg); got != 1 {
		t.Fatalf("emergency cleanups %v, want 1 (once per cooldown)", got)
	}
	var done map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "emergency cleanup done" {
			done = m
		}
	}
	if done == nil || done["action"] != "gc" {
		t.Fatalf("no emergency cleanup line with action gc in:\n%s", logs.String())
	}
	// A critical table reading in the same check still sheds.
	w.lastEmergency = time.Time{}
	w.Check(Reading{TableBytes: 250, HeapBytes: 900, MemoryLimit: 1000})
	if n := emergency.Load(); n < 200 {
		t.Fatalf("table critical shed %d", n)
	}
	w.Close()
}

// The heap reading is what a collection cannot free: garbage does not
// raise it (before, it was all the runtime mapped less what it returned to
// the OS, garbage and free spans included).
func TestGoRetainedBytesIgnoresGarbage(t *testing.T) {
	// Not parallel: it measures the process's heap.
	runtime.GC()
	base := goRetainedBytes()
	keep := make([]byte, 64<<20)
	for i := range keep {
		keep[i] = 1
	}
	runtime.GC()
	held := goRetainedBytes()
	if d := held - base; d < 56<<20 || d > 80<<20 {
		t.Fatalf("64 MiB held moved the reading by %d MiB", d>>20)
	}
	var sink []byte
	for range 32 {
		sink = make([]byte, 8<<20)
		sink[len(sink)-1] = 1
	}
	runtime.GC()
	if got := goRetainedBytes(); got > held+16<<20 {
		t.Fatalf("256 MiB of garbage raised the reading from %d to %d MiB", held>>20, got>>20)
	}
	runtime.KeepAlive(keep)
	_ = sink
}

// A collection for the heap does not hold off the shed the tables need
// next: each action has its own cooldown (review: tables critical right
// after a heap-only collection shed nothing for a cooldown).
func TestWatchdogHeapCollectionDoesNotDelayTheShed(t *testing.T) {
	// Not parallel: CPU profiles are process-wide.
	_, tb, w, emergency, _ := watchdogFixture(t, t.TempDir())
	w.Check(Reading{TableBytes: 150, HeapBytes: 900, MemoryLimit: 1000}) // heap critical, tables warning
	if emergency.Load() != 0 {
		t.Fatal("a heap reading shed")
	}
	w.Check(Reading{TableBytes: 250, HeapBytes: 900, MemoryLimit: 1000}) // tables critical now
	if n := emergency.Load(); n == 0 {
		t.Fatalf("tables critical right after a heap-only collection: shed nothing (%d entries left)", tb.Len())
	}
	w.Close()
}
