package logging

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// withFileSizeLimit runs f with writes limited to files of limit bytes, as
// a full disk limits them: a write across the limit is cut short (EFBIG;
// Go ignores the SIGXFSZ). The limit is the process's, so this test must
// not run in parallel with others.
func withFileSizeLimit(t *testing.T, limit uint64, f func()) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	defer func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Fatalf("restore the file size limit: %v", err)
		}
	}()
	f()
}

// A write a full disk cuts short leaves no part of a line behind (QA: the
// next line, once there was room, was glued onto the cut one). Not
// parallel: see withFileSizeLimit.
func TestFullDiskLeavesWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "combined.log")
	r := newRotatingFile(path, 1<<20, 1)
	defer r.Close()
	first := `{"msg":"first"}` + "\n"
	if _, err := r.Write([]byte(first)); err != nil {
		t.Fatal(err)
	}
	cut := `{"msg":"` + strings.Repeat("x", 200) + `"}` + "\n"
	withFileSizeLimit(t, uint64(len(first)+50), func() {
		if _, err := r.Write([]byte(cut)); err == nil {
			t.Fatal("a write past the limit succeeded")
		}
	})
	third := `{"msg":"third"}` + "\n"
	if _, err := r.Write([]byte(third)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != first+third {
		t.Errorf("the log holds %q, want the whole lines %q", b, first+third)
	}
}

// A log file that cannot be written is said on stderr in chatguard's words,
// naming the file, once a minute (QA: logrus's "Failed to fire hook:
// logging: combined.log: logging: mkdir …").
func TestFileWriteFailureSaidPlainly(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "logs")
	h := newFileHook(dir, 1, 1)
	defer h.Close()
	var errOut bytes.Buffer
	h.stderr = &errOut
	clock := time.Now()
	h.combined.now = func() time.Time { return clock }
	h.errs.now = h.combined.now
	if err := h.combined.Open(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o644); err != nil { // where the directory was
		t.Fatal(err)
	}
	clock = clock.Add(2 * time.Second) // past the check that the file is still there
	l := logrus.New()
	for i := 0; i < 3; i++ {
		if err := h.Fire(&logrus.Entry{Logger: l, Time: clock, Level: logrus.InfoLevel, Message: "x", Data: logrus.Fields{}}); err != nil {
			t.Fatalf("Fire returned %v: logrus would print it as its own", err)
		}
	}
	want := "chatguard: cannot write the log file: " + filepath.Join(dir, "combined.log") + ": mkdir " + dir + ": not a directory (the line still went to the standard output; repeated failures are said once a minute)\n"
	if errOut.String() != want {
		t.Errorf("stderr:\n%q\nwant once:\n%q", errOut.String(), want)
	}
}
