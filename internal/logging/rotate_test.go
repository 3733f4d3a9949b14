package logging

import (
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Rotation keeps maxBackups compressed backups that hold what the log held
// and are as private as the log itself (QA: backups were created 0644,
// world-readable, where the logs are 0640).
func TestRotationBackupsArePrivateAndWhole(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "combined.log")
	r := newRotatingFile(path, 1000, 2)
	tick := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	r.now = func() time.Time { tick = tick.Add(time.Second); return tick } // distinct backup names
	line := strings.Repeat("x", 99) + "\n"
	for i := 0; i < 45; i++ { // 4,500 bytes: four rotations
		if _, err := r.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	backups, _ := filepath.Glob(filepath.Join(dir, "combined-*.log.gz"))
	if len(backups) != 2 {
		t.Fatalf("backups %q, want 2", backups)
	}
	for _, b := range backups {
		fi, err := os.Stat(b)
		if err != nil || fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s: %v, mode %v; want no access for others", filepath.Base(b), err, fi.Mode())
		}
		f, _ := os.Open(b)
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(zr)
		f.Close()
		if err != nil || len(data) == 0 || len(data) > 1000 || strings.Trim(string(data), "x\n") != "" {
			t.Errorf("%s: %d bytes, %v", filepath.Base(b), len(data), err)
		}
	}
}
