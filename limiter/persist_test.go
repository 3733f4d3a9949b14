package limiter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/sessions"
)

// The file Save streams is plain JSON, the same encoding/json reads; and
// a file edited by hand or by a tool (indented, upper-case hex) still loads
// the same entries.
func TestPersistFileIsPlainJSON(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	dir := t.TempDir()
	path := filepath.Join(dir, "rate-limits.json")
	tb, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 1000, Now: clk.Now, Volatile: Volatile})
	t.Cleanup(func() { tb.Close() })
	p, err := NewPersister(PersistOptions{Table: tb, Path: path, Logger: discardLog(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	m := NewMemoryStore(tb)
	want := map[sessions.Fingerprint][2]int64{}
	for i := range 300 {
		m.Mirror(fmt.Sprintf("rl|user=%d", i), time.Duration(i+1)*time.Second)
	}
	tb.SetTTL("#abuse|ip=1.2.3.4", 7, time.Hour) // volatile: never saved
	tb.Entries(func(f sessions.Fingerprint, v, exp int64) bool {
		if exp != 0 {
			want[f] = [2]int64{v, exp}
		}
		return true
	})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var snap snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		t.Fatalf("the file is not JSON: %v\n%.300s", err, b)
	}
	if snap.Version != fileVersion || snap.Seed != fmt.Sprintf("%016x", tb.Seed()) || !snap.SavedAt.Equal(clk.Now().UTC()) || len(snap.Entries) != 300 || len(want) != 300 {
		t.Fatalf("header or count wrong: version %d seed %s savedAt %v, %d entries (table %d)", snap.Version, snap.Seed, snap.SavedAt, len(snap.Entries), len(want))
	}
	for f, e := range want {
		if got := snap.Entries[fmt.Sprintf("%016x%016x", f.Hi, f.Lo)]; got != e {
			t.Fatalf("entry %v: file %v, table %v", f, got, e)
		}
	}

	var indented bytes.Buffer
	if err := json.Indent(&indented, b, "", "\t"); err != nil {
		t.Fatal(err)
	}
	upper := regexp.MustCompile(`"[0-9a-f]{32}"`).ReplaceAllStringFunc(string(b), strings.ToUpper)
	for name, file := range map[string]string{"indented": indented.String(), "upper-case hex": upper} {
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		into, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 1000, Now: clk.Now})
		p, err := NewPersister(PersistOptions{Table: into, Path: path, Logger: discardLog(), Now: clk.Now})
		if err != nil || !p.Healthy() {
			t.Fatalf("%s: did not load: %v", name, err)
		}
		got := 0
		into.Entries(func(f sessions.Fingerprint, v, exp int64) bool {
			if want[f] != [2]int64{v, exp} {
				t.Errorf("%s: entry %v is %v, saved %v", name, f, [2]int64{v, exp}, want[f])
			}
			got++
			return true
		})
		if got != 300 || into.Seed() != tb.Seed() {
			t.Fatalf("%s: %d entries loaded, seed %x (saved %x)", name, got, into.Seed(), tb.Seed())
		}
		into.Close()
	}
}

// parseEntries takes Save's form and refuses everything else, which
// encoding/json then judges.
func TestParseEntries(t *testing.T) {
	t.Parallel()
	good := map[string]int{
		`{}`: 0, ` { } `: 0,
		`{"0123456789abcdef0123456789abcdef":[1,-2]}`:                                                               1,
		"{\n \"0123456789abcdef0123456789abcdef\" : [ 1 , 2 ] ,\r\n\t\"fedcba98765432100123456789abcdef\":[3,4]\n}": 2,
	}
	for in, n := range good {
		if e, ok := parseEntries([]byte(in)); !ok || len(e) != n {
			t.Errorf("%q: ok=%v, %d entries, want %d", in, ok, len(e), n)
		}
	}
	for _, in := range []string{
		`null`, `[]`, `{"0123456789abcdef0123456789abcdef":[1,2],}`, `{"0123456789abcdef0123456789abcdef":[1]}`,
		`{"0123456789abcdef0123456789abcde":[1,2]}`, `{"0123456789abcdef0123456789abcdef0":[1,2]}`,
		`{"0123456789ABCDEF0123456789abcdef":[1,2]}`, `{"0123456789abcdef0123456789abcdef":[1.5,2]}`,
		`{"0123456789abcdef0123456789abcdef":[1,2,3]}`, `{"0123456789abcdef0123456789abcdef":[1,99999999999999999999]}`,
		`{"0123456789abcdef0123456789abcdef":[1,2]} x`, `{"\u0030123456789abcdef0123456789abcde":[1,2]}`,
		`{"0123456789abcdef0123456789abcdef":[-,2]}`, `{"0123456789abcdef0123456789abcdef":[0,01]}`, `{`,
	} {
		if _, ok := parseEntries([]byte(in)); ok {
			t.Errorf("%q was taken", in)
		}
	}
}

// A fingerprint written twice (a file edited by hand) loads as its last
// entry, on the fast path as through encoding/json.
func TestPersistRepeatedFingerprintLastWins(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	now := clk.Now().UnixNano()
	live, gone := now+int64(time.Hour), now-int64(time.Hour)
	const fp = "0123456789abcdef0000000000000001"
	for name, tc := range map[string]struct {
		entries string
		loaded  bool
	}{
		"live then expired":                        {fmt.Sprintf(`"%s":[1,%d],"%s":[2,%d]`, fp, live, fp, gone), false},
		"expired then live":                        {fmt.Sprintf(`"%s":[1,%d],"%s":[2,%d]`, fp, gone, fp, live), true},
		"live then expired, through encoding/json": {fmt.Sprintf(`"%s":[1,%d],"%s":[2,%d],"FFFFFFFFFFFFFFFF0000000000000002":[3,%d]`, fp, live, fp, gone, live), false},
	} {
		path := filepath.Join(t.TempDir(), "rate-limits.json")
		file := fmt.Sprintf(`{"version":2,"seed":"00000000000000ff","entries":{%s}}`, tc.entries)
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		tb, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 64, Now: clk.Now})
		if _, err := NewPersister(PersistOptions{Table: tb, Path: path, Logger: discardLog(), Now: clk.Now}); err != nil {
			t.Fatal(err)
		}
		found := false
		tb.Entries(func(f sessions.Fingerprint, v, _ int64) bool {
			if f == (sessions.Fingerprint{Hi: 0x0123456789abcdef, Lo: 1}) {
				found = true
				if v != 2 {
					t.Errorf("%s: value %d loaded, want the last entry's 2", name, v)
				}
			}
			return true
		})
		if found != tc.loaded {
			t.Errorf("%s: loaded %v, want %v", name, found, tc.loaded)
		}
		tb.Close()
	}
}

// A rate-limit file that is a device, FIFO or socket (/dev/null meant as
// "do not save", /dev/zero by mistake) is neither read nor replaced: read,
// /dev/zero never ends; replaced, a root chatguard moved /dev/null aside
// and wrote a file in its place (QA).
func TestPersistNonRegularFileUntouched(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "rate-limits.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	tb, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
	t.Cleanup(func() { tb.Close() })
	var log bytes.Buffer
	done := make(chan struct{})
	var p *Persister
	go func() { // a FIFO read would block for ever: the test times out
		defer close(done)
		var err error
		p, err = NewPersister(PersistOptions{Table: tb, Path: fifo, Logger: bufferLog(&log)})
		if err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		os.WriteFile(fifo, nil, 0) // unblock the reader
		t.Fatal("the FIFO was read")
	}
	if p == nil {
		return
	}
	if p.Healthy() {
		t.Error("a FIFO at the path reported healthy")
	}
	if err := p.Close(); err != errNotRegular { // said as what it is, not as a file unread (review)
		t.Errorf("Close over a FIFO: %v", err)
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode().Type() != os.ModeNamedPipe {
		t.Fatalf("the FIFO was replaced: %v %v", fi, err)
	}
	if m, _ := filepath.Glob(fifo + ".*"); len(m) != 0 {
		t.Errorf("files beside it: %v", m)
	}
	if !strings.Contains(log.String(), "not a regular file (a named pipe)") || !strings.Contains(log.String(), `rate_limit.file to \"\"`) {
		t.Errorf("log does not say why:\n%s", log.String())
	}
}

// A file of a newer release (a rollback) is sound: kept as unloaded, not
// called corrupt; a file with no version is no rate-limit file.
func TestPersistNewerVersionNotCorrupt(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct{ body, aside, says string }{
		"newer":      {`{"version":3,"seed":"00","entries":{}}`, ".unloaded-*", "written by a newer chatguard (file version 3"},
		"no version": {`{"entries":{}}`, ".corrupt-*", "no version"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rate-limits.json")
			os.WriteFile(path, []byte(c.body), 0o600)
			tb, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
			t.Cleanup(func() { tb.Close() })
			var log bytes.Buffer
			p, err := NewPersister(PersistOptions{Table: tb, Path: path, Logger: bufferLog(&log)})
			if err != nil {
				t.Fatal(err)
			}
			if m, _ := filepath.Glob(path + c.aside); len(m) != 1 {
				t.Errorf("moved aside as %s: %v", c.aside, m)
			}
			if !strings.Contains(log.String(), c.says) {
				t.Errorf("log does not say %q:\n%s", c.says, log.String())
			}
			p.Close()
		})
	}
}

// What saves killed half-way left (path.tmp-<digits>) is removed at start,
// and of the files set aside only the newest 3 of each kind stay: on an
// emptyDir that outlives restarts they filled it (QA: 148 MB). Other
// files are not touched.
func TestPersistLeftoversCleanedAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "rate-limits.json")
	write := func(name string, size int) {
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte("x"), size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("rate-limits.json.tmp-316007416", 1000)
	write("rate-limits.json.tmp-2318413566", 500)
	for _, ts := range []string{"20261101T000000", "20261102T000000", "20261103T000000", "20261104T000000", "20261105T000000"} {
		write("rate-limits.json.corrupt-"+ts, 10)
		write("rate-limits.json.unloaded-"+ts, 10)
	}
	keep := []string{"rate-limits.json.tmp-notdigits", "other.json.tmp-123", "rate-limits.json.bak", "rate-limits.jsonx.tmp-1"}
	for _, n := range keep {
		write(n, 1)
	}
	tb, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
	t.Cleanup(func() { tb.Close() })
	var log bytes.Buffer
	p, err := NewPersister(PersistOptions{Table: tb, Path: path, Logger: bufferLog(&log)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	entries, _ := os.ReadDir(dir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := append([]string{
		"rate-limits.json.corrupt-20261103T000000", "rate-limits.json.corrupt-20261104T000000", "rate-limits.json.corrupt-20261105T000000",
		"rate-limits.json.unloaded-20261103T000000", "rate-limits.json.unloaded-20261104T000000", "rate-limits.json.unloaded-20261105T000000",
	}, keep...)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("files after start:\n%q\nwant:\n%q", got, want)
	}
	if !strings.Contains(log.String(), `"bytes":1500`) || !strings.Contains(log.String(), "did not finish") {
		t.Errorf("the removal is not logged with its size:\n%s", log.String())
	}
}

// A failed save names its temporary file by pattern, so that each failure
// is the same line to a log grouping (QA: a new random name every time),
// and the path is logged absolute.
func TestPersistSaveErrorIsStable(t *testing.T) {
	t.Parallel()
	p := &Persister{o: PersistOptions{Path: "temp/rate-limits.json"}}
	err := p.stableError(&os.PathError{Op: "write", Path: "temp/rate-limits.json.tmp-683888305", Err: syscall.ENOSPC})
	if want := "write temp/rate-limits.json.tmp-*: no space left on device"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	err = p.stableError(&os.LinkError{Op: "rename", Old: "temp/rate-limits.json.tmp-1", New: "temp/rate-limits.json", Err: syscall.EXDEV})
	if want := "rename temp/rate-limits.json.tmp-* temp/rate-limits.json: invalid cross-device link"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	if err := p.stableError(errKept); err != errKept {
		t.Errorf("another error changed: %v", err)
	}
}

// After failed saves, the first save that works says so (QA: the gauge
// went back to 1 with no line), and the path in the lines is absolute.
func TestPersistSavedAgainIsSaid(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	blocker := filepath.Join(dir, "temp")
	os.WriteFile(blocker, nil, 0o600) // temp/ cannot be made
	tb, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
	t.Cleanup(func() { tb.Close() })
	var log syncBuffer
	p, err := NewPersister(PersistOptions{Table: tb, Path: "temp/rate-limits.json", Logger: bufferLog(&log), Every: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Healthy() {
		t.Fatal("healthy with no directory")
	}
	time.Sleep(20 * time.Millisecond)
	os.Remove(blocker)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log.String(), "saved again"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no line said the file is saved again:\n%s", log.String())
		}
	}
	if !p.Healthy() {
		t.Error("not healthy after a save")
	}
	if want := `"path":"` + filepath.Join(dir, "temp", "rate-limits.json") + `"`; !strings.Contains(log.String(), want) {
		t.Errorf("path not absolute (%s):\n%s", want, log.String())
	}
	if n := strings.Count(log.String(), "saved again"); n != 1 {
		t.Errorf("said %d times", n)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func bufferLog(w io.Writer) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(w)
	l.SetFormatter(&logrus.JSONFormatter{})
	return logrus.NewEntry(l)
}
