package limiter

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/sessions"
)

// fileVersion is the format of the persistence file: 2 keeps fingerprints
// (the table never holds keys: no e-mail address or IP is written to disk);
// a version 1 file (keys in clear) is still read.
const fileVersion = 2

// snapshot is the persistence file: the table's fingerprint seed and every
// saved entry as [value, expiry] (Unix nanoseconds; a GCRA TAT or a block's
// end, which is also its expiry), by fingerprint in hex.
type snapshot struct {
	Version int                 `json:"version"`
	SavedAt time.Time           `json:"savedAt"`
	Seed    string              `json:"seed,omitempty"`
	Entries map[string][2]int64 `json:"entries"`
}

// snapshotV1 is the first format: values by key.
type snapshotV1 struct {
	Entries map[string]int64 `json:"entries"`
}

// PersistOptions configure a Persister.
type PersistOptions struct {
	Table *sessions.StateTable
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
	var head struct {
		Version int `json:"version"`
	}
	err = json.Unmarshal(b, &head)
	if err == nil && head.Version != 1 && head.Version != fileVersion {
		err = fmt.Errorf("unknown version %d", head.Version)
	}
	var n int
	if err == nil {
		n, err = p.restore(b, head.Version)
	}
	if errors.As(err, new(errNotLoaded)) {
		// Sound, but not loaded: keep it from the next save.
		aside := fmt.Sprintf("%s.unloaded-%s", p.o.Path, p.o.Now().UTC().Format("20060102T150405"))
		_ = os.Rename(p.o.Path, aside)
		return 0, fmt.Errorf("%w (moved to %s)", err, aside)
	}
	if err != nil {
		aside := fmt.Sprintf("%s.corrupt-%s", p.o.Path, p.o.Now().UTC().Format("20060102T150405"))
		_ = os.Rename(p.o.Path, aside)
		return 0, fmt.Errorf("%w (moved to %s)", err, aside)
	}
	return n, nil
}

// errNotLoaded is a failure to load a sound file: it is kept as
// path.unloaded-<time>, not marked corrupt.
type errNotLoaded struct{ err error }

func (e errNotLoaded) Error() string { return e.err.Error() }
func (e errNotLoaded) Unwrap() error { return e.err }

// restore puts the live entries of file b (of version v) in the table.
func (p *Persister) restore(b []byte, v int) (int, error) {
	now := p.o.Now().UnixNano()
	n := 0
	if v == 1 {
		var v1 snapshotV1
		if err := json.Unmarshal(b, &v1); err != nil {
			return 0, err
		}
		for k, v := range v1.Entries {
			if v > now && p.o.Table.SetTTL(k, v, time.Duration(v-now)) {
				n++
			}
		}
		return n, nil
	}
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return 0, err
	}
	seed, err := strconv.ParseUint(s.Seed, 16, 64)
	if err != nil {
		return 0, errors.New("bad seed")
	}
	// All or nothing: a file with one bad entry is moved aside whole.
	type entry struct {
		f      sessions.Fingerprint
		v, exp int64
	}
	entries := make([]entry, 0, len(s.Entries))
	for k, e := range s.Entries {
		hi, err1 := strconv.ParseUint(k[:min(16, len(k))], 16, 64)
		lo, err2 := strconv.ParseUint(k[min(16, len(k)):], 16, 64)
		if len(k) != 32 || err1 != nil || err2 != nil {
			return 0, fmt.Errorf("bad fingerprint %q", k)
		}
		entries = append(entries, entry{sessions.Fingerprint{Hi: hi, Lo: lo}, e[0], e[1]})
	}
	if err := p.o.Table.SetSeed(seed); err != nil {
		return 0, errNotLoaded{err} // the file is fine: the table was not
	}
	for _, e := range entries {
		if e.exp > now && p.o.Table.Put(e.f, e.v, e.exp) {
			n++
		}
	}
	return n, nil
}

// Save writes the table to the file atomically. Abuse counters are not
// saved (they are volatile: a count, not a time).
func (p *Persister) Save() error {
	s := snapshot{Version: fileVersion, SavedAt: p.o.Now().UTC(), Seed: fmt.Sprintf("%016x", p.o.Table.Seed()), Entries: map[string][2]int64{}}
	p.o.Table.Entries(func(f sessions.Fingerprint, v, exp int64) bool {
		if exp != 0 { // only what expires: limits and blocks, never an eternal entry
			s.Entries[fmt.Sprintf("%016x%016x", f.Hi, f.Lo)] = [2]int64{v, exp}
		}
		return true
	})
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
