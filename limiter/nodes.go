package limiter

import (
	"errors"
	"sort"
	"sync"
	"time"
)

// ErrNodeDown answers a decision whose key lives on a Redis Cluster node
// that the node's own breaker holds open: it is not sent (it would wait for
// the store's deadline), and the FailoverStore decides it in memory without
// counting it against the whole store, whose other nodes still answer.
var ErrNodeDown = errors.New("limiter: redis: the key's cluster node does not answer")

// nodeBreakers are a breaker per cluster master: a master that died takes a
// third of the keys with it (on three masters) until the cluster promotes
// its replica, which takes the cluster's node timeout (15 s by default).
// Until then, without them, every batch holding one of its keys waited for
// the deadline, and the whole-store breaker rarely opened (the other nodes'
// answers reset its count).
type nodeBreakers struct {
	failures int
	cooldown time.Duration
	now      func() time.Time

	mu    sync.Mutex
	nodes map[string]*nodeState
}

type nodeState struct {
	key      string // one of its keys, to tell whether it still owns it
	failures int    // rounds in a row that failed
	open     bool
	retryAt  time.Time
	probing  bool // a round is sending to the open node as a probe
}

func newNodeBreakers(failures int, cooldown time.Duration) *nodeBreakers {
	return &nodeBreakers{failures: failures, cooldown: cooldown, now: time.Now, nodes: map[string]*nodeState{}}
}

// admit says whether this round sends to addr, and whether it does so as
// the open node's probe. One round at a time probes a node.
func (b *nodeBreakers) admit(addr, key string) (send, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.nodes[addr]
	if n == nil || !n.open {
		return true, false
	}
	n.key = key
	if n.probing || b.now().Before(n.retryAt) {
		return false, false
	}
	n.probing = true
	return true, true
}

// interval is the cooldown, read under the lock: the store's watcher
// starts before WatchNodes sets it.
func (b *nodeBreakers) interval() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cooldown
}

// set sets failures and cooldown (see RedisStore.WatchNodes).
func (b *nodeBreakers) set(failures int, cooldown time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures, b.cooldown = failures, cooldown
}

// openNodes lists the open nodes, each with the key it was last asked for.
func (b *nodeBreakers) openNodes() (addrs, keys []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for addr, n := range b.nodes {
		if n.open {
			addrs, keys = append(addrs, addr), append(keys, n.key)
		}
	}
	return addrs, keys
}

// suspect: addr failed in its last round, or its breaker is open.
func (b *nodeBreakers) suspect(addr string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.nodes[addr]
	return n != nil && (n.failures > 0 || n.open)
}

// isOpen: addr's breaker is open.
func (b *nodeBreakers) isOpen(addr string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.nodes[addr]
	return n != nil && n.open
}

// report records how a round went on addr: failed when no call to it got
// an answer (a dead or unreachable node, not one of Redis's error replies).
// It returns whether the node's breaker opened or closed.
func (b *nodeBreakers) report(addr, key string, failed, probe bool) (opened, closed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.nodes[addr]
	if !failed {
		if n == nil || (n.open && !probe) { // a round that began before it opened proves nothing
			return false, false
		}
		delete(b.nodes, addr)
		return false, n.open
	}
	if n == nil {
		n = &nodeState{}
		b.nodes[addr] = n
	}
	n.key = key
	if probe {
		n.probing = false
	}
	n.failures++
	if n.open || n.failures >= b.failures {
		opened = !n.open
		n.open = true
		n.retryAt = b.now().Add(b.cooldown)
	}
	return opened, false
}

// forget drops the nodes that no longer own the keys they were last asked
// for (ownerOf tells a key's master as the client knows it: the cluster
// promoted a replica and the client read the new slots), and returns those
// that were down.
func (b *nodeBreakers) forget(ownerOf func(key string) string) (wasDown []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for addr, n := range b.nodes {
		if owner := ownerOf(n.key); owner != "" && owner != addr && !n.probing {
			delete(b.nodes, addr)
			if n.open {
				wasDown = append(wasDown, addr)
			}
		}
	}
	return wasDown
}

// down lists the nodes whose breaker is open.
func (b *nodeBreakers) down() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for addr, n := range b.nodes {
		if n.open {
			out = append(out, addr)
		}
	}
	sort.Strings(out)
	return out
}
