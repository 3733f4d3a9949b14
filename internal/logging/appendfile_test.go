package logging_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatguard/chatguard/internal/logging"
)

// tree lists every path under root with its mode: what a check must leave
// as it found it.
func tree(t *testing.T, root string) string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, p+" "+fi.Mode().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// CheckFiles says what New would stop at, in New's words, and creates
// nothing (QA: check-config said "valid" for a log.dir serve could not
// create). Run as root, the unwritable cases are writable to both.
func TestCheckFilesPredictsNew(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		setup func(t *testing.T, root string) (dir string)
		fails bool // whoever runs it
	}{
		{"missing directories", func(t *testing.T, root string) string { return filepath.Join(root, "a", "b", "logs") }, false},
		{"existing files", func(t *testing.T, root string) string {
			mkfile(t, filepath.Join(root, "logs", "combined.log"), 0o640)
			mkfile(t, filepath.Join(root, "logs", "errors.log"), 0o640)
			return filepath.Join(root, "logs")
		}, false},
		{"log.dir is a file", func(t *testing.T, root string) string {
			mkfile(t, filepath.Join(root, "logs"), 0o640)
			return filepath.Join(root, "logs")
		}, true},
		{"a parent is a file", func(t *testing.T, root string) string {
			mkfile(t, filepath.Join(root, "var"), 0o640)
			return filepath.Join(root, "var", "lib", "logs")
		}, true},
		{"combined.log is a directory", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "logs", "combined.log"), 0o755)
			return filepath.Join(root, "logs")
		}, true},
		{"errors.log is a directory", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "logs", "errors.log"), 0o755)
			return filepath.Join(root, "logs")
		}, true},
		{"parent not writable", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "ro"), 0o555)
			return filepath.Join(root, "ro", "logs")
		}, os.Geteuid() != 0},
		{"log.dir not writable", func(t *testing.T, root string) string {
			mkdir(t, filepath.Join(root, "logs"), 0o555)
			return filepath.Join(root, "logs")
		}, os.Geteuid() != 0},
		{"file not writable", func(t *testing.T, root string) string {
			mkfile(t, filepath.Join(root, "logs", "combined.log"), 0o440)
			return filepath.Join(root, "logs")
		}, os.Geteuid() != 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			dir := c.setup(t, root)
			before := tree(t, root)
			checked := logging.CheckFiles(dir)
			if after := tree(t, root); after != before {
				t.Errorf("CheckFiles changed the tree:\n%s\nwas:\n%s", after, before)
			}
			if (checked != nil) != c.fails {
				t.Errorf("CheckFiles = %v, want failure %v", checked, c.fails)
			}
			lg, opened := logging.New(logging.Options{Out: &syncBuffer{}, File: true, Dir: dir})
			if lg != nil {
				lg.Close()
			}
			if (checked == nil) != (opened == nil) || checked != nil && checked.Error() != opened.Error() {
				t.Errorf("CheckFiles said %v; New said %v", checked, opened)
			}
		})
	}
}

func mkdir(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func mkfile(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, mode); err != nil {
		t.Fatal(err)
	}
}

// Lines a log file missed are counted, every one, by file (QA: a full
// LOG_DIR showed only on stderr, once a minute); the series exist at 0
// from the start, and only with file logging on.
func TestFileWriteFailuresCounted(t *testing.T) {
	t.Parallel()
	const name = "chatguard_log_file_write_failures_total"
	reg := prometheus.NewRegistry()
	newLogger(t, logging.Options{Registerer: reg})
	if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 0 {
		t.Fatalf("without file logging: %d series (%v), want none", n, err)
	}

	reg = prometheus.NewRegistry()
	dir := filepath.Join(t.TempDir(), "logs")
	lg, _ := newLogger(t, logging.Options{File: true, Dir: dir, Registerer: reg})
	want := func(combined, errs int) {
		t.Helper()
		exp := `# HELP chatguard_log_file_write_failures_total Lines that could not be written to a log file (file: combined, errors; alerts: the alert file): the disk is full, or the file or its directory cannot be written. The line still went to the standard output.
# TYPE chatguard_log_file_write_failures_total counter
chatguard_log_file_write_failures_total{file="combined"} ` + strconv.Itoa(combined) + `
chatguard_log_file_write_failures_total{file="errors"} ` + strconv.Itoa(errs) + `
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), name); err != nil {
			t.Fatal(err)
		}
	}
	want(0, 0)
	lg.Error("written")
	want(0, 0)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil { // the files cannot come back
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past the check that the files are still there
	lg.Info("lost 1")
	lg.Error("lost 2")
	lg.Error("lost 3")
	want(3, 2)
}
