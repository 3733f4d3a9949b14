package sessions

import (
	"slices"
	"strconv"
	"testing"
)

// A socket whose connection ended and that Socket.IO's connection state
// recovery gives back (the same id, the same user, a new connection) is
// back in its conversations: the backend restored its rooms. QA's real
// socket.io-client showed activeConversations 2 → 0 after a recovered blip,
// for good. Only within the recovery window, for the same user, and not
// after a kick (Socket.IO does not recover those).
func TestRegistryRecoveredSocketGetsItsConversations(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t, regOpts{maxUser: 10, maxIP: 10})
	ana := "ana@example.com"
	s1 := f.connect("sid1", ana)
	f.reg.Join("sid1", "c1")
	f.reg.Join("sid1", "c2")
	f.reg.DisconnectSocket("sid1", s1)
	if got := f.stats(); got != [3]int{0, 0, 0} {
		t.Fatalf("after the drop: %v", got)
	}
	s2 := f.connect("sid1", ana)
	if got := f.stats(); got != [3]int{1, 1, 2} {
		t.Fatalf("after recovery: %v, want 1 socket, 1 user, 2 conversations", got)
	}
	if got := f.members("c1"); !slices.Equal(got, []string{ana}) {
		t.Fatalf("c1 after recovery: %v", got)
	}
	f.reg.Leave("sid1", "c2")
	if got := f.members("c2"); len(got) != 0 {
		t.Fatalf("c2 after a leave on the recovered socket: %v", got)
	}

	// Dropped again, the id comes back for another user: nothing of ana's.
	f.reg.DisconnectSocket("sid1", s2)
	s3 := f.connect("sid1", "eve@example.com")
	if got := f.stats(); got != [3]int{1, 1, 0} {
		t.Fatalf("the same id for another user: %v", got)
	}
	f.reg.DisconnectSocket("sid1", s3)

	// After the window: nothing.
	s4 := f.connect("sid2", "bob")
	f.reg.Join("sid2", "c3")
	f.reg.DisconnectSocket("sid2", s4)
	f.clk.Advance(RecoveryWindow)
	f.connect("sid2", "bob")
	if got := f.members("c3"); len(got) != 0 {
		t.Fatalf("c3 recovered after the window: %v", got)
	}

	// Kicked: nothing either.
	f.connect("sid3", "carol")
	f.reg.Join("sid3", "c4")
	f.reg.Kick("carol", "admin")
	f.connect("sid3", "carol")
	if got := f.members("c4"); len(got) != 0 {
		t.Fatalf("c4 recovered after a kick: %v", got)
	}
}

// What waits for recovery is bounded: the oldest sockets' conversations go
// first when maxDroppedConvs would be passed.
func TestRegistryRecoveryIsBounded(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t, regOpts{})
	n := maxDroppedConvs/maxConversationsPerSocket + 10
	for i := 0; i < n; i++ {
		id := "s" + string(rune('a'+i%26)) + strconv.Itoa(i)
		s := f.connect(id, "u"+strconv.Itoa(i))
		for c := 0; c < maxConversationsPerSocket; c++ {
			f.reg.Join(id, "c"+strconv.Itoa(c))
		}
		f.reg.DisconnectSocket(id, s)
	}
	f.reg.mu.Lock()
	held, kept := f.reg.droppedConvs, len(f.reg.dropped)
	f.reg.mu.Unlock()
	if held > maxDroppedConvs || kept > maxDroppedConvs/maxConversationsPerSocket {
		t.Fatalf("holding %d conversations of %d sockets, bound %d", held, kept, maxDroppedConvs)
	}
	if held == 0 {
		t.Fatal("nothing kept")
	}
}

// A multiplexed session may register its socket id from a public
// namespace before the user's token arrives with the next one: recovered,
// that id first comes back anonymous, then Identify names the user. The
// conversations kept for the id come back then, and only for that user.
func TestRegistryAnonymousRecoveryThenIdentify(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t, regOpts{maxUser: 10, maxIP: 10})
	ana := "ana@example.com"
	s1 := f.connect("sid1", ana)
	f.reg.Join("sid1", "c1")
	f.reg.DisconnectSocket("sid1", s1)

	s2 := f.connect("sid1", "")
	if got := f.stats(); got != [3]int{1, 0, 0} {
		t.Fatalf("recovered anonymous: %v", got)
	}
	f.reg.Identify("sid1", s2, ana, "basic", "")
	if got := f.stats(); got != [3]int{1, 1, 1} {
		t.Fatalf("identified: %v, want ana back in c1", got)
	}
	if got := f.members("c1"); !slices.Equal(got, []string{ana}) {
		t.Fatalf("c1: %v", got)
	}

	// Named as someone else, the id gets nothing of ana's.
	f.reg.DisconnectSocket("sid1", s2)
	s3 := f.connect("sid1", "")
	f.reg.Identify("sid1", s3, "eve@example.com", "basic", "")
	if got := f.stats(); got != [3]int{1, 1, 0} {
		t.Fatalf("identified as eve: %v", got)
	}
}

// The same, while the old connection of the id has not ended yet (its end
// not seen when the recovered one registers anonymously): the old socket's
// conversations are kept for the Identify that follows (review).
func TestRegistryAnonymousRecoveryOverALiveOldSocket(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t, regOpts{maxUser: 10, maxIP: 10})
	ana := "ana@example.com"
	old := f.connect("sid1", ana)
	f.reg.Join("sid1", "c1")
	s2 := f.connect("sid1", "")
	f.reg.Identify("sid1", s2, ana, "basic", "")
	if got := f.stats(); got != [3]int{1, 1, 1} {
		t.Fatalf("after Identify: %v, want ana back in c1", got)
	}
	f.reg.DisconnectSocket("sid1", old) // the old connection's end, seen late: no effect
	if got := f.stats(); got != [3]int{1, 1, 1} {
		t.Fatalf("after the old connection's end: %v", got)
	}
}
