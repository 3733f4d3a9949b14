package limiter

import (
	"slices"
	"testing"
	"time"
)

func TestNodeBreakers(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	b := newNodeBreakers(3, time.Second)
	b.now = func() time.Time { return now }
	const a, other = "10.0.0.1:7000", "10.0.0.2:7000"
	send := func(addr string) (bool, bool) { return b.admit(addr, "k@"+addr) }

	for i := 1; i <= 2; i++ {
		if opened, _ := b.report(a, "k", true, false); opened {
			t.Fatalf("opened after %d failed rounds, want 3", i)
		}
		if ok, _ := send(a); !ok || !b.suspect(a) {
			t.Fatalf("after %d failures: sent=%v suspect=%v, want sent and suspect", i, ok, b.suspect(a))
		}
	}
	if opened, _ := b.report(a, "k", true, false); !opened {
		t.Fatal("3 failed rounds in a row did not open the breaker")
	}
	if ok, _ := send(a); ok {
		t.Fatal("an open node was sent to before its cooldown")
	}
	if ok, _ := send(other); !ok || b.suspect(other) {
		t.Fatal("another node was held back")
	}
	if got := b.down(); !slices.Equal(got, []string{a}) {
		t.Fatalf("down %v", got)
	}
	// A round that began before the breaker opened proves nothing.
	if _, closed := b.report(a, "k", false, false); closed {
		t.Fatal("a success that was not the probe closed the breaker")
	}

	now = now.Add(time.Second)
	ok, probe := send(a)
	if !ok || !probe {
		t.Fatalf("after the cooldown: sent=%v probe=%v, want the probe", ok, probe)
	}
	if ok, _ := send(a); ok {
		t.Fatal("a second round probed the node at the same time")
	}
	if opened, _ := b.report(a, "k", true, true); opened {
		t.Fatal("a failed probe reported a new opening")
	}
	if ok, _ := send(a); ok {
		t.Fatal("a failed probe did not restart the cooldown")
	}
	now = now.Add(time.Second)
	if _, probe := send(a); !probe {
		t.Fatal("no second probe")
	}
	if _, closed := b.report(a, "k", false, true); !closed {
		t.Fatal("a successful probe did not close the breaker")
	}
	if ok, probe := send(a); !ok || probe || b.suspect(a) || len(b.down()) != 0 {
		t.Fatal("a closed node is still held back")
	}

	// A node whose keys moved (a replica was promoted) is forgotten.
	for range 3 {
		b.report(a, "k", true, false)
	}
	owner := a
	if got := b.forget(func(string) string { return owner }); len(got) != 0 {
		t.Fatalf("forgot %v while it still owns its keys", got)
	}
	owner = other
	if got := b.forget(func(string) string { return owner }); !slices.Equal(got, []string{a}) || len(b.down()) != 0 {
		t.Fatalf("forgot %v, down %v: want %s forgotten", got, b.down(), a)
	}
}

// keySlot is Redis's: CRC16 of the hash tag or the key, mod 16,384 (the
// values CLUSTER KEYSLOT gives), and probeKeyFor lands in the key's slot
// whatever braces the key holds, without touching the key itself.
func TestKeySlotAndProbeKey(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]int{
		"foo": 12182, "bar": 5061, "123456789": 12739, "{user1000}.following": 3443,
		"{user1000}.followers": 3443, "foo{}{bar}": 8363, "foo{{bar}}zap": 4015, "foo{bar}{zap}": 5061,
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	for _, key := range []string{"chatguard:rl:login|email=a{x}@x.com", "chatguard:rl:messages|user=b}c{", "{chatguard}:messages|user=a", "chatguard:rl:webhook|ip=10.0.0.1"} {
		prefix := "chatguard:rl:"
		if key[0] == '{' {
			prefix = "{chatguard}:"
		}
		p := probeKeyFor(key, prefix)
		if keySlot(prefix+p) != keySlot(key) || prefix+p == key {
			t.Errorf("probeKeyFor(%q) = %q: slot %d, want %d, and not the key itself", key, p, keySlot(prefix+p), keySlot(key))
		}
	}
}
