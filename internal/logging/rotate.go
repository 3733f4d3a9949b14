package logging

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// rotatingFile appends to a file and, when a write would take it past
// maxBytes, renames it to name-<UTC time>.log, starts a new one, gzips the
// old one in the background and keeps at most maxBackups of them. The
// compression goroutines belong to the file: Close waits for them.
type rotatingFile struct {
	path       string
	maxBytes   int64
	maxBackups int
	now        func() time.Time

	mu      sync.Mutex // guards everything below
	f       *os.File
	size    int64
	checked time.Time // when the path was last seen to still name f
	partial bool      // f ends in a line a failed write cut short
	closed  bool
	jobs    sync.WaitGroup
	jobMu   sync.Mutex // serialises the compress-and-prune jobs
}

// recheckEvery is how often a write checks that the path still names the
// open file: a log directory removed or a file moved away by hand would
// otherwise swallow every line until the next rotation.
const recheckEvery = time.Second

func newRotatingFile(path string, maxBytes int64, maxBackups int) *rotatingFile {
	return &rotatingFile{path: path, maxBytes: maxBytes, maxBackups: maxBackups, now: time.Now}
}

func (r *rotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errors.New("logging: write to a closed log file")
	}
	if r.f != nil {
		if now := r.now(); now.Sub(r.checked) >= recheckEvery {
			r.checked = now
			if !r.stillOpen() {
				_ = r.f.Close()
				r.f = nil
			}
		}
	}
	if r.f == nil {
		if err := r.open(); err != nil {
			return 0, err
		}
	}
	if r.size > 0 && r.size+int64(len(p)) > r.maxBytes {
		if err := r.rotate(); err != nil {
			return 0, err
		}
	}
	if r.partial {
		// End the cut line, so that this one starts a line of its own.
		if _, err := r.f.Write([]byte{'\n'}); err != nil {
			return 0, err
		}
		r.size++
		r.partial = false
	}
	n, err := r.f.Write(p)
	if err != nil && n > 0 {
		// A full disk took part of the lines: take it back, so that the
		// file holds whole lines only (QA: the next line, once there was
		// room, was glued onto the cut one, and neither was JSON).
		if terr := r.f.Truncate(r.size); terr == nil {
			return 0, err
		}
		r.partial = true
	}
	r.size += int64(n)
	return n, err
}

// stillOpen reports whether the path names the open file.
func (r *rotatingFile) stillOpen() bool {
	onDisk, err := os.Stat(r.path)
	if err != nil {
		return false
	}
	open, err := r.f.Stat()
	return err == nil && os.SameFile(onDisk, open)
}

func (r *rotatingFile) open() error {
	f, err := OpenAppend(r.path)
	if err != nil {
		return fmt.Errorf("logging: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("logging: %w", err)
	}
	r.f, r.size, r.checked = f, st.Size(), r.now()
	r.partial = false // the cut line was the old file's
	return nil
}

// Open opens (creating it and its directory) the file now rather than at
// the first line, so that a directory that cannot be written is known at
// start.
func (r *rotatingFile) Open() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil {
		return nil
	}
	return r.open()
}

func (r *rotatingFile) rotate() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("logging: %w", err)
	}
	r.f = nil
	ext := filepath.Ext(r.path)
	backup := fmt.Sprintf("%s-%s%s", strings.TrimSuffix(r.path, ext), r.now().UTC().Format("2006-01-02T15-04-05.000"), ext)
	if err := os.Rename(r.path, backup); err != nil {
		return fmt.Errorf("logging: %w", err)
	}
	r.jobs.Add(1)
	go func() {
		defer r.jobs.Done()
		// One job at a time: a prune that ran while another backup was
		// being compressed counted it twice (.log and .log.gz) and removed
		// one backup too many.
		r.jobMu.Lock()
		defer r.jobMu.Unlock()
		_ = gzipFile(backup)
		r.prune()
	}()
	return r.open()
}

// prune removes the oldest backups beyond maxBackups.
func (r *rotatingFile) prune() {
	ext := filepath.Ext(r.path)
	base := strings.TrimSuffix(filepath.Base(r.path), ext) + "-"
	entries, err := os.ReadDir(filepath.Dir(r.path))
	if err != nil {
		return
	}
	// A backup is counted once by its name without .gz: one left
	// uncompressed beside its .gz (a crash mid-compression) is one backup.
	var backups []string
	for _, e := range entries {
		if n := strings.TrimSuffix(e.Name(), ".gz"); strings.HasPrefix(n, base) && strings.HasSuffix(n, ext) {
			backups = append(backups, n)
		}
	}
	sort.Strings(backups) // the timestamps sort chronologically
	backups = slices.Compact(backups)
	for len(backups) > r.maxBackups {
		dir := filepath.Dir(r.path)
		_ = os.Remove(filepath.Join(dir, backups[0]))
		_ = os.Remove(filepath.Join(dir, backups[0]+".gz"))
		backups = backups[1:]
	}
}

func gzipFile(path string) error {
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	// The backup holds what the log held: as private as the log (0640, not
	// os.Create's 0666 under the umask; QA: backups were world-readable).
	out, err := os.OpenFile(path+".gz", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		out.Close()
		os.Remove(path + ".gz")
		return err
	}
	if err := errors.Join(zw.Close(), out.Close()); err != nil {
		os.Remove(path + ".gz")
		return err
	}
	return os.Remove(path)
}

// Close closes the file and waits for background compression. Idempotent.
func (r *rotatingFile) Close() error {
	r.mu.Lock()
	var err error
	if !r.closed && r.f != nil {
		err = r.f.Close()
	}
	r.closed = true
	r.mu.Unlock()
	r.jobs.Wait()
	return err
}
