// Package logging builds chatguard's logrus logger: JSON in production,
// coloured text in development, a redaction hook, categories, counts by level
// and category (as metrics and as the seed's hourly summary line) and optional
// size-rotated files.
package logging

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
)

// Categories: the seed's specialised loggers, plus system for chatguard's own lifecycle.
const (
	CategoryAuth        = "auth"
	CategorySecurity    = "security"
	CategoryDatabase    = "database"
	CategorySocket      = "socket"
	CategoryWebhook     = "webhook"
	CategoryPerformance = "performance"
	CategoryAPI         = "api"
	CategorySystem      = "system"
)

// FieldCategory is the field that carries a line's category.
const FieldCategory = "category"

// TimeFormat is the time field's format: RFC 3339, milliseconds, UTC offset.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Options configure New.
type Options struct {
	Level       string // error, warn, info, debug; empty = info
	Development bool   // coloured text instead of JSON
	Out         io.Writer
	// File enables Dir/combined.log (every line) and Dir/errors.log (error and above).
	File       bool
	Dir        string
	MaxSizeMB  int
	MaxBackups int
	// SummaryInterval is the period of the "logging metrics (last hour)" line; 0 = none.
	SummaryInterval time.Duration
	// FlushInterval, when > 0, buffers Out and writes it at most this often
	// (and whenever 64 KiB are waiting) instead of once per line.
	FlushInterval time.Duration
	// Registerer receives chatguard_log_lines_total; nil = not registered.
	Registerer prometheus.Registerer
}

// Logger is the process's logger and what it owns: files and the summary goroutine.
type Logger struct {
	*logrus.Logger
	out     *bufferedWriter // nil when lines are written at once
	counts  *countHook
	closers []io.Closer
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// New builds a Logger. Close it to flush files and stop the summary goroutine.
func New(o Options) (*Logger, error) {
	lvl := logrus.InfoLevel
	if o.Level != "" {
		var err error
		if lvl, err = logrus.ParseLevel(o.Level); err != nil {
			return nil, fmt.Errorf("logging: %w", err)
		}
	}
	l := logrus.New()
	l.SetLevel(lvl)
	lg := &Logger{Logger: l, stop: make(chan struct{}), done: make(chan struct{})}
	if o.Out != nil {
		l.SetOutput(o.Out)
	}
	if o.Development {
		l.SetFormatter(utc{&logrus.TextFormatter{ForceColors: true, FullTimestamp: true, TimestampFormat: TimeFormat}})
	} else {
		l.SetFormatter(jsonFormatter())
	}
	l.AddHook(redactHook{})
	counts, err := newCountHook(o.Registerer)
	if err != nil {
		return nil, err
	}
	lg.counts = counts
	l.AddHook(counts)
	if o.File {
		fh := newFileHook(o.Dir, o.MaxSizeMB, o.MaxBackups)
		err := fh.combined.Open()
		if err == nil { // same directory: its failure would be said twice
			err = fh.errs.Open()
		}
		if err != nil {
			_ = fh.Close()
			return nil, dirError(o.Dir, withoutPrefix(err))
		}
		if fh.combinedFailures, err = NewFileWriteFailures(o.Registerer, "combined"); err == nil {
			fh.errsFailures, err = NewFileWriteFailures(o.Registerer, "errors")
		}
		if err != nil {
			_ = fh.Close()
			return nil, err
		}
		l.AddHook(fh)
		lg.closers = append(lg.closers, fh)
	}
	if o.FlushInterval > 0 { // last: nothing below fails, so the goroutine has its owner
		b := newBufferedWriter(l.Out, o.FlushInterval)
		l.SetOutput(b)
		lg.out = b
	}
	if o.SummaryInterval > 0 {
		go lg.summarise(o.SummaryInterval)
	} else {
		close(lg.done)
	}
	return lg, nil
}

// utc formats every line's time in UTC, as the seed and the envelope do,
// whatever the process's time zone.
type utc struct{ logrus.Formatter }

func (f utc) Format(e *logrus.Entry) ([]byte, error) {
	e.Time = e.Time.UTC()
	return f.Formatter.Format(e)
}

func jsonFormatter() logrus.Formatter { return jsonLines{} }

// Close stops the summary goroutine and closes log files. It is idempotent.
func (l *Logger) Close() error {
	var errs []error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		for _, c := range l.closers {
			errs = append(errs, c.Close())
		}
		if l.out != nil {
			errs = append(errs, l.out.Close())
		}
	})
	return errors.Join(errs...)
}

// Flush writes out buffered lines (see Options.FlushInterval).
func (l *Logger) Flush() error {
	if l.out == nil {
		return nil
	}
	return l.out.Flush()
}

// Summary returns the counts since the last summary line (or start).
func (l *Logger) Summary() map[string]any { return l.counts.snapshot(false) }

func (l *Logger) summarise(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			s := l.counts.snapshot(true)
			l.WithField(FieldCategory, CategoryPerformance).WithFields(logrus.Fields(s)).
				Infof("logging metrics (last %s)", humanInterval(every))
		}
	}
}

func humanInterval(d time.Duration) string {
	if d == time.Hour {
		return "hour"
	}
	return d.String()
}

// fileHook writes every line, as JSON, to combined.log and error lines to errors.log.
type fileHook struct {
	format   logrus.Formatter
	combined *rotatingFile
	errs     *rotatingFile
	// reported is when a write failure was last said on stderr: once a
	// minute, not once a line.
	reported atomic.Int64
	stderr   io.Writer
	// Lines each file missed, counted every time (the stderr line is once
	// a minute): chatguard_log_file_write_failures_total.
	combinedFailures, errsFailures prometheus.Counter
}

func newFileHook(dir string, maxSizeMB, maxBackups int) *fileHook {
	mk := func(name string) *rotatingFile {
		return newRotatingFile(filepath.Join(dir, name), int64(maxSizeMB)<<20, maxBackups)
	}
	unregistered := func(file string) prometheus.Counter { c, _ := NewFileWriteFailures(nil, file); return c }
	return &fileHook{format: jsonFormatter(), combined: mk(fileNames[0]), errs: mk(fileNames[1]), stderr: os.Stderr,
		combinedFailures: unregistered("combined"), errsFailures: unregistered("errors")}
}

func (h *fileHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *fileHook) Fire(e *logrus.Entry) error {
	b, err := h.format.Format(e)
	if err != nil {
		return err
	}
	var failed []string
	if _, err := h.combined.Write(b); err != nil {
		h.combinedFailures.Inc()
		failed = append(failed, fileError(h.combined.path, err))
	}
	if e.Level <= logrus.ErrorLevel {
		if _, err := h.errs.Write(b); err != nil {
			h.errsFailures.Inc()
			failed = append(failed, fileError(h.errs.path, err))
		}
	}
	if failed == nil {
		return nil
	}
	now := time.Now().UnixNano()
	if last := h.reported.Load(); now-last < int64(time.Minute) || !h.reported.CompareAndSwap(last, now) {
		return nil
	}
	// Said here rather than returned: logrus prints a hook's error as
	// "Failed to fire hook: …", its own words, not an operator's (QA).
	fmt.Fprintf(h.stderr, "chatguard: cannot write the log file: %s (the line still went to the standard output; repeated failures are said once a minute)\n",
		strings.Join(failed, "; "))
	return nil
}

// fileError names the file and the system's reason, without the layers of
// "logging:" the wrapping added.
func fileError(path string, err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		if pe.Path == path {
			return path + ": " + pe.Err.Error()
		}
		return path + ": " + pe.Op + " " + pe.Path + ": " + pe.Err.Error()
	}
	return path + ": " + strings.TrimPrefix(err.Error(), "logging: ")
}

func (h *fileHook) Close() error {
	return errors.Join(h.combined.Close(), h.errs.Close())
}

// withoutPrefix is err without the "logging: " of rotatingFile: the words
// CheckFiles predicts ("mkdir logs: permission denied").
func withoutPrefix(err error) error {
	if u := errors.Unwrap(err); u != nil && err.Error() == "logging: "+u.Error() {
		return u
	}
	return err
}

// levelName is the level as the seed's summary spells it.
func levelName(l logrus.Level) string {
	if l == logrus.WarnLevel {
		return "warn"
	}
	return strings.ToLower(l.String())
}
