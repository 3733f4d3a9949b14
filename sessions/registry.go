package sessions

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatguard/chatguard/internal/identity/userkey"
)

// Socket is a live client connection the registry can end.
type Socket interface {
	// Disconnect tells the client it is disconnected (a Socket.IO
	// DISCONNECT, so that it does not reconnect blindly), then closes both
	// sides. reason is a metrics label value. It must not block and may be
	// called more than once.
	Disconnect(reason string)
}

// SocketInfo describes a live socket.
type SocketInfo struct {
	ID          string // unique per socket: the Socket.IO socket id, else chatguard's own
	User        string // empty for an anonymous socket; the registry keys it by userkey.Normalise
	Role        string
	DisplayName string
	IP          netip.Addr
	ConnectedAt time.Time
}

// Errors of Registry.Admit.
var (
	ErrTooManyUserSockets = errors.New("sessions: too many sockets for this user")
	ErrTooManyIPSockets   = errors.New("sessions: too many sockets from this address")
)

// RegistryOptions configure a Registry.
type RegistryOptions struct {
	// Tables are the seed's tables the registry keeps: connectedUsers and
	// conversationUsers. Required.
	Tables *Standard
	// MaxPerUser and MaxPerIP bound concurrent sockets; 0 = no bound.
	MaxPerUser, MaxPerIP int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Registry is the seed's SocketManager state: the live sockets, which user
// and address each belongs to, connectedUsers (user → its latest socket)
// and conversationUsers (conversation → users). It is safe for concurrent use.
//
// Users are keyed by userkey.Normalise, as rate limits are: every method
// that takes a user normalises it, so that Bob@Example.com and
// bob@example.com are one user in presence, the per-user socket cap and Kick.
//
// Lock order: r.mu, then r.idxMu or a table's shard lock. Table calls are
// made under r.mu and may report an eviction synchronously, so OnEvicted
// takes only r.idxMu, which guards the sockets and userSocks maps for
// readers outside r.mu (writers hold both) and is never held across a table
// call.
type Registry struct {
	tables     *Standard
	maxPerUser int
	maxPerIP   int
	now        func() time.Time

	mu      sync.Mutex
	idxMu   sync.Mutex
	sockets map[string]*liveSocket
	// userSocks indexes the sockets by user, so that a disconnect costs
	// the user's sockets, not every socket's (review: 20,000 sockets in
	// 256 conversations took 70 ms under r.mu per disconnect).
	userSocks map[string]map[string]*liveSocket
	// leaving is the socket unregister is taking out (guarded by idxMu):
	// an entry found expired then still names a live user (see OnEvicted).
	leaving string
	byUser  map[string]int
	byIP    map[netip.Addr]int
	pending map[string]int // users admitted whose socket is not registered yet

	// dropped: the conversations of sockets whose connection ended, kept
	// for Socket.IO's connection state recovery (see Connect); order is
	// their ids oldest first, to bound them.
	dropped      map[string]droppedSocket
	order        []droppedRef
	droppedConvs int // conversations held in dropped
}

type droppedRef struct {
	id string
	at time.Time
}

// droppedSocket is what a socket that lost its connection may get back.
type droppedSocket struct {
	user  string
	convs []string
	at    time.Time
}

// RecoveryWindow is how long a socket that lost its connection keeps its
// conversations for a client that recovers it (the same socket id, the
// same user): Socket.IO's default maxDisconnectionDuration, 2 min.
const RecoveryWindow = 2 * time.Minute

// maxDroppedConvs bounds the conversations kept for recovery, all sockets
// together (about 3 MB): the oldest sockets' go first.
const maxDroppedConvs = 65536

type liveSocket struct {
	info  SocketInfo
	sock  Socket
	convs []string // conversations this socket joined
	// evicting: its user's connectedUsers entry was evicted and the
	// socket was told to disconnect, which ends it asynchronously; until
	// then it is not a socket that can own an entry (see Check).
	evicting atomic.Bool
}

// NewRegistry returns a Registry over o.Tables. Wire its OnEvicted into
// StandardOptions.OnConnectedUserEvicted so that an evicted user is disconnected.
func NewRegistry(o RegistryOptions) *Registry {
	r := &Registry{
		tables: o.Tables, maxPerUser: o.MaxPerUser, maxPerIP: o.MaxPerIP,
		now:     o.Now,
		sockets: map[string]*liveSocket{}, userSocks: map[string]map[string]*liveSocket{},
		byUser: map[string]int{}, byIP: map[netip.Addr]int{},
		dropped: map[string]droppedSocket{},
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r
}

// Admission is a place for one socket, taken by Admit. Release it exactly
// once, when the socket ends (or never registered).
type Admission struct {
	r    *Registry
	user string
	ip   netip.Addr
	once sync.Once
	done bool // released; guarded by r.mu
}

// Admit reserves a place for one more socket of user (may be empty) from
// ip, or says which limit it is over.
func (r *Registry) Admit(user string, ip netip.Addr) (*Admission, error) {
	user = userkey.Normalise(user)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.maxPerIP > 0 && r.byIP[ip] >= r.maxPerIP {
		return nil, ErrTooManyIPSockets
	}
	if user != "" && r.maxPerUser > 0 && r.byUser[user] >= r.maxPerUser {
		return nil, ErrTooManyUserSockets
	}
	r.byIP[ip]++
	if user != "" {
		r.byUser[user]++
	}
	return &Admission{r: r, user: user, ip: ip}, nil
}

// SetUser moves the admission to user (who was learned after the upgrade,
// from the CONNECT payload), or reports ErrTooManyUserSockets.
func (a *Admission) SetUser(user string) error {
	user = userkey.Normalise(user)
	r := a.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if user == a.user || a.done {
		return nil
	}
	if user != "" && r.maxPerUser > 0 && r.byUser[user] >= r.maxPerUser {
		return ErrTooManyUserSockets
	}
	r.decUser(a.user)
	if user != "" {
		r.byUser[user]++
	}
	a.user = user
	return nil
}

// Release frees the place.
func (a *Admission) Release() {
	a.once.Do(func() {
		r := a.r
		r.mu.Lock()
		defer r.mu.Unlock()
		a.done = true
		r.decUser(a.user)
		if r.byIP[a.ip]--; r.byIP[a.ip] <= 0 {
			delete(r.byIP, a.ip)
		}
	})
}

func (r *Registry) decUser(user string) {
	if user == "" {
		return
	}
	if r.byUser[user]--; r.byUser[user] <= 0 {
		delete(r.byUser, user)
	}
}

// Connect registers a live socket; a user's latest socket becomes its
// connectedUsers entry.
func (r *Registry) Connect(info SocketInfo, s Socket) {
	if info.ConnectedAt.IsZero() {
		info.ConnectedAt = r.now()
	}
	info.User = userkey.Normalise(info.User)
	r.mu.Lock()
	defer r.mu.Unlock()
	ls := &liveSocket{info: info, sock: s}
	if old := r.sockets[info.ID]; old != nil && old.sock != s && old.info.User == info.User {
		// The same id from another connection: Socket.IO's connection
		// state recovery gives a client that lost its link its old socket
		// back, rooms and all, while the old connection has not ended yet.
		// The new one takes the conversations over; the old one's end
		// (DisconnectSocket) then leaves the entry alone.
		ls.convs = old.convs
	} else if old != nil && old.sock != s {
		// Another user's, or none yet (a multiplexed session's public
		// namespace first): the old socket's state goes, kept for a later
		// Identify of the same user.
		r.keepForRecovery(old)
		r.unregister(info.ID)
		r.recoverDropped(ls)
	} else {
		r.recoverDropped(ls)
	}
	if info.User != "" {
		// An anonymous socket keeps what was kept for it: a multiplexed
		// session's first namespace may be a public one, and the user's
		// token comes with the next (see Identify).
		r.forgetDropped(info.ID)
	}
	r.index(ls)
	if info.User != "" {
		r.tables.ConnectedUsers.Set(info.User, ConnectedUser{
			SocketID: info.ID, ConnectedAt: info.ConnectedAt, LastActivity: info.ConnectedAt,
			Role: info.Role, DisplayName: info.DisplayName,
		})
	}
}

// Activity records a client event of one of user's sockets (id; any of
// them, not only the one that owns the entry): the user's lastActivity is
// now and the entry's TTL starts again. Heartbeats are not activity.
func (r *Registry) Activity(user, id string) {
	user = userkey.Normalise(user)
	if user == "" {
		return
	}
	now := r.now()
	r.tables.ConnectedUsers.Update(user, func(old ConnectedUser, ok bool) (ConnectedUser, time.Duration, bool) {
		if !ok {
			return old, 0, false // no entry: nothing to extend
		}
		// The entry is the user's, whichever socket owns it (review: a user
		// active on an older socket lost its entry, and its newest, idle,
		// socket, after 2 h).
		old.LastActivity = now
		return old, r.tables.ConnectedUsers.ttl, true
	})
}

// RefreshConversations is a client event of socket id: its conversations
// are in use, so their conversationUsers entries start their TTL again,
// with the socket's user among the members (an entry that expired while the
// socket was in it comes back). Before, only a join did: an hour after it,
// a conversation its members were still writing in left the table, and its
// member list held only those who joined later (QA). The caller calls it at
// most once per ConversationRefreshEvery per socket: it costs one update
// per conversation of the socket (256 at most).
func (r *Registry) RefreshConversations(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sockets[id]
	if s == nil || s.info.User == "" || s.evicting.Load() {
		return
	}
	for _, c := range s.convs {
		r.addMember(c, s.info.User)
	}
}

// ConversationRefreshEvery is how often a socket's events refresh its
// conversations (see RefreshConversations): a quarter of their TTL, so that
// an entry lives 45 to 60 minutes (with the 1 h default) after its last event.
func (r *Registry) ConversationRefreshEvery() time.Duration {
	return r.tables.ConversationUsers.ttl / 4
}

// maxConversationsPerSocket bounds the conversations one socket is followed
// in; joins beyond it still reach the backend but are not tracked.
const maxConversationsPerSocket = 256

// Join adds the socket's user to a conversation.
func (r *Registry) Join(id, conversation string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sockets[id]
	if s == nil || s.info.User == "" || conversation == "" {
		return
	}
	if !slices.Contains(s.convs, conversation) {
		if len(s.convs) >= maxConversationsPerSocket {
			return // one socket cannot make joins (and its disconnect) cost without bound
		}
		s.convs = append(s.convs, conversation)
	}
	r.addMember(conversation, s.info.User)
}

// memberBytes is what one user costs a conversation's set beyond the
// user's bytes (map slot, string header, control byte, load factor).
const memberBytes = 32

// addMember puts user in conversation's set, or refreshes its TTL; the
// caller holds r.mu. O(1): the set is changed in place (review: a copy per
// join made 20,000 joins of one room take 5 s and allocate 3.9 GiB).
func (r *Registry) addMember(conversation, user string) {
	r.tables.ConversationUsers.Update(conversation, func(old Members, ok bool) (Members, time.Duration, bool) {
		if !ok || old.set == nil {
			old = Members{set: map[string]struct{}{}}
		}
		if _, in := old.set[user]; !in {
			old.set[user] = struct{}{}
			old.n++
			old.bytes += memberBytes + len(user)
			old.peak = max(old.peak, old.n)
		}
		return old, r.tables.ConversationUsers.ttl, true
	})
}

// removeMember takes user out of conversation's set, dropping a
// conversation left empty; the caller holds r.mu.
func (r *Registry) removeMember(conversation, user string) {
	r.tables.ConversationUsers.Update(conversation, func(old Members, ok bool) (Members, time.Duration, bool) {
		if !ok {
			return old, KeepTTL, false
		}
		if _, in := old.set[user]; !in {
			return old, KeepTTL, true
		}
		if old.n == 1 {
			return old, 0, false // the conversation is empty: drop it
		}
		delete(old.set, user)
		old.n--
		old.bytes -= memberBytes + len(user)
		if old.peak >= 64 && old.n <= old.peak/4 {
			// A Go map never shrinks: a room that emptied gives its
			// memory back (and the accounting stays true). Not maps.Clone,
			// which keeps the source's size (review: 847 KiB held for 100
			// members left of 20,000).
			set := make(map[string]struct{}, old.n)
			for u := range old.set {
				set[u] = struct{}{}
			}
			old.set, old.peak = set, old.n
		}
		return old, KeepTTL, true
	})
}

// Members is a conversationUsers value: the users in a conversation (the
// seed's Set(emails)). The set is shared by the value's copies and changed
// only by the Registry, under its lock, so that a join costs the same in a
// room of 20,000 as in a room of two; n and bytes are this copy's view of
// it, which is what the table's memory accounting and Len read. Read the
// users through Registry.ConversationMembers.
type Members struct {
	set   map[string]struct{}
	n     int
	bytes int
	peak  int
}

// Len is the number of users.
func (m Members) Len() int { return m.n }

// Bytes is the users' estimated memory.
func (m Members) Bytes() int { return m.bytes }

// ConversationMembers lists the users in conversation, sorted; nil if none.
func (r *Registry) ConversationMembers(conversation string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.tables.ConversationUsers.Get(conversation)
	if !ok || m.n == 0 {
		return nil
	}
	out := slices.Collect(maps.Keys(m.set))
	slices.Sort(out)
	return out
}

// Leave takes the socket's user out of a conversation, unless another of
// the user's sockets is still in it.
func (r *Registry) Leave(id, conversation string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sockets[id]
	if s == nil || s.info.User == "" {
		return
	}
	s.convs = slices.DeleteFunc(s.convs, func(c string) bool { return c == conversation })
	r.leave(s.info.User, conversation)
}

// leave removes user from conversation unless another socket of the user
// is in it; the caller holds r.mu.
func (r *Registry) leave(user, conversation string) {
	for _, o := range r.userSocks[user] {
		if slices.Contains(o.convs, conversation) {
			return
		}
	}
	r.removeMember(conversation, user)
}

// Disconnect unregisters socket id (it ended): its conversations and, if it
// was the user's current socket, the connectedUsers entry.
func (r *Registry) Disconnect(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unregister(id)
}

// Identify gives socket id, held by s and registered without a user, the
// user a later CONNECT proved (Socket.IO multiplexes namespaces on one
// connection: "/" may connect anonymously and "/admin" with a token): the
// socket then counts in presence and can be kicked by user.
func (r *Registry) Identify(id string, s Socket, user, role, name string) {
	user = userkey.Normalise(user)
	if user == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ls := r.sockets[id]
	if ls == nil || ls.sock != s || ls.info.User != "" {
		return
	}
	r.idxMu.Lock()
	ls.info.User, ls.info.Role, ls.info.DisplayName = user, role, name
	r.indexUser(ls)
	r.idxMu.Unlock()
	r.recoverDropped(ls)
	r.forgetDropped(id)
	r.tables.ConnectedUsers.Set(user, ConnectedUser{
		SocketID: id, ConnectedAt: ls.info.ConnectedAt, LastActivity: r.now(), Role: role, DisplayName: name,
	})
}

// DisconnectSocket is Disconnect for the connection s that ended, if it
// still holds id: a recovered socket may hold it now (see Connect).
func (r *Registry) DisconnectSocket(id string, s Socket) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ls := r.sockets[id]; ls != nil && ls.sock == s {
		r.keepForRecovery(ls)
		r.unregister(id)
	}
}

// keepForRecovery keeps the user and conversations of a socket whose
// connection ended, for RecoveryWindow (see Connect and Identify); the
// caller holds r.mu.
func (r *Registry) keepForRecovery(ls *liveSocket) {
	if ls.info.User == "" {
		return
	}
	now := r.now()
	r.forgetDropped(ls.info.ID)
	for len(r.order) > 0 {
		ref := r.order[0]
		if now.Sub(ref.at) < RecoveryWindow && r.droppedConvs+len(ls.convs) <= maxDroppedConvs && len(r.order) < maxDroppedConvs {
			break
		}
		if d, ok := r.dropped[ref.id]; ok && d.at.Equal(ref.at) {
			r.forgetDropped(ref.id)
		}
		r.order = r.order[1:]
	}
	if len(r.order) == 0 {
		r.order = nil // let the array go
	}
	r.dropped[ls.info.ID] = droppedSocket{user: ls.info.User, convs: slices.Clone(ls.convs), at: now}
	r.droppedConvs += len(ls.convs)
	r.order = append(r.order, droppedRef{id: ls.info.ID, at: now})
}

// recoverDropped gives ls the conversations its id kept when its
// connection ended, if ls is the same user's within RecoveryWindow: the
// socket is back in its rooms on the backend (Socket.IO's connection state
// recovery), and in its conversations here. The caller holds r.mu.
func (r *Registry) recoverDropped(ls *liveSocket) {
	user := ls.info.User
	d, ok := r.dropped[ls.info.ID]
	if !ok || user == "" || d.user != user || r.now().Sub(d.at) >= RecoveryWindow {
		return
	}
	ls.convs = d.convs
	for _, c := range d.convs {
		r.addMember(c, user)
	}
}

// forgetDropped drops what id kept for recovery; the caller holds r.mu.
func (r *Registry) forgetDropped(id string) {
	if d, ok := r.dropped[id]; ok {
		r.droppedConvs -= len(d.convs)
		delete(r.dropped, id)
	}
}

// index registers ls under its id (and user); the caller holds r.mu.
func (r *Registry) index(ls *liveSocket) {
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	if prev := r.sockets[ls.info.ID]; prev != nil {
		r.unindexUser(prev)
	}
	r.sockets[ls.info.ID] = ls
	r.indexUser(ls)
}

// indexUser adds ls to its user's sockets; the caller holds r.mu and r.idxMu.
func (r *Registry) indexUser(ls *liveSocket) {
	u := ls.info.User
	if u == "" {
		return
	}
	m := r.userSocks[u]
	if m == nil {
		m = map[string]*liveSocket{}
		r.userSocks[u] = m
	}
	m[ls.info.ID] = ls
}

// unindexUser takes ls out of its user's sockets; the caller holds r.mu
// and r.idxMu.
func (r *Registry) unindexUser(ls *liveSocket) {
	u := ls.info.User
	if m := r.userSocks[u]; m != nil && m[ls.info.ID] == ls {
		delete(m, ls.info.ID)
		if len(m) == 0 {
			delete(r.userSocks, u)
		}
	}
}

// unregister is Disconnect with r.mu held.
func (r *Registry) unregister(id string) {
	s := r.sockets[id]
	if s == nil {
		return
	}
	r.idxMu.Lock()
	delete(r.sockets, id)
	r.unindexUser(s)
	r.leaving = id
	r.idxMu.Unlock()
	defer func() {
		r.idxMu.Lock()
		r.leaving = ""
		r.idxMu.Unlock()
	}()
	user := s.info.User
	if user == "" {
		return
	}
	for _, c := range s.convs {
		r.leave(user, c)
	}
	if cu, ok := r.tables.ConnectedUsers.Get(user); ok && cu.SocketID == id {
		// Another live socket of the user takes the entry over, so that
		// the user stays connected while any of its sockets is.
		if next := r.latestOf(user); next != nil {
			r.tables.ConnectedUsers.Set(user, ConnectedUser{
				SocketID: next.info.ID, ConnectedAt: next.info.ConnectedAt, LastActivity: r.now(),
				Role: next.info.Role, DisplayName: next.info.DisplayName,
			})
		} else {
			r.tables.ConnectedUsers.Delete(user)
		}
	}
}

// latestOf is user's most recently connected live socket that is not
// being evicted; the caller holds r.mu.
func (r *Registry) latestOf(user string) *liveSocket {
	var best *liveSocket
	for _, s := range r.userSocks[user] {
		if !s.evicting.Load() && (best == nil || s.info.ConnectedAt.After(best.info.ConnectedAt)) {
			best = s
		}
	}
	return best
}

// Kick disconnects every socket of user with reason and reports how many.
// They leave the registry at once, so that a second Kick does not count
// sockets that are still closing. An e-mail finds its user in any case
// (see userkey.Normalise).
func (r *Registry) Kick(user, reason string) int {
	user = userkey.Normalise(user)
	return r.kickWhere(func(s *liveSocket) bool { return s.info.User == user }, reason)
}

// kickWhere disconnects, with reason, every socket match picks.
func (r *Registry) kickWhere(match func(*liveSocket) bool, reason string) int {
	r.mu.Lock()
	var list []Socket
	var ids []string
	for id, s := range r.sockets {
		if match(s) {
			list = append(list, s.sock)
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		r.unregister(id)
	}
	r.mu.Unlock()
	for _, s := range list {
		s.Disconnect(reason)
	}
	return len(list)
}

// KickAddr disconnects every socket from an address in p with reason (an
// IP blocked for abuse: its open sockets must not outlive the block) and
// reports how many.
func (r *Registry) KickAddr(p netip.Prefix, reason string) int {
	return r.kickWhere(func(s *liveSocket) bool { return p.Contains(s.info.IP.Unmap()) }, reason)
}

// OnEvicted is the connectedUsers eviction callback (TTL, capacity,
// emergency): the user is out, so every socket of the user is
// disconnected, as DELETE /api/internal/sessions/{user} does. They stay
// registered until they have ended (asynchronously), marked evicting, so
// that neither the consistency check nor a takeover makes one of them the
// user's entry again (review: a check in that window restored the entry,
// and at capacity that evicted, and disconnected, another user at each
// check). An entry that named no live socket of the user (stale), the
// registry's own Delete and shutdown disconnect nothing; an entry that
// expired unnoticed and is found as its own socket ends (see unregister)
// disconnects the user's others.
func (r *Registry) OnEvicted(user string, cu ConnectedUser, reason Reason) {
	if reason == ReasonManual || reason == ReasonShutdown {
		return // the registry's own Delete, or the process is stopping
	}
	r.idxMu.Lock()
	var list []Socket
	if named := r.userSocks[user][cu.SocketID]; named == nil && cu.SocketID != r.leaving {
		// A stale entry (its socket is gone) says nothing about the
		// user's other sockets: the check lists them again.
		r.idxMu.Unlock()
		return
	}
	for _, s := range r.userSocks[user] {
		if s.evicting.CompareAndSwap(false, true) {
			list = append(list, s.sock)
		}
	}
	r.idxMu.Unlock()
	for _, s := range list {
		s.Disconnect(reason.String())
	}
}

// Check is the seed's consistency check. It fixes connectedUsers entries
// whose socket is gone (removed) and live sockets whose user has no entry
// (entry restored), and reports how many of each it found.
func (r *Registry) Check() (staleEntries, unlistedSockets int) {
	type entry struct {
		user string
		id   string
	}
	var entries []entry
	for user, cu := range r.tables.ConnectedUsers.All() {
		entries = append(entries, entry{user, cu.SocketID})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	listed := map[string]bool{}
	for _, e := range entries {
		s := r.sockets[e.id]
		if s == nil || s.info.User != e.user {
			// The entry may have changed since All read it: drop it only
			// if it still names the dead socket.
			dead, removed := e.id, false
			r.tables.ConnectedUsers.Update(e.user, func(old ConnectedUser, ok bool) (ConnectedUser, time.Duration, bool) {
				removed = ok && old.SocketID == dead
				return old, KeepTTL, ok && !removed
			})
			if removed {
				staleEntries++
			}
			continue
		}
		listed[e.user] = true
	}
	for _, s := range r.sockets {
		u := s.info.User
		if u == "" || listed[u] || s.evicting.Load() {
			continue // an evicted user's socket is on its way out
		}
		listed[u] = true
		if _, ok := r.tables.ConnectedUsers.Get(u); ok {
			continue
		}
		// The Get may itself have found the entry expired and evicted the
		// user; then no socket of the user is left to list.
		latest := r.latestOf(u)
		if latest == nil {
			continue
		}
		unlistedSockets++
		r.tables.ConnectedUsers.Set(u, ConnectedUser{
			SocketID: latest.info.ID, ConnectedAt: latest.info.ConnectedAt, LastActivity: r.now(),
			Role: latest.info.Role, DisplayName: latest.info.DisplayName,
		})
	}
	return staleEntries, unlistedSockets
}

// Sockets is the number of live sockets.
func (r *Registry) Sockets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sockets)
}

// StatsBlock is the seed's socket block of /api/internal/stats.
func (r *Registry) StatsBlock() map[string]any {
	return map[string]any{
		"connectedSockets":    r.Sockets(),
		"connectedUsers":      r.tables.ConnectedUsers.Len(),
		"activeConversations": r.tables.ConversationUsers.Len(),
	}
}
