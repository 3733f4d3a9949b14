package limiter

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/sessions"
)

// fileVersion is the format of the persistence file.
const fileVersion = 1

// snapshot is the persistence file: every key with an absolute expiry-
// relevant value (a GCRA TAT or a block's end, Unix nanoseconds).
type snapshot struct {
	Version int              `json:"version"`
	SavedAt time.Time        `json:"savedAt"`
	Entries map[string]int64 `json:"entries"`
}

// PersistOptions configure a Persister.
type PersistOptions struct {
	Table *sessions.Table[string, int64]
	Path  string
	// Every is the period of saves (the seed's 2 minutes); 0 = only on Close.
	Every      time.Duration
	Logger     *logrus.Entry
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Persister saves the memory store to a file, atomically (a temporary file
// renamed over the old one), periodically and on Close, and loads it at
// start, so that limits survive a restart. A corrupt or unwritable file is
// logged and never stops the proxy: limits then live in memory only.
type Persister struct {
	o        PersistOptions
	failures prometheus.Counter
	ok       atomic.Bool
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// NewPersister loads the file (when there is one) into the table and starts
// the periodic save.
func NewPersister(o PersistOptions) (*Persister, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &Persister{o: o, stop: make(chan struct{}), done: make(chan struct{}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatguard_ratelimit_persist_failures_total",
			Help: "Failed loads and saves of the rate-limit file (limits then live in memory only).",
		})}
	if o.Registerer != nil {
		if err := o.Registerer.Register(p.failures); err != nil {
			return nil, err
		}
	}
	p.ok.Store(true)
	if n, err := p.load(); err != nil {
		p.fail("cannot load the rate-limit file; starting empty", err)
	} else if n > 0 {
		p.o.Logger.WithFields(logrus.Fields{"path": o.Path, "keys": n}).Info("rate limits loaded")
	}
	if o.Every > 0 {
		go p.loop()
	} else {
		close(p.done)
	}
	return p, nil
}

// Healthy reports whether the last load or save worked.
func (p *Persister) Healthy() bool { return p.ok.Load() }

func (p *Persister) fail(msg string, err error) {
	p.ok.Store(false)
	p.failures.Inc()
	p.o.Logger.WithError(err).WithField("path", p.o.Path).Error(msg)
}

func (p *Persister) loop() {
	defer close(p.done)
	t := time.NewTicker(p.o.Every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			if err := p.Save(); err != nil {
				p.fail("cannot save the rate-limit file; limits live in memory only", err)
			}
		}
	}
}

// load restores the keys that have not expired. A corrupt file is moved
// aside (path.corrupt-<time>) for inspection.
func (p *Persister) load() (int, error) {
	b, err := os.ReadFile(p.o.Path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil || s.Version != fileVersion {
		aside := fmt.Sprintf("%s.corrupt-%s", p.o.Path, p.o.Now().UTC().Format("20060102T150405"))
		_ = os.Rename(p.o.Path, aside)
		if err == nil {
			err = fmt.Errorf("unknown version %d", s.Version)
		}
		return 0, fmt.Errorf("%w (moved to %s)", err, aside)
	}
	now := p.o.Now().UnixNano()
	n := 0
	for k, v := range s.Entries {
		if v > now {
			p.o.Table.SetTTL(k, v, time.Duration(v-now))
			n++
		}
	}
	return n, nil
}

// Save writes the table to the file atomically. Abuse counters are not
// saved (their value is a count, not a time).
func (p *Persister) Save() error {
	s := snapshot{Version: fileVersion, SavedAt: p.o.Now().UTC(), Entries: map[string]int64{}}
	now := p.o.Now().UnixNano()
	for k, v := range p.o.Table.All() {
		if !strings.HasPrefix(k, "#abuse|") && v > now {
			s.Entries[k] = v
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p.o.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(p.o.Path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone after the rename; cleans up after a failure
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), p.o.Path); err != nil {
		return err
	}
	p.ok.Store(true)
	return nil
}

// Close stops the periodic save and saves once more. Idempotent.
func (p *Persister) Close() error {
	var err error
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		if err = p.Save(); err != nil {
			p.fail("cannot save the rate-limit file at shutdown", err)
		}
	})
	return err
}
