package proxy

import (
	"testing"
	"time"

	"github.com/chatguard/chatguard/sessions"
)

// A pid is judged against the namespace and user it was given to, with
// e-mail keys in any case; an unknown one is not judged. It is kept while
// its session lives, however long, and for the recovery window after its
// session ended (review: a socket older than the window was unprotected).
func TestPIDOwners(t *testing.T) {
	t.Parallel()
	tb := newPIDOwners()
	alice, pub, other := &sioSession{}, &sioSession{}, &sioSession{}
	now := time.Unix(1_700_000_000, 0)
	tb.record("p1", "/", "Ana@Example.com", alice)
	tb.record("p2", "/public", "", pub)
	for _, tc := range []struct {
		pid, ns, user string
		mismatch      bool
	}{
		{"p1", "/", "ana@example.com", false},
		{"p1", "/", "bob@example.com", true},
		{"p1", "/", "", true},
		{"p1", "/admin", "ana@example.com", true},
		{"p2", "/public", "", false},
		{"p2", "/public", "ana@example.com", true},
		{"p9", "/", "bob@example.com", false},
	} {
		if got := tb.mismatch(tc.pid, tc.ns, tc.user); got != tc.mismatch {
			t.Errorf("mismatch(%s, %s, %q) = %v", tc.pid, tc.ns, tc.user, got)
		}
	}
	// Hours later, another session's end expires what it can: not p1,
	// whose session is alive.
	later := now.Add(3 * time.Hour)
	tb.record("p3", "/", "x", other)
	tb.ended(other, []string{"p3"}, later)
	tb.ended(pub, []string{"p2"}, later)
	if !tb.mismatch("p1", "/", "bob@example.com") {
		t.Fatal("a live session's pid expired")
	}
	// Ended, p1 is kept for the window, then goes.
	tb.ended(alice, []string{"p1"}, later)
	tb.ended(other, nil, later.Add(sessions.RecoveryWindow))
	if !tb.mismatch("p1", "/", "bob@example.com") {
		t.Fatal("p1 expired within the window after its session ended")
	}
	tb.ended(other, nil, later.Add(sessions.RecoveryWindow+2*time.Minute))
	if tb.mismatch("p1", "/", "bob@example.com") || tb.len() != 0 {
		t.Errorf("expired pids kept: %d", tb.len())
	}
	// A pid a later session took over stays with that session when the
	// first one ends.
	again := &sioSession{}
	tb.record("p4", "/", "ana@example.com", alice)
	tb.record("p4", "/", "ana@example.com", again)
	tb.ended(alice, []string{"p4"}, later)
	tb.ended(other, nil, later.Add(time.Hour))
	if !tb.mismatch("p4", "/", "bob@example.com") {
		t.Error("the later session's pid expired with the first session's end")
	}
}

func TestWithoutRecovery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ns, data, want string
		ok             bool
	}{
		{"/", `{"token":"t","pid":"p","offset":"o"}`, `0{"token":"t"}`, true},
		{"/admin", `{"pid":"p"}`, `0/admin,{}`, true},
		{"/", `"not an object"`, "", false},
		{"/", `null`, "", false},
	} {
		got, ok := withoutRecovery(tc.ns, []byte(tc.data))
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("withoutRecovery(%s, %s) = %q, %v; want %q, %v", tc.ns, tc.data, got, ok, tc.want, tc.ok)
		}
	}
}
