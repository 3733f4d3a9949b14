package sessions

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

// The alert file holds whole lines: a write a full disk cuts short is
// taken back, and a line cut before (a crash's) is ended before the next
// one (QA: an alert was glued onto a cut one). Not parallel: the file size
// limit is the process's.
func TestAlertFileKeepsWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alerts.jsonl")
	if err := appendJSONLine(path, map[string]string{"type": "first"}); err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 40, Max: old.Max}); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	err := appendJSONLine(path, map[string]string{"type": strings.Repeat("x", 100)})
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); rerr != nil {
		t.Fatalf("restore the file size limit: %v", rerr)
	}
	if err == nil {
		t.Fatal("a write past the limit succeeded")
	}
	if err := appendJSONLine(path, map[string]string{"type": "third"}); err != nil {
		t.Fatal(err)
	}
	want := `{"type":"first"}` + "\n" + `{"type":"third"}` + "\n"
	if b, _ := os.ReadFile(path); string(b) != want {
		t.Errorf("after a full disk the file holds %q, want %q", b, want)
	}
	// A line cut by a crash is ended first.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"type":"cu`)
	f.Close()
	if err := appendJSONLine(path, map[string]string{"type": "fourth"}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !strings.HasSuffix(string(b), `{"type":"cu`+"\n"+`{"type":"fourth"}`+"\n") {
		t.Errorf("after a cut line the file holds %q", b)
	}
}

// An alert the alert file missed is counted in
// chatguard_log_file_write_failures_total{file="alerts"} (QA: only a
// warning line said it); the series is there at 0 from the start, and only
// with an alert file.
func TestAlertFileWriteFailuresCounted(t *testing.T) {
	t.Parallel()
	const name = "chatguard_log_file_write_failures_total"
	m := NewManager(ManagerOptions{})
	defer m.Close()
	reg := prometheus.NewRegistry()
	w, err := NewWatchdog(WatchdogOptions{Manager: m, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 0 {
		t.Fatalf("without an alert file: %d series (%v), want none", n, err)
	}

	path := filepath.Join(t.TempDir(), "alerts.jsonl")
	reg = prometheus.NewRegistry()
	w, err = NewWatchdog(WatchdogOptions{Manager: m, AlertFile: path, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want := func(n string) {
		t.Helper()
		if got := testutil.ToFloat64(w.alertFileFailures); fmt.Sprint(got) != n {
			t.Fatalf("alerts failures = %v, want %s", got, n)
		}
		if c, err := testutil.GatherAndCount(reg, name); err != nil || c != 1 {
			t.Fatalf("%d series of %s (%v), want 1", c, name, err)
		}
	}
	want("0")
	alert := Alert{Type: "WARNING_RATE_LIMIT_ABUSE", Severity: SeverityWarning}
	w.Record(alert)
	want("0")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil { // no file can be written there now
		t.Fatal(err)
	}
	w.Record(alert)
	w.Record(alert)
	want("2")
	exp := `chatguard_log_file_write_failures_total{file="alerts"} 2`
	if b, err := testutil.CollectAndFormat(w.alertFileFailures, expfmt.TypeTextPlain, name); err != nil || !strings.Contains(string(b), exp) {
		t.Fatalf("series %s (%v), want %s", b, err, exp)
	}
}

// CheckAlertFile says what NewWatchdog would stop at, in its words, and
// creates nothing.
func TestCheckAlertFilePredictsNewWatchdog(t *testing.T) {
	t.Parallel()
	m := NewManager(ManagerOptions{})
	defer m.Close()
	for _, rel := range []string{
		"file/alerts.jsonl", // under a regular file
		"logs/alerts.jsonl", // to be created
		"file",              // there, writable
		".",                 // a directory
	} {
		root := t.TempDir()
		if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(root, rel)
		checked := CheckAlertFile(path)
		if ents, _ := os.ReadDir(root); len(ents) != 1 {
			t.Fatalf("CheckAlertFile(%s) created something: %v", rel, ents)
		}
		w, opened := NewWatchdog(WatchdogOptions{Manager: m, AlertFile: path})
		if w != nil {
			w.Close()
		}
		if (checked == nil) != (opened == nil) || checked != nil && checked.Error() != opened.Error() {
			t.Errorf("%s: CheckAlertFile said %v; NewWatchdog said %v", rel, checked, opened)
		}
	}
}
