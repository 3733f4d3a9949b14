package logging_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/chatguard/chatguard/internal/logging"
)

func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return lines(t, string(b))
}

func TestFileLogging(t *testing.T) {
	t.Parallel()
	for _, dev := range []bool{false, true} {
		name := map[bool]string{false: "production", true: "development"}[dev]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "nested", "logs") // created on demand
			lg, err := logging.New(logging.Options{
				Development: dev, Out: &syncBuffer{}, Level: "debug",
				File: true, Dir: dir, MaxSizeMB: 1, MaxBackups: 1,
			})
			if err != nil {
				t.Fatal(err)
			}
			lg.WithField("requestId", "req_1").Debug("debug line")
			lg.Info("info line")
			lg.WithField(logging.FieldCategory, logging.CategoryAuth).Warn("warn line")
			secretLine(lg, logrus.ErrorLevel)
			lg.WithField("n", 2).Error("second error")
			if err := lg.Close(); err != nil {
				t.Fatalf("Close error = %v", err)
			}
			if err := lg.Close(); err != nil {
				t.Fatalf("second Close error = %v", err)
			}

			for _, f := range []string{"combined.log", "errors.log"} {
				// Client addresses and user ids: not for every local user.
				if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm()&0o007 != 0 {
					t.Errorf("%s: %v, mode %v; want no access for others", f, err, fi.Mode())
				}
			}
			combined := readLines(t, filepath.Join(dir, "combined.log"))
			var msgs []string
			for _, m := range combined {
				msgs = append(msgs, m["msg"].(string))
				if !timeRE.MatchString(m["time"].(string)) {
					t.Errorf("combined.log time %q", m["time"])
				}
			}
			want := "debug line|info line|warn line|bad token [FILTERED] for user|second error"
			if strings.Join(msgs, "|") != want {
				t.Errorf("combined.log messages = %q, want %q", msgs, want)
			}
			errs := readLines(t, filepath.Join(dir, "errors.log"))
			msgs = nil
			for _, m := range errs {
				if m["level"] != "error" {
					t.Errorf("errors.log has a %v line: %v", m["level"], m)
				}
				msgs = append(msgs, m["msg"].(string))
			}
			if want := "bad token [FILTERED] for user|second error"; strings.Join(msgs, "|") != want {
				t.Errorf("errors.log messages = %q, want %q", msgs, want)
			}
			for _, f := range []string{"combined.log", "errors.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				for _, s := range secrets {
					if strings.Contains(string(b), s) {
						t.Errorf("%s shows secret %q", f, s)
					}
				}
			}
		})
	}
}

// No files are created unless File is set.
func TestNoFilesByDefault(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	lg, _ := newLogger(t, logging.Options{Dir: dir})
	lg.Error("x")
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files written without File: %v", ents)
	}
}

// Not parallel: goleak.IgnoreCurrent must not see other tests' goroutines.
func TestCloseStopsSummaryGoroutine(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	lg, err := logging.New(logging.Options{Out: &syncBuffer{}, SummaryInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	buf := lg.Out.(*syncBuffer)
	eventually(t, "a summary line", func() bool { return strings.Contains(buf.String(), "logging metrics") })
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, opt)
	// Logging after Close still works; it just has no summary any more.
	lg.Info("after close")
}

// Not parallel, as above.
func TestCloseStopsFileGoroutines(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	lg, err := logging.New(logging.Options{Out: &syncBuffer{}, File: true, Dir: t.TempDir(), SummaryInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	lg.Error("written to both files")
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, opt)
}

// A log directory that cannot be written is known at start: New fails
// with a message naming it, instead of a process that runs and prints a
// hook failure on stderr for every line.
func TestUnwritableLogDir(t *testing.T) {
	t.Parallel()
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := logging.New(logging.Options{Out: &syncBuffer{}, File: true, Dir: notADir, Level: "info"})
	if err == nil || !strings.Contains(err.Error(), "log.dir") || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("New with an unwritable log.dir: %v", err)
	}
	if n := strings.Count(err.Error(), "not a directory"); n != 1 {
		t.Errorf("the cause is said %d times: %v", n, err)
	}
}

// While running, a log directory removed by hand comes back (with the files)
// at the next line a second later; one that cannot be written does not stop
// the line on the main output.
func TestLogDirRemovedWhileRunning(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "logs")
	lg, buf := newLogger(t, logging.Options{File: true, Dir: dir, Level: "info"})
	lg.Error("first")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil { // now it cannot be a directory
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	lg.Error("still logged")
	if got := lines(t, buf.String()); len(got) != 2 || got[1]["msg"] != "still logged" {
		t.Fatalf("main output = %v", got)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	lg.Error("back")
	for _, name := range []string{"combined.log", "errors.log"} {
		got := readLines(t, filepath.Join(dir, name))
		if len(got) != 1 || got[0]["msg"] != "back" {
			t.Errorf("%s after the directory came back = %v", name, got)
		}
	}
}
