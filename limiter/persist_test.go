package limiter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chatguard/chatguard/sessions"
)

// The file Save streams is plain JSON, the same encoding/json reads; and
// a file edited by hand or by a tool (indented, upper-case hex) still loads
// the same entries.
func TestPersistFileIsPlainJSON(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	dir := t.TempDir()
	path := filepath.Join(dir, "rate-limits.json")
	tb, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 1000, Now: clk.Now, Volatile: Volatile})
	t.Cleanup(func() { tb.Close() })
	p, err := NewPersister(PersistOptions{Table: tb, Path: path, Logger: discardLog(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	m := NewMemoryStore(tb)
	want := map[sessions.Fingerprint][2]int64{}
	for i := range 300 {
		m.Mirror(fmt.Sprintf("rl|user=%d", i), time.Duration(i+1)*time.Second)
	}
	tb.SetTTL("#abuse|ip=1.2.3.4", 7, time.Hour) // volatile: never saved
	tb.Entries(func(f sessions.Fingerprint, v, exp int64) bool {
		if exp != 0 {
			want[f] = [2]int64{v, exp}
		}
		return true
	})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var snap snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		t.Fatalf("the file is not JSON: %v\n%.300s", err, b)
	}
	if snap.Version != fileVersion || snap.Seed != fmt.Sprintf("%016x", tb.Seed()) || !snap.SavedAt.Equal(clk.Now().UTC()) || len(snap.Entries) != 300 || len(want) != 300 {
		t.Fatalf("header or count wrong: version %d seed %s savedAt %v, %d entries (table %d)", snap.Version, snap.Seed, snap.SavedAt, len(snap.Entries), len(want))
	}
	for f, e := range want {
		if got := snap.Entries[fmt.Sprintf("%016x%016x", f.Hi, f.Lo)]; got != e {
			t.Fatalf("entry %v: file %v, table %v", f, got, e)
		}
	}

	var indented bytes.Buffer
	if err := json.Indent(&indented, b, "", "\t"); err != nil {
		t.Fatal(err)
	}
	upper := regexp.MustCompile(`"[0-9a-f]{32}"`).ReplaceAllStringFunc(string(b), strings.ToUpper)
	for name, file := range map[string]string{"indented": indented.String(), "upper-case hex": upper} {
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		into, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 1000, Now: clk.Now})
		p, err := NewPersister(PersistOptions{Table: into, Path: path, Logger: discardLog(), Now: clk.Now})
		if err != nil || !p.Healthy() {
			t.Fatalf("%s: did not load: %v", name, err)
		}
		got := 0
		into.Entries(func(f sessions.Fingerprint, v, exp int64) bool {
			if want[f] != [2]int64{v, exp} {
				t.Errorf("%s: entry %v is %v, saved %v", name, f, [2]int64{v, exp}, want[f])
			}
			got++
			return true
		})
		if got != 300 || into.Seed() != tb.Seed() {
			t.Fatalf("%s: %d entries loaded, seed %x (saved %x)", name, got, into.Seed(), tb.Seed())
		}
		into.Close()
	}
}

// parseEntries takes Save's form and refuses everything else, which
// encoding/json then judges.
func TestParseEntries(t *testing.T) {
	t.Parallel()
	good := map[string]int{
		`{}`: 0, ` { } `: 0,
		`{"0123456789abcdef0123456789abcdef":[1,-2]}`:                                                               1,
		"{\n \"0123456789abcdef0123456789abcdef\" : [ 1 , 2 ] ,\r\n\t\"fedcba98765432100123456789abcdef\":[3,4]\n}": 2,
	}
	for in, n := range good {
		if e, ok := parseEntries([]byte(in)); !ok || len(e) != n {
			t.Errorf("%q: ok=%v, %d entries, want %d", in, ok, len(e), n)
		}
	}
	for _, in := range []string{
		`null`, `[]`, `{"0123456789abcdef0123456789abcdef":[1,2],}`, `{"0123456789abcdef0123456789abcdef":[1]}`,
		`{"0123456789abcdef0123456789abcde":[1,2]}`, `{"0123456789abcdef0123456789abcdef0":[1,2]}`,
		`{"0123456789ABCDEF0123456789abcdef":[1,2]}`, `{"0123456789abcdef0123456789abcdef":[1.5,2]}`,
		`{"0123456789abcdef0123456789abcdef":[1,2,3]}`, `{"0123456789abcdef0123456789abcdef":[1,99999999999999999999]}`,
		`{"0123456789abcdef0123456789abcdef":[1,2]} x`, `{"\u0030123456789abcdef0123456789abcde":[1,2]}`,
		`{"0123456789abcdef0123456789abcdef":[-,2]}`, `{"0123456789abcdef0123456789abcdef":[0,01]}`, `{`,
	} {
		if _, ok := parseEntries([]byte(in)); ok {
			t.Errorf("%q was taken", in)
		}
	}
}

// A fingerprint written twice (a file edited by hand) loads as its last
// entry, on the fast path as through encoding/json.
func TestPersistRepeatedFingerprintLastWins(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	now := clk.Now().UnixNano()
	live, gone := now+int64(time.Hour), now-int64(time.Hour)
	const fp = "0123456789abcdef0000000000000001"
	for name, tc := range map[string]struct {
		entries string
		loaded  bool
	}{
		"live then expired":                        {fmt.Sprintf(`"%s":[1,%d],"%s":[2,%d]`, fp, live, fp, gone), false},
		"expired then live":                        {fmt.Sprintf(`"%s":[1,%d],"%s":[2,%d]`, fp, gone, fp, live), true},
		"live then expired, through encoding/json": {fmt.Sprintf(`"%s":[1,%d],"%s":[2,%d],"FFFFFFFFFFFFFFFF0000000000000002":[3,%d]`, fp, live, fp, gone, live), false},
	} {
		path := filepath.Join(t.TempDir(), "rate-limits.json")
		file := fmt.Sprintf(`{"version":2,"seed":"00000000000000ff","entries":{%s}}`, tc.entries)
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		tb, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 64, Now: clk.Now})
		if _, err := NewPersister(PersistOptions{Table: tb, Path: path, Logger: discardLog(), Now: clk.Now}); err != nil {
			t.Fatal(err)
		}
		found := false
		tb.Entries(func(f sessions.Fingerprint, v, _ int64) bool {
			if f == (sessions.Fingerprint{Hi: 0x0123456789abcdef, Lo: 1}) {
				found = true
				if v != 2 {
					t.Errorf("%s: value %d loaded, want the last entry's 2", name, v)
				}
			}
			return true
		})
		if found != tc.loaded {
			t.Errorf("%s: loaded %v, want %v", name, found, tc.loaded)
		}
		tb.Close()
	}
}
