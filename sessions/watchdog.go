package sessions

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/memstats"
)

// Resources the watchdog watches: the label of chatguard_memory_pressure_ratio.
const (
	ResourceTableMemory    = "table_memory"
	ResourceHeap           = "heap"
	ResourceConnectedUsers = "connected_users"
)

// Severities.
const (
	SeverityWarning  = "WARNING"
	SeverityCritical = "CRITICAL"
)

// Reading is one look at the figures the watchdog judges.
type Reading struct {
	// TableBytes is the managed tables' estimated memory.
	TableBytes int64
	// HeapBytes is the Go memory a collection cannot give back: the live
	// heap as of the last GC, goroutine stacks and the runtime's own.
	HeapBytes int64
	// MemoryLimit is what HeapBytes is compared with; 0 = unknown (no heap alerts).
	MemoryLimit int64
	// ConnectedUsers is the size of the connectedUsers table.
	ConnectedUsers int
}

// Alert has the seed's fields.
type Alert struct {
	Time              time.Time `json:"time"`
	Type              string    `json:"type"`
	Resource          string    `json:"resource"`
	Current           int64     `json:"current"`
	Threshold         int64     `json:"threshold"`
	Ratio             string    `json:"ratio"` // current / threshold, two decimals
	Severity          string    `json:"severity"`
	RequiresAttention bool      `json:"requiresAttention"`
	// IP is the client address an alert is about (RATE_LIMIT_ABUSE).
	IP string `json:"ip,omitempty"`
}

// Thresholds are the seed's alert levels.
type Thresholds struct {
	TableWarning, TableCritical int64   // bytes of managed table memory
	HeapWarning, HeapCritical   float64 // share of the memory limit
	UsersWarning, UsersCritical int     // connected users
}

// WatchdogOptions configure a Watchdog.
type WatchdogOptions struct {
	Manager *Manager
	Thresholds
	// Interval between checks (the seed's minute); 0 = no periodic check
	// (Check can still be called).
	Interval time.Duration
	// MemoryLimit for the heap check; 0 derives it: GOMEMLIMIT when set,
	// else the container's cgroup memory limit, else no heap check (as
	// for a negative one).
	MemoryLimit int64
	// ConnectedUsers counts connected users; nil = the connectedUsers table's size.
	ConnectedUsers func() int
	// ShedFraction of the largest tables goes in an emergency cleanup.
	ShedFraction float64
	// Cooldown between two emergency cleanups (and profile sets).
	Cooldown time.Duration
	// ProfileDir receives a heap profile and a CPU profile of CPUProfile
	// length on each emergency; "" = no profiles. MaxProfiles bounds the
	// files kept (oldest removed first).
	ProfileDir  string
	MaxProfiles int
	CPUProfile  time.Duration
	// AlertFile, when set, gets one JSON line per alert.
	AlertFile string
	// Logger receives alerts (category performance); nil discards them.
	Logger *logrus.Entry
	// Registerer receives the watchdog's metrics; nil = none.
	Registerer prometheus.Registerer
	// Now is the clock; nil = time.Now.
	Now func() time.Time
	// Read takes a reading; nil = the real figures.
	Read func() Reading
}

// Watchdog checks memory and connections against the thresholds, raises
// alerts and, when critical, cleans up. Close stops it.
type Watchdog struct {
	o      WatchdogOptions
	log    *logrus.Entry
	alerts *prometheus.CounterVec
	ratio  *prometheus.GaugeVec
	level  *prometheus.GaugeVec
	emerg  prometheus.Counter
	// alertFileFailures counts alerts the alert file missed.
	alertFileFailures prometheus.Counter

	mu            sync.Mutex // serialises checks and the alert file; guards closed, recording
	lastEmergency time.Time  // the last shed
	lastCollect   time.Time  // the last collection, a shed's included
	closed        bool
	recording     string // the CPU profile being written: never pruned

	stop      chan struct{}
	wg        sync.WaitGroup // the check loop and CPU profiles
	closeOnce sync.Once
}

// NewWatchdog returns a Watchdog and, with an Interval, starts its loop.
func NewWatchdog(o WatchdogOptions) (*Watchdog, error) {
	if o.Manager == nil {
		return nil, fmt.Errorf("sessions: watchdog needs a Manager")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MemoryLimit == 0 {
		o.MemoryLimit = DetectMemoryLimit()
	}
	if o.AlertFile != "" {
		// Found out now, as an unwritable log directory is, rather than at
		// the first alert, which would then be lost.
		if err := openAlertFile(o.AlertFile); err != nil {
			return nil, alertFileError(o.AlertFile, err)
		}
	}
	if o.ConnectedUsers == nil {
		o.ConnectedUsers = func() int {
			for _, s := range o.Manager.Stats() {
				if s.Name == TableConnectedUsers {
					return s.Size
				}
			}
			return 0
		}
	}
	w := &Watchdog{
		o:    o,
		log:  o.Logger,
		stop: make(chan struct{}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_alerts_total",
			Help: "Alerts raised, by type and severity: the memory watchdog's and the limiter's RATE_LIMIT_ABUSE.",
		}, []string{"type", "severity"}),
		ratio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chatguard_memory_pressure_ratio",
			Help: "Last reading over its critical level: table_memory (bytes / MEMORY_CRITICAL_THRESHOLD), heap (live heap, stacks and runtime memory / memory limit, critical at 0.85), connected_users (users / critical count). 1 = critical.",
		}, []string{"resource"}),
		level: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chatguard_memory_pressure_level",
			Help: "The configured warning and critical levels, in chatguard_memory_pressure_ratio's unit, so that alert rules follow the configuration: table_memory (MEMORY_WARNING_THRESHOLD / MEMORY_CRITICAL_THRESHOLD, and 1), heap (memory.heap_warning_ratio, memory.heap_critical_ratio), connected_users (memory.connected_users_warning / _critical, and 1). Absent for a level that is off.",
		}, []string{"resource", "level"}),
		emerg: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatguard_emergency_cleanups_total",
			Help: "Emergency cleanups run on a critical reading.",
		}),
	}
	// Children exist from the start, so that rules and dashboards see zeros.
	for _, kind := range []string{"MEMORY_USAGE", "HEAP_USAGE", "CONNECTED_USERS", "RATE_LIMIT_ABUSE"} {
		for _, sev := range []string{SeverityWarning, SeverityCritical} {
			w.alerts.WithLabelValues(sev+"_"+kind, sev)
		}
	}
	for _, r := range []string{ResourceTableMemory, ResourceHeap, ResourceConnectedUsers} {
		w.ratio.WithLabelValues(r)
	}
	t := o.Thresholds
	setLevels := func(resource string, warning, critical float64) {
		if critical <= 0 {
			return // no critical level: no ratio either
		}
		w.level.WithLabelValues(resource, "critical").Set(critical)
		if warning > 0 {
			w.level.WithLabelValues(resource, "warning").Set(warning)
		}
	}
	setLevels(ResourceTableMemory, float64(t.TableWarning)/float64(max(t.TableCritical, 1)), float64(min(t.TableCritical, 1)))
	if o.MemoryLimit > 0 {
		// Without a known limit the heap is not judged: no levels, so
		// that a dashboard shows the check as off rather than a 0 %
		// reading under live levels (QA).
		setLevels(ResourceHeap, t.HeapWarning, t.HeapCritical)
	}
	setLevels(ResourceConnectedUsers, float64(t.UsersWarning)/float64(max(t.UsersCritical, 1)), float64(min(t.UsersCritical, 1)))
	if o.AlertFile != "" {
		var err error
		if w.alertFileFailures, err = logging.NewFileWriteFailures(o.Registerer, "alerts"); err != nil {
			return nil, fmt.Errorf("sessions: %w", err)
		}
	}
	if w.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		w.log = logrus.NewEntry(l)
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{w.alerts, w.ratio, w.level, w.emerg} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("sessions: register watchdog metrics: %w", err)
			}
		}
	}
	if o.Read == nil {
		w.o.Read = w.read
	}
	if o.Interval > 0 {
		w.wg.Add(1)
		go w.loop()
	}
	return w, nil
}

func (w *Watchdog) loop() {
	defer w.wg.Done()
	t := time.NewTicker(w.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.Check(w.o.Read())
		}
	}
}

// read takes the real figures.
func (w *Watchdog) read() Reading {
	return Reading{
		TableBytes:     w.o.Manager.Bytes(),
		HeapBytes:      goRetainedBytes(),
		MemoryLimit:    w.o.MemoryLimit,
		ConnectedUsers: w.o.ConnectedUsers(),
	}
}

// Check judges a reading: warnings are alerts. As in the seed's table, a
// critical table-memory reading also runs the emergency cleanup (shedding
// the largest tables), a critical heap reading a forced collection that
// returns memory to the OS ("Log + GC forzado"; review: shedding users for
// a heap the tables were a small part of disconnected 20 % of them every
// cooldown), each at most once per cooldown, with profiles. Connected
// users over their critical level only alert.
func (w *Watchdog) Check(r Reading) []Alert {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.o.Now()
	t := w.o.Thresholds
	var out []Alert
	judge := func(resource, kind string, current, warning, critical, denominator float64) {
		if denominator > 0 {
			w.ratio.WithLabelValues(resource).Set(current / denominator)
		}
		severity, threshold := "", 0.0
		switch {
		case critical > 0 && current >= critical:
			severity, threshold = SeverityCritical, critical
		case warning > 0 && current >= warning:
			severity, threshold = SeverityWarning, warning
		default:
			return
		}
		out = append(out, Alert{
			Time: now, Type: severity + "_" + kind, Resource: resource,
			Current: int64(current), Threshold: int64(math.Round(threshold)),
			Ratio:    fmt.Sprintf("%.2f", current/threshold),
			Severity: severity, RequiresAttention: severity == SeverityCritical,
		})
	}
	judge(ResourceTableMemory, "MEMORY_USAGE", float64(r.TableBytes), float64(t.TableWarning), float64(t.TableCritical), float64(t.TableCritical))
	if r.MemoryLimit > 0 {
		lim := float64(r.MemoryLimit)
		judge(ResourceHeap, "HEAP_USAGE", float64(r.HeapBytes), t.HeapWarning*lim, t.HeapCritical*lim, lim)
	}
	judge(ResourceConnectedUsers, "CONNECTED_USERS", float64(r.ConnectedUsers), float64(t.UsersWarning), float64(t.UsersCritical), float64(t.UsersCritical))

	shed, collect := false, false
	for _, a := range out {
		w.raise(a)
		if a.Severity == SeverityCritical {
			shed = shed || a.Resource == ResourceTableMemory
			collect = collect || a.Resource == ResourceHeap
		}
	}
	// Each action has its own cooldown: a collection for the heap must not
	// hold off the shed the tables then need (review: growing tables push
	// the heap over its level first, and the tables' own critical reading
	// found the cooldown taken by a collection that shed nothing).
	due := func(last time.Time) bool { return last.IsZero() || now.Sub(last) >= w.o.Cooldown }
	switch {
	case shed && due(w.lastEmergency):
		w.lastEmergency, w.lastCollect = now, now // the shed collects too
		w.emergencyCleanup(true)
	case collect && due(w.lastCollect):
		w.lastCollect = now
		w.emergencyCleanup(false)
	}
	return out
}

// Record counts an alert raised elsewhere (the limiter's RATE_LIMIT_ABUSE)
// in chatguard_alerts_total and appends it to the alert file, as the
// watchdog's own alerts are; the caller logs it in its own category.
func (w *Watchdog) Record(a Alert) {
	if a.Time.IsZero() {
		a.Time = w.o.Now()
	}
	w.alerts.WithLabelValues(a.Type, a.Severity).Inc()
	w.appendAlert(a)
}

func (w *Watchdog) appendAlert(a Alert) {
	if w.o.AlertFile == "" {
		return
	}
	if err := appendJSONLine(w.o.AlertFile, a); err != nil {
		w.alertFileFailures.Inc()
		w.log.WithError(err).WithField("category", "performance").Warn("cannot write the alert file")
	}
}

func (w *Watchdog) raise(a Alert) {
	w.alerts.WithLabelValues(a.Type, a.Severity).Inc()
	entry := w.log.WithFields(logrus.Fields{
		"category": "performance",
		"alert":    a,
		"severity": a.Severity, "requiresAttention": a.RequiresAttention,
	})
	if a.Severity == SeverityCritical {
		entry.Error("CRITICAL ALERT: " + a.Type)
	} else {
		entry.Warn("warning alert: " + a.Type)
	}
	w.appendAlert(a)
}

// openAlertFile checks that the alert file can be created and appended to,
// leaving it empty if it was not there.
func openAlertFile(path string) error {
	f, err := openAppend(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// openAppend opens the alert file as the log files are opened.
func openAppend(path string) (*os.File, error) { return logging.OpenAppend(path) }

// CheckAlertFile returns the error NewWatchdog would stop at for the alert
// file at path, creating nothing (see logging.CheckAppend): what
// check-config says serve would not start on.
func CheckAlertFile(path string) error {
	if err := logging.CheckAppend(path); err != nil {
		return alertFileError(path, err)
	}
	return nil
}

func alertFileError(path string, err error) error {
	return fmt.Errorf("sessions: alert file (alerts.path %q): %w", path, err)
}

// appendMu serialises appendJSONLine (see there).
var appendMu sync.Mutex

// appendJSONLine appends v to the file as one line. The file holds whole
// lines only: a write a full disk cuts short is taken back, and a line cut
// before (one that could not be taken back, or a crash's) is ended first
// (QA: the next alert was glued onto a cut one, and neither was JSON).
func appendJSONLine(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	// One append at a time: Record runs on request goroutines, and the
	// size read before a write is what a cut write truncates back to, so
	// a concurrent append in between would be cut away with it (review).
	appendMu.Lock()
	defer appendMu.Unlock()
	line := append(b, '\n')
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o640)
	if err != nil {
		if f, err = openAppend(path); err != nil { // write-only: no last byte to read
			return err
		}
	}
	var size int64
	if st, err := f.Stat(); err == nil {
		size = st.Size()
	}
	var last [1]byte
	if size > 0 {
		if _, err := f.ReadAt(last[:], size-1); err == nil && last[0] != '\n' {
			line = append([]byte{'\n'}, line...)
		}
	}
	n, werr := f.Write(line)
	if werr != nil && n > 0 {
		_ = f.Truncate(size)
	}
	return joinErr(werr, f.Close())
}

func joinErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// emergencyCleanup sheds table entries when asked to, then collects,
// returns memory to the OS and writes profiles.
func (w *Watchdog) emergencyCleanup(shedTables bool) {
	w.emerg.Inc()
	shed, expired, action := map[string]int{}, map[string]int{}, "gc"
	if shedTables {
		shed, expired = w.o.Manager.Shed(w.o.ShedFraction)
		action = "shed"
	}
	before, after := memstats.FreeOSMemory()
	f := logrus.Fields{
		"category": "performance",
		"action":   action,
		"shed":     shed,
		"before":   before,
		"after":    after,
	}
	if len(expired) > 0 {
		f["expired"] = expired // swept first, as the metrics count them: not shed
	}
	w.log.WithFields(f).Warn("emergency cleanup done")
	if w.o.ProfileDir != "" {
		w.writeProfiles()
	}
}

// writeProfiles writes a heap profile now and a CPU profile over the next
// CPUProfile in the background, then keeps the newest MaxProfiles files.
func (w *Watchdog) writeProfiles() {
	stamp := w.o.Now().UTC().Format("20060102T150405.000")
	if err := os.MkdirAll(w.o.ProfileDir, 0o755); err != nil {
		w.log.WithError(err).Warn("cannot create the profile directory")
		return
	}
	heap := filepath.Join(w.o.ProfileDir, "heap-"+stamp+".pprof")
	if f, err := os.Create(heap); err == nil {
		_ = pprof.Lookup("heap").WriteTo(f, 0)
		_ = f.Close()
	} else {
		w.log.WithError(err).Warn("cannot write a heap profile")
	}
	w.pruneProfiles()
	if w.o.CPUProfile <= 0 {
		return
	}
	cpu := filepath.Join(w.o.ProfileDir, "cpu-"+stamp+".pprof")
	f, err := os.Create(cpu)
	if err != nil {
		w.log.WithError(err).Warn("cannot write a CPU profile")
		return
	}
	if w.closed { // no new goroutine once Close waits for them
		_ = f.Close()
		_ = os.Remove(cpu)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil { // another one running
		_ = f.Close()
		_ = os.Remove(cpu)
		return
	}
	w.recording = filepath.Base(cpu)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTimer(w.o.CPUProfile)
		defer t.Stop()
		select {
		case <-t.C:
		case <-w.stop:
		}
		pprof.StopCPUProfile()
		_ = f.Close()
		w.mu.Lock()
		w.recording = ""
		w.pruneProfiles()
		w.mu.Unlock()
	}()
}

func (w *Watchdog) pruneProfiles() {
	entries, err := os.ReadDir(w.o.ProfileDir)
	if err != nil {
		return
	}
	var files []os.DirEntry
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".pprof") {
			files = append(files, e)
		}
	}
	// Oldest first by the time in the name; of an emergency's two, the CPU
	// profile is the newer (it ends CPUProfile later). The one being
	// recorded is never removed (QA: with max_profiles 1, or later
	// emergencies' heap profiles, it was deleted while written, and no CPU
	// profile was ever kept).
	key := func(n string) string {
		k := n[strings.IndexByte(n, '-')+1:]
		if strings.HasPrefix(n, "cpu-") {
			return k + "1"
		}
		return k + "0"
	}
	sort.Slice(files, func(i, j int) bool { return key(files[i].Name()) < key(files[j].Name()) })
	excess := len(files) - w.o.MaxProfiles
	for _, f := range files {
		if excess <= 0 {
			break
		}
		if f.Name() == w.recording {
			continue
		}
		_ = os.Remove(filepath.Join(w.o.ProfileDir, f.Name()))
		excess--
	}
}

// Close stops the loop and any CPU profile in progress. Idempotent.
func (w *Watchdog) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		close(w.stop)
	})
	w.wg.Wait()
	return nil
}

// goRetainedBytes is the Go memory a collection cannot give back: all the
// runtime mapped, less what it returned to the OS, the heap's free and
// unused bytes and its dead objects (the objects beyond the live heap of
// the last GC). Before, the reading counted garbage not yet collected: with
// GOGC=100 it reached 85 % of the limit with 45 % live (review).
func goRetainedBytes() int64 {
	s := []metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	metrics.Read(s)
	var v [6]int64
	for i := range s {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		v[i] = int64(s[i].Value.Uint64())
	}
	dead := max(v[4]-v[5], 0)
	return max(v[0]-v[1]-v[2]-v[3]-dead, 0)
}

// DetectMemoryLimit returns GOMEMLIMIT when one is set, else the cgroup
// (v2 or v1) memory limit of the container, else 0.
func DetectMemoryLimit() int64 {
	if l := debug.SetMemoryLimit(-1); l > 0 && l != math.MaxInt64 {
		return l
	}
	return cgroupMemoryLimit("/proc/self/cgroup", "/sys/fs/cgroup")
}

// cgroupMemoryLimit reads the memory limit of the cgroup the process is in.
func cgroupMemoryLimit(selfCgroup, root string) int64 {
	b, err := os.ReadFile(selfCgroup)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var candidates []string
		switch {
		case parts[0] == "0" && parts[1] == "": // v2
			candidates = []string{filepath.Join(root, parts[2], "memory.max"), filepath.Join(root, "memory.max")}
		case strings.Contains(","+parts[1]+",", ",memory,"): // v1
			candidates = []string{filepath.Join(root, "memory", parts[2], "memory.limit_in_bytes"), filepath.Join(root, "memory", "memory.limit_in_bytes")}
		}
		for _, c := range candidates {
			if n := readLimit(c); n > 0 {
				return n
			}
		}
	}
	return 0
}

// readLimit parses a cgroup limit file; "max" and v1's "unlimited" marker
// (a huge number) are no limit.
func readLimit(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0
	}
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil || n <= 0 || n >= 1<<62 {
		return 0
	}
	return n
}
