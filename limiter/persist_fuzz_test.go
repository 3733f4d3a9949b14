package limiter

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatguard/chatguard/sessions"
)

// FuzzPersistLoad: whatever the rate-limit file holds, loading it never
// panics or stops the proxy; a file that loads leaves only entries that have
// not expired, and one that does not is moved aside, reported unhealthy and
// loads nothing at all.
func FuzzPersistLoad(f *testing.F) {
	f.Add([]byte(`{"version":2,"savedAt":"2026-01-01T00:00:00Z","seed":"00000000000000ff","entries":{"0123456789abcdef0123456789abcdef":[1,9000000000000000000]}}`))
	f.Add([]byte(`{"version":1,"entries":{"login|ip=1.2.3.4":9000000000000000000}}`))
	f.Add([]byte(`{"version":2,"seed":"zz","entries":{}}`))
	f.Add([]byte(`{"version":2,"seed":"1","entries":{"short":[1,2]}}`))
	f.Add([]byte(`{"version":3}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "rate-limits.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		clk := newTestClock()
		tb, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 64, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer tb.Close()
		p, err := NewPersister(PersistOptions{Table: tb, Path: path, Logger: discardLog(), Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		now := clk.Now().UnixNano()
		tb.Entries(func(_ sessions.Fingerprint, _, exp int64) bool {
			if exp != 0 && exp <= now {
				t.Fatalf("an expired entry was loaded (expiry %d, now %d)", exp, now)
			}
			return true
		})
		if !p.Healthy() && tb.Len() != 0 {
			t.Fatalf("a file that did not load left %d entries (all or nothing)", tb.Len())
		}
		if _, err := os.Stat(path); p.Healthy() == os.IsNotExist(err) {
			t.Fatalf("healthy=%v but the file was %s", p.Healthy(), map[bool]string{true: "moved aside", false: "left in place"}[os.IsNotExist(err)])
		}
		clk.Advance(time.Second)
		if err := p.Close(); err != nil { // a save after any load works
			t.Fatal(err)
		}
	})
}

// FuzzParseEntries: whatever the fast reader takes, encoding/json reads the
// same way (the same fingerprints and values).
func FuzzParseEntries(f *testing.F) {
	f.Add([]byte(`{"0123456789abcdef0123456789abcdef":[1,9000000000000000000]}`))
	f.Add([]byte("{ \"fedcba98765432100123456789abcdef\" :\n[ -1 , 2 ] , \"0123456789abcdef0123456789abcdef\":[3,4]}"))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"0123456789ABCDEF0123456789abcdef":[1,2]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, ok := parseEntries(data)
		if !ok {
			return
		}
		var m map[string][2]int64
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("taken by the fast reader, refused by encoding/json: %v", err)
		}
		last := map[string][2]int64{} // a repeated key: the last one counts, as in a map
		for _, e := range entries {
			last[fmt.Sprintf("%016x%016x", e.f.Hi, e.f.Lo)] = [2]int64{e.v, e.exp}
		}
		if !maps.Equal(last, m) {
			t.Fatalf("fast reader %v, encoding/json %v", last, m)
		}
	})
}
