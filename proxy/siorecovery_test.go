package proxy

import (
	"testing"
	"time"

	"github.com/chatguard/chatguard/sessions"
)

// A pid is judged against the namespace and user it was given to, with
// e-mail keys in any case; an unknown one, or one past the recovery
// window, is not judged.
func TestPIDOwners(t *testing.T) {
	t.Parallel()
	tb := newPIDOwners()
	now := time.Unix(1_700_000_000, 0)
	tb.record("p1", "/", "Ana@Example.com", now)
	tb.record("p2", "/public", "", now)
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
	// A record after the window has passed expires the old ones.
	tb.record("p3", "/", "x", now.Add(sessions.RecoveryWindow+2*time.Minute))
	if tb.mismatch("p1", "/", "bob@example.com") || tb.len() != 1 {
		t.Errorf("expired pids kept: %d", tb.len())
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
