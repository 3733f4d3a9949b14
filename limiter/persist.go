package limiter

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/config"
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
	kept     atomic.Bool // the file could not be read nor moved aside: never saved over
	// keptWhy is Save's error while kept: errKept, or errNotRegular for a
	// device, FIFO or socket (set before the save loop starts).
	keptWhy error
	shown   string // the path as logged: absolute
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
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
		// The state, for an alert: the counter's first failure (at start)
		// comes before the first scrape, where increase() cannot see it.
		if err := o.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chatguard_ratelimit_persist_ok",
			Help: "1 while the last load or save of the rate-limit file worked, 0 while limits live in memory only.",
		}, func() float64 {
			if p.ok.Load() {
				return 1
			}
			return 0
		})); err != nil {
			return nil, err
		}
	}
	p.ok.Store(true)
	if abs, err := filepath.Abs(o.Path); err == nil {
		p.shown = abs // logged: a relative path says nothing of where it is
	} else {
		p.shown = o.Path
	}
	p.cleanLeftovers()
	if n, err := p.load(); err != nil {
		p.fail("cannot load the rate-limit file; starting empty", err)
	} else if n > 0 {
		p.o.Logger.WithFields(logrus.Fields{"path": p.shown, "keys": n}).Info("rate limits loaded")
	}
	if err := p.probe(); err != nil {
		// Said now, not at the first save two minutes (or a shutdown) away.
		p.fail("the rate-limit file cannot be written; limits live in memory only", err)
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
	p.o.Logger.WithError(err).WithField("path", p.shown).Error(msg)
}

// keepAside is how many files of each kind moved aside (corrupt-<time>,
// unloaded-<time>) are kept: the newest, for inspection.
const keepAside = 3

// cleanLeftovers removes, at start, the temporary files of saves that never
// finished (a kill during a save: the OOM killer, the kubelet's SIGKILL
// at shutdown) and all but the newest keepAside files of each kind moved
// aside: on an emptyDir that outlives restarts they piled up to its size
// limit (QA: 148 MB after three kills). Only names this Persister writes
// are touched: path.tmp-<digits>, path.corrupt-<time>, path.unloaded-<time>.
func (p *Persister) cleanLeftovers() {
	dir, base := filepath.Dir(p.o.Path), filepath.Base(p.o.Path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return // no directory yet, or unreadable: the probe says so
	}
	var removed, pruned []string
	var freed int64
	aside := map[string][]string{}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		kind, suffix, _ := strings.Cut(rest, "-")
		switch {
		case kind == "tmp" && suffix != "" && strings.Trim(suffix, "0123456789") == "":
			if info, err := e.Info(); err == nil && os.Remove(filepath.Join(dir, e.Name())) == nil {
				removed = append(removed, e.Name())
				freed += info.Size()
			}
		case kind == "corrupt" || kind == "unloaded":
			aside[kind] = append(aside[kind], e.Name())
		}
	}
	for _, names := range aside {
		slices.Sort(names) // <time> is 20060102T150405: oldest first
		for _, n := range names[:max(0, len(names)-keepAside)] {
			if os.Remove(filepath.Join(dir, n)) == nil {
				pruned = append(pruned, n)
			}
		}
	}
	if len(removed) > 0 {
		p.o.Logger.WithFields(logrus.Fields{"path": p.shown, "files": removed, "bytes": freed}).
			Warn("removed the rate-limit file's temporary files of saves that did not finish (chatguard was killed during a save)")
	}
	if len(pruned) > 0 {
		p.o.Logger.WithFields(logrus.Fields{"path": p.shown, "files": pruned, "kept": keepAside}).
			Info("removed older copies of the rate-limit file set aside")
	}
}

// stableError names the temporary file of a failed save by its pattern: its
// random name made each failure's line a new one to a log grouping (QA).
func (p *Persister) stableError(err error) error {
	tmpl := p.o.Path + ".tmp-*"
	var pe *os.PathError
	if errors.As(err, &pe) && strings.HasPrefix(filepath.Base(pe.Path), filepath.Base(p.o.Path)+".tmp-") {
		return fmt.Errorf("%s %s: %w", pe.Op, tmpl, pe.Err)
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return fmt.Errorf("%s %s %s: %w", le.Op, tmpl, le.New, le.Err)
	}
	return err
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
			failing := !p.ok.Load() // a failure since the last save that worked
			if err := p.Save(); err != nil {
				p.fail("cannot save the rate-limit file; limits live in memory only", err)
			} else if failing {
				p.o.Logger.WithField("path", p.shown).Info("the rate-limit file is saved again; limits survive a restart")
			}
		}
	}
}

// load restores the keys that have not expired. A corrupt file is moved
// aside (path.corrupt-<time>) for inspection.
func (p *Persister) load() (int, error) {
	if fi, err := os.Stat(p.o.Path); err == nil && !fi.Mode().IsRegular() && !fi.IsDir() {
		// A device, FIFO or socket (/dev/null meant as "do not save"):
		// read, /dev/zero never ends; replaced, a root chatguard would
		// have moved /dev/null aside and written a file in its place
		// (QA). Neither read nor written.
		p.kept.Store(true)
		p.keptWhy = errNotRegular
		return 0, fmt.Errorf("not a regular file (%s): it is neither read nor written; set rate_limit.file to \"\" to turn saving off", config.FileKind(fi.Mode()))
	}
	b, err := os.ReadFile(p.o.Path)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return 0, nil // ENOTDIR: a directory of the path is a file, so no file (the probe says why)
	}
	if err != nil {
		// Unreadable (permissions, an I/O error), not absent: the limits
		// and blocks in it must not be replaced by the next save's empty
		// table. Moved aside as a sound file not loaded is; if even that
		// fails, saves stay off.
		aside := fmt.Sprintf("%s.unloaded-%s", p.o.Path, p.o.Now().UTC().Format("20060102T150405"))
		if rerr := os.Rename(p.o.Path, aside); rerr != nil {
			p.kept.Store(true)
			return 0, fmt.Errorf("%w; it cannot be moved aside either (%w): it is kept, and not saved over", err, rerr)
		}
		return 0, fmt.Errorf("%w (moved to %s)", err, aside)
	}
	var s snapshotRaw
	err = json.Unmarshal(b, &s)
	b = nil // the entries are in s.Entries: the rest can go
	switch {
	case err != nil:
	case s.Version > fileVersion:
		// A newer release's file (a rollback): sound, kept as unloaded,
		// not called corrupt.
		err = errNotLoaded{fmt.Errorf("written by a newer chatguard (file version %d; this one reads 1 and %d)", s.Version, fileVersion)}
	case s.Version == 0:
		err = errors.New("no version: not a rate-limit file")
	case s.Version != 1 && s.Version != fileVersion:
		err = fmt.Errorf("unknown version %d", s.Version)
	}
	var n int
	if err == nil {
		n, err = p.restore(&s)
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

// errNotRegular is Save's answer for a path that is no regular file.
var errNotRegular = errors.New("not a regular file: saving is off")

// errKept is Save's answer while the file it would replace could not be
// read at start (and not moved aside): saving would lose what it holds.
var errKept = errors.New("the file could not be read at start and is kept: not saved over")

// errNotLoaded is a failure to load a sound file: it is kept as
// path.unloaded-<time>, not marked corrupt.
type errNotLoaded struct{ err error }

func (e errNotLoaded) Error() string { return e.err.Error() }
func (e errNotLoaded) Unwrap() error { return e.err }

// snapshotRaw is a file of either version, its parts still encoded.
type snapshotRaw struct {
	Version int             `json:"version"`
	Seed    json.RawMessage `json:"seed"`
	Entries json.RawMessage `json:"entries"`
}

// restore puts the live entries of file s in the table.
func (p *Persister) restore(s *snapshotRaw) (int, error) {
	now := p.o.Now().UnixNano()
	n := 0
	if s.Version == 1 {
		var entries map[string]int64
		if err := unmarshalRaw(s.Entries, &entries); err != nil {
			return 0, err
		}
		for k, v := range entries {
			if v > now && p.o.Table.SetTTL(k, v, time.Duration(v-now)) {
				n++
			}
		}
		return n, nil
	}
	var hexSeed string
	if err := unmarshalRaw(s.Seed, &hexSeed); err != nil {
		return 0, err
	}
	seed, err := strconv.ParseUint(hexSeed, 16, 64)
	if err != nil {
		return 0, errors.New("bad seed")
	}
	// All or nothing: a file with one bad entry is moved aside whole.
	entries, ok := parseEntries(s.Entries)
	if !ok { // not as Save writes it: encoding/json decides, and says why
		var m map[string][2]int64
		if err := unmarshalRaw(s.Entries, &m); err != nil {
			return 0, err
		}
		entries = make([]savedEntry, 0, len(m))
		for k, e := range m {
			hi, err1 := strconv.ParseUint(k[:min(16, len(k))], 16, 64)
			lo, err2 := strconv.ParseUint(k[min(16, len(k)):], 16, 64)
			if len(k) != 32 || err1 != nil || err2 != nil {
				return 0, fmt.Errorf("bad fingerprint %q", k)
			}
			entries = append(entries, savedEntry{sessions.Fingerprint{Hi: hi, Lo: lo}, e[0], e[1]})
		}
	}
	entries = lastOfEach(entries)
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

// lastOfEach keeps, of a fingerprint written more than once (a file edited
// by hand: Save writes each once), its last entry, as encoding/json's map
// would: whichever path read the file, the same entries load.
func lastOfEach(entries []savedEntry) []savedEntry {
	slices.SortStableFunc(entries, func(a, b savedEntry) int {
		if c := cmp.Compare(a.f.Hi, b.f.Hi); c != 0 {
			return c
		}
		return cmp.Compare(a.f.Lo, b.f.Lo)
	})
	out := entries[:0]
	for i, e := range entries {
		if i+1 < len(entries) && entries[i+1].f == e.f {
			continue
		}
		out = append(out, e)
	}
	return out
}

// unmarshalRaw decodes a part of the file; a missing part is JSON's null.
func unmarshalRaw(b json.RawMessage, v any) error {
	if b == nil {
		return nil
	}
	return json.Unmarshal(b, v)
}

// savedEntry is one entry of the file.
type savedEntry struct {
	f      sessions.Fingerprint
	v, exp int64
}

// parseEntries reads the entries object exactly as Save writes it
// ({"<32 hex digits>":[v,exp],…}, JSON whitespace allowed), without a map
// or a string per entry: a file of 1 M keys loads in a fraction of
// encoding/json's time and memory. ok is false for anything else.
func parseEntries(b []byte) (entries []savedEntry, ok bool) {
	i := 0
	ws := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
			i++
		}
	}
	eat := func(c byte) bool {
		ws()
		if i < len(b) && b[i] == c {
			i++
			return true
		}
		return false
	}
	hex := func() (uint64, bool) {
		if i+16 > len(b) {
			return 0, false
		}
		var x uint64
		for _, c := range b[i : i+16] {
			switch {
			case '0' <= c && c <= '9':
				x = x<<4 | uint64(c-'0')
			case 'a' <= c && c <= 'f':
				x = x<<4 | uint64(c-'a'+10)
			default:
				return 0, false
			}
		}
		i += 16
		return x, true
	}
	num := func() (int64, bool) {
		ws()
		j := i
		if j < len(b) && b[j] == '-' {
			j++
		}
		digits := j
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
		if j-digits > 1 && b[digits] == '0' { // JSON has no leading zeros
			return 0, false
		}
		v, err := strconv.ParseInt(string(b[i:j]), 10, 64)
		i = j
		return v, err == nil
	}
	if !eat('{') {
		return nil, false
	}
	entries = make([]savedEntry, 0, len(b)/64)
	if eat('}') {
		ws()
		return entries, i == len(b)
	}
	for {
		var e savedEntry
		var okHi, okLo, okV, okExp bool
		if !eat('"') {
			return nil, false
		}
		e.f.Hi, okHi = hex()
		e.f.Lo, okLo = hex()
		if !okHi || !okLo || !eat('"') || !eat(':') || !eat('[') {
			return nil, false
		}
		e.v, okV = num()
		if !okV || !eat(',') {
			return nil, false
		}
		e.exp, okExp = num()
		if !okExp || !eat(']') {
			return nil, false
		}
		entries = append(entries, e)
		if eat('}') {
			ws()
			return entries, i == len(b)
		}
		if !eat(',') {
			return nil, false
		}
	}
}

// Save writes the table to the file atomically. Abuse counters are not
// saved (they are volatile: a count, not a time). The file is written as it
// is read from the table, in one buffer: a table of 1 M keys (a Redis-mode
// store mirrors every active key) costs no more memory than the buffer.
func (p *Persister) Save() error {
	return p.stableError(p.save())
}

func (p *Persister) save() error {
	if p.kept.Load() {
		if p.keptWhy != nil {
			return p.keptWhy
		}
		return errKept
	}
	tmp, err := p.createTemp()
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone after the rename; cleans up after a failure
	if err := p.write(tmp); err != nil {
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

// probe checks that Save can write its temporary file beside the file.
func (p *Persister) probe() (err error) {
	defer func() { err = p.stableError(err) }()
	if p.kept.Load() {
		return nil // said already
	}
	tmp, err := p.createTemp()
	if err != nil {
		return err
	}
	tmp.Close()
	return os.Remove(tmp.Name())
}

// createTemp creates a temporary file beside the file (and its directory,
// if need be), for a save's atomic rename.
func (p *Persister) createTemp() (*os.File, error) {
	dir := filepath.Dir(p.o.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return os.CreateTemp(dir, filepath.Base(p.o.Path)+".tmp-*")
}

// write is the snapshot as encoding/json would write it, entries in the
// table's order: {"version":2,"savedAt":…,"seed":…,"entries":{"<hex>":[v,exp],…}}.
func (p *Persister) write(f *os.File) error {
	w := bufio.NewWriterSize(f, 64<<10)
	head, err := json.Marshal(snapshot{Version: fileVersion, SavedAt: p.o.Now().UTC(), Seed: fmt.Sprintf("%016x", p.o.Table.Seed())})
	if err != nil {
		return err
	}
	// head ends in "entries":null}: the entries go in place of null.
	head, ok := bytes.CutSuffix(head, []byte("null}"))
	if !ok {
		return fmt.Errorf("unexpected snapshot header %q", head)
	}
	w.Write(head)
	w.WriteByte('{')
	var line []byte
	first := true
	p.o.Table.Entries(func(f sessions.Fingerprint, v, exp int64) bool {
		if exp == 0 { // only what expires: limits and blocks, never an eternal entry
			return true
		}
		line = line[:0]
		if !first {
			line = append(line, ',')
		}
		first = false
		line = append(line, '"')
		line = appendHex16(line, f.Hi)
		line = appendHex16(line, f.Lo)
		line = append(line, `":[`...)
		line = strconv.AppendInt(line, v, 10)
		line = append(line, ',')
		line = strconv.AppendInt(line, exp, 10)
		line = append(line, ']')
		_, err = w.Write(line)
		return err == nil
	})
	if err != nil {
		return err
	}
	w.WriteString("}}")
	return w.Flush()
}

// appendHex16 appends x as 16 lower-case hex digits.
func appendHex16(b []byte, x uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[x>>uint(shift)&0xf])
	}
	return b
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
