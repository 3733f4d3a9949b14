package proxy

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/chatguard/chatguard/internal/identity/userkey"
	"github.com/chatguard/chatguard/internal/socketio"
	"github.com/chatguard/chatguard/sessions"
)

// pidOwners remembers, for each Socket.IO socket the upstream accepted with
// a private id (connection state recovery), the namespace and the user
// chatguard admitted its CONNECT as. A client that reconnects sends that
// pid in its CONNECT payload and, with skipMiddlewares, the backend gives
// it the old socket — old user included — whatever its new token says. A
// pid whose recorded user is not the one this CONNECT is admitted as
// (another user, or anonymous after a logout) is taken out of the payload:
// the backend then connects a new socket and runs its middleware on the
// new token, and who chatguard counts is who the backend serves.
type pidOwners struct {
	mu    sync.Mutex
	byPID map[string]pidOwner
	order []pidRef // pids whose session ended, by time, for expiry
}

type pidOwner struct {
	ns, user string
	sess     *sioSession // the session holding it; nil once that ended
	at       time.Time   // when that session ended
}

type pidRef struct {
	pid string
	at  time.Time
}

// maxPIDs bounds the pids of ended sessions kept: a recovery window's worth
// of disconnects on a busy instance; past it the oldest go first (their
// clients then connect anew, or, if they come back here unknown, are left
// to the backend). The pids of live sessions are bounded by the sessions.
const maxPIDs = 200_000

func newPIDOwners() *pidOwners { return &pidOwners{byPID: map[string]pidOwner{}} }

// record notes the pid the upstream gave sess's socket in ns, admitted as
// user. It is kept while sess lives, and for the recovery window after.
func (t *pidOwners) record(pid, ns, user string, sess *sioSession) {
	if pid == "" || len(pid) > 128 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byPID[pid] = pidOwner{ns: ns, user: userkey.Normalise(user), sess: sess}
}

// ended starts the recovery window of sess's pids: from now, not from
// their CONNECT (review: a socket older than the window was unprotected).
func (t *pidOwners) ended(sess *sioSession, pids []string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.order) > 0 && (now.Sub(t.order[0].at) >= sessions.RecoveryWindow+time.Minute || len(t.order) >= maxPIDs) {
		old := t.order[0]
		if o, ok := t.byPID[old.pid]; ok && o.sess == nil && o.at.Equal(old.at) {
			delete(t.byPID, old.pid)
		}
		t.order = t.order[1:]
	}
	if len(t.order) == 0 {
		t.order = nil // let the array go
	}
	for _, pid := range pids {
		if o, ok := t.byPID[pid]; ok && o.sess == sess { // not one a later session took over
			o.sess, o.at = nil, now
			t.byPID[pid] = o
			t.order = append(t.order, pidRef{pid: pid, at: now})
		}
	}
}

// mismatch reports whether a CONNECT to ns admitted as user may not
// recover pid: chatguard gave pid to another namespace or another user.
// A pid it never gave out (another replica's, one from before a restart)
// is not judged: the backend decides as it would without chatguard.
func (t *pidOwners) mismatch(pid, ns, user string) bool {
	t.mu.Lock()
	o, ok := t.byPID[pid]
	t.mu.Unlock()
	return ok && (o.ns != ns || o.user != userkey.Normalise(user))
}

// len is the number of pids remembered.
func (t *pidOwners) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byPID)
}

// withoutRecovery is a CONNECT packet for ns with data's pid and offset
// taken out (the rest of the auth payload kept); ok false when data is
// not a JSON object.
func withoutRecovery(ns string, data []byte) (packet []byte, ok bool) {
	var auth map[string]json.RawMessage
	if json.Unmarshal(data, &auth) != nil || auth == nil {
		return nil, false
	}
	delete(auth, "pid")
	delete(auth, "offset")
	b, err := json.Marshal(auth)
	if err != nil {
		return nil, false
	}
	return socketio.Packet{Type: socketio.PacketConnect, Namespace: ns, ID: -1, Data: b}.AppendEncode(nil), true
}
