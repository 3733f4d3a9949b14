package sessions

import (
	"errors"
	"testing"
)

// The registry keys users as rate limits do (userkey.Normalise): an e-mail
// in any case is one user, in presence, the per-user socket cap and Kick; a
// key without an @ (a sub claim) stays case-sensitive.
func TestRegistryUserKeyEmailCase(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t, regOpts{maxUser: 2, maxIP: 10})

	a1, err := f.reg.Admit("Bob@Example.com", ip1)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := f.reg.Admit("bob@example.com", ip2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Admit(" BOB@EXAMPLE.COM", ip1); !errors.Is(err, ErrTooManyUserSockets) {
		t.Fatalf("a third socket of bob in another case: %v, want ErrTooManyUserSockets", err)
	}
	// SetUser to the same user in another case keeps the one place.
	if err := a1.SetUser("bob@EXAMPLE.com"); err != nil {
		t.Fatalf("SetUser to the same user, another case: %v", err)
	}
	if _, err := f.reg.Admit("bob@example.com", ip1); !errors.Is(err, ErrTooManyUserSockets) {
		t.Fatalf("after SetUser in another case: %v, want ErrTooManyUserSockets", err)
	}

	s1 := f.connect("s1", "Bob@Example.com")
	s2 := f.connect("s2", "bob@example.com")
	if n := f.std.ConnectedUsers.Len(); n != 1 {
		t.Fatalf("connectedUsers = %d, want 1 (one user in two cases)", n)
	}
	if id, ok := f.entry(t, "bob@example.com"); !ok || id != "s2" {
		t.Fatalf("bob's entry = %q %v, want s2 (the latest socket)", id, ok)
	}
	f.reg.Activity("BOB@example.com", "s2") // finds the entry
	s3 := f.connect("s3", "")
	f.reg.Identify("s3", s3, "Carol@Example.com", "agent", "Carol")
	if _, ok := f.entry(t, "carol@example.com"); !ok {
		t.Fatal("Identify did not key carol by her lower-case e-mail")
	}

	if n := f.reg.Kick("BOB@EXAMPLE.COM", "admin"); n != 2 {
		t.Fatalf("Kick in upper case disconnected %d sockets, want 2", n)
	}
	if len(s1.got()) != 1 || len(s2.got()) != 1 {
		t.Fatalf("disconnects: s1 %v, s2 %v", s1.got(), s2.got())
	}
	if _, ok := f.entry(t, "bob@example.com"); ok {
		t.Fatal("bob's entry outlived the kick")
	}
	a1.Release()
	a2.Release()
	if _, err := f.reg.Admit("BOB@example.com", ip1); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

// A key without an @ is a sub claim: case-sensitive (RFC 7519).
func TestRegistryUserKeySubIsCaseSensitive(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t, regOpts{maxUser: 1, maxIP: 10})
	if _, err := f.reg.Admit("Carol", ip1); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Admit("carol", ip1); err != nil {
		t.Fatalf("carol is not Carol: %v", err)
	}
	f.connect("s1", "Carol")
	f.connect("s2", "carol")
	if n := f.std.ConnectedUsers.Len(); n != 2 {
		t.Fatalf("connectedUsers = %d, want 2", n)
	}
	if n := f.reg.Kick("CAROL", "admin"); n != 0 {
		t.Fatalf("Kick(CAROL) disconnected %d sockets, want 0", n)
	}
	if n := f.reg.Kick("Carol", "admin"); n != 1 {
		t.Fatalf("Kick(Carol) disconnected %d sockets, want 1", n)
	}
}
