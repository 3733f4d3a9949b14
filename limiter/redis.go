package limiter

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatguard/chatguard/internal/redisurl"
)

// GCRAScript decides every key it is given, in order, in one call: one
// round trip and one script run for a whole batch of concurrent decisions
// on a single node (the same key twice in a batch is decided twice, the
// second after the first), one key per call on a cluster. Redis's TIME is
// the clock, so that replicas of chatguard never disagree about "now"; times
// are microseconds (exact in Lua's doubles for centuries). ARGV holds three
// numbers per key: its interval, its burst offset, and a debt it owes at
// least (0: none), what a replica admitted in its fallback while Redis
// failed: the key's TAT is raised to now + that debt, and stored even when
// the decision is a refusal. A TAT beyond now + the burst offset counts as
// now + the burst offset, as in gcra: the debt of a tighter limit since
// lifted, and a fallback debt that the replica's share made longer than
// the limit's window (3 logins per 15 min among 5 replicas is 1 per 25 min
// each), which would be cut at the key's next decision anyway. A key holding anything but a plausible TAT
// (not a number, nan, inf, more than a year ahead) counts as fresh and is
// overwritten, so one bad key never fails a batch nor blocks its client for
// good. Returns {allowed, remaining, retry_after_us, reset_after_us} for
// each key, flattened. It is exported for the benchmarks under bench/,
// which measure it without the store's queue; only the store calls it.
var GCRAScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst_offset = tonumber(ARGV[3 * i - 1])
  local owed = now + tonumber(ARGV[3 * i])
  local v = redis.pcall("GET", key) -- a foreign value under our prefix reads as fresh
  local tat = type(v) == "string" and tonumber(v) or now
  if tat ~= tat or tat > now + 31536000000000 then tat = now end
  local stored = tat
  if tat < now then tat = now end
  if tat < owed then tat = owed end
  if tat > now + burst_offset then tat = now + burst_offset end
  local new_tat = tat + interval
  local diff = now - (new_tat - burst_offset)
  local n = #out
  if diff < 0 then
    if tat ~= stored and tat > now then -- raised by a debt, or cut to the window
      redis.call("SET", key, string.format("%d", tat), "PX", math.ceil((tat - now) / 1000))
    end
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 0, 0, -diff, tat - now
  else
    local ttl = new_tat - now
    redis.call("SET", key, string.format("%d", new_tat), "PX", math.ceil(ttl / 1000))
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 1, math.floor(diff / interval), 0, ttl
  end
end
return out
`)

// RedisStore keeps TATs in Redis (a single node, the master Redis Sentinel
// names, or a cluster), shared by
// every chatguard replica. Concurrent decisions are batched: each of a few
// flusher goroutines takes every decision waiting and sends them in one
// round trip — on a single node as one script call for the whole batch, on
// a cluster as a pipeline of one-key calls (a script may only touch keys of
// one hash slot) — so a busy proxy pays one round trip per batch, not per
// request; an idle one sends each decision at once. Close stops the flushers.
type RedisStore struct {
	c       redis.UniversalClient
	prefix  string
	timeout time.Duration
	// perKey: one script call per key (a cluster, or one endpoint that
	// answered CROSSSLOT: a cluster proxy); else one per batch.
	perKey atomic.Bool

	// nodes: a breaker per master, on a cluster only (a single node's
	// breaker is the FailoverStore's); onNode is told when one opens or
	// closes.
	nodes      *nodeBreakers
	onNode     func(addr string, down bool)
	lastAnswer atomic.Int64 // Unix ns of the last reply from any master
	othersMu   sync.Mutex   // guards othersCur
	othersCur  *othersProbe // the probe of the other masters in flight, if any

	calls     chan *redisCall
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type redisCall struct {
	key   string
	limit Limit
	owed  int64 // µs, see GCRAScript
	res   Result
	err   error
	done  chan struct{}
}

const (
	redisFlushers = 2   // pipelines in flight at once
	redisMaxBatch = 128 // decisions per pipeline
)

// NewRedisStore uses c; every call gets timeout (0 = 50 ms) and keys start with prefix.
func NewRedisStore(c redis.UniversalClient, prefix string, timeout time.Duration) *RedisStore {
	if timeout <= 0 {
		timeout = 50 * time.Millisecond
	}
	_, single := c.(*redis.Client)
	r := &RedisStore{c: c, prefix: prefix, timeout: timeout, calls: make(chan *redisCall, 1024), stop: make(chan struct{})}
	r.perKey.Store(!single)
	if _, cluster := c.(*redis.ClusterClient); cluster {
		r.nodes = newNodeBreakers(3, time.Second)
		r.wg.Add(1)
		go r.watchNodes()
	}
	for i := 0; i < redisFlushers; i++ {
		r.wg.Add(1)
		go r.flush()
	}
	return r
}

// Cluster reports whether the store talks to a Redis Cluster, whose masters
// each have a breaker of their own.
func (r *RedisStore) Cluster() bool { return r.nodes != nil }

// WatchNodes sets the breaker of each cluster master (failures: rounds in a
// row without an answer that open it; cooldown: time until a probe) and
// tells onChange (which may be nil) when one opens or closes. Defaults: 3
// and 1 s. No effect on a single node. Call it before the first decision.
func (r *RedisStore) WatchNodes(failures int, cooldown time.Duration, onChange func(addr string, down bool)) {
	if r.nodes == nil {
		return
	}
	r.onNode = onChange
	r.nodes.set(max(failures, 1), cooldown)
}

// watchNodes probes the masters whose breaker is open every cooldown until
// Close, so that one that answers again is back without waiting for a
// decision on one of its keys (QA: on a quiet replica, or one whose
// traffic never hashed there, a healthy master stayed down, its gauge and
// alert with it, until such a decision came).
func (r *RedisStore) watchNodes() {
	defer r.wg.Done()
	for {
		t := time.NewTimer(r.nodes.interval())
		select {
		case <-r.stop:
			t.Stop()
			return
		case <-t.C:
		}
		r.probeNodes()
	}
}

// probeKeyFor is a key of its own, in the slot of key (a full key, prefix
// included), for probeNodes, given without the prefix: "probe{N}" for the
// first N whose slot is key's. Never key itself: the probe's rate would
// cut a stored debt to its window (review: a user's brace in an e-mail
// made the probe hand their day's quota back).
func probeKeyFor(key, prefix string) string {
	want := keySlot(key)
	for n := 0; n < 1<<22; n++ {
		c := "probe{" + strconv.Itoa(n) + "}"
		if keySlot(prefix+c) == want {
			return c
		}
	}
	return "probe{" + key + "}" // not reached: 16,384 slots
}

// keySlot is key's Redis Cluster slot: CRC16 (XMODEM) of its hash tag (the
// text between its first "{" and the first "}" after it, when not empty)
// or of the whole key, modulo 16,384.
func keySlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) & 16383
}

// probeNodes probes each master held open, as the probe its breaker
// admits (one at a time; a decision's round may be the probe instead),
// with a round of its own: the script, with probeLimit, on a key in the
// slot of the key the master was last asked for (probeKeyFor). A real call, not
// a PING: a master that answers PING but stalls writes (CLIENT PAUSE WRITE
// during a failover) stays held (review), and a failed probe makes the
// client read the slots again, so a promoted replica is followed at once
// as after a decision's probe (review: a PING probe took the probe's turn
// every cooldown and the store followed a failover only at go-redis's own
// reload, up to a minute later). A master that no longer owns the key is
// forgotten, as admit does.
func (r *RedisStore) probeNodes() {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	for _, addr := range r.nodes.forget(func(key string) string { return r.masterOf(ctx, key) }) {
		if r.onNode != nil {
			r.onNode(addr, false)
		}
	}
	cancel()
	addrs, keys := r.nodes.openNodes()
	for i, addr := range addrs {
		if send, probe := r.nodes.admit(addr, keys[i]); !send || !probe {
			continue
		}
		c := &redisCall{key: probeKeyFor(keys[i], r.prefix), limit: probeLimit, done: make(chan struct{})}
		r.round([]*redisCall{c}, []string{addr}, map[string]bool{addr: true})
	}
}

// NodesDown lists the cluster masters whose breaker is open: their keys are
// decided by the fallback.
func (r *RedisStore) NodesDown() []string {
	if r.nodes == nil {
		return nil
	}
	return r.nodes.down()
}

// masterOf is the address of key's master as the cluster client knows it
// ("" while it does not know).
func (r *RedisStore) masterOf(ctx context.Context, key string) string {
	node, err := r.c.(*redis.ClusterClient).MasterForKey(ctx, key)
	if err != nil {
		return ""
	}
	return node.Options().Addr
}

// Allow decides one request; it waits at most the store's timeout.
func (r *RedisStore) Allow(ctx context.Context, key string, l Limit) (Result, error) {
	return r.AllowOwing(ctx, key, l, 0)
}

// AllowOwing is Allow for a key that owes at least debt: its TAT is first
// raised to now + debt (see GCRAScript).
func (r *RedisStore) AllowOwing(ctx context.Context, key string, l Limit, debt time.Duration) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &redisCall{key: key, limit: l, owed: max(debt.Microseconds(), 0), done: make(chan struct{})}
	select {
	case r.calls <- c:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("limiter: redis: %w", ctx.Err())
	case <-r.stop:
		return Result{}, errors.New("limiter: redis: store closed")
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		if r.othersAnswer() && ctx.Err() == context.DeadlineExceeded {
			return Result{}, fmt.Errorf("%w: %w", ErrNodeDown, ctx.Err())
		}
		if r.nodes != nil && ctx.Err() == context.DeadlineExceeded {
			// The round goes on and asks the other masters (reportNodes);
			// this caller cannot wait for that, but says which master it
			// waited for, rather than blame the whole cluster (QA). The
			// slots as known: the expired ctx loads none.
			if addr := r.masterOf(ctx, r.prefix+key); addr != "" {
				return Result{}, fmt.Errorf("limiter: redis: no answer from the key's cluster master %s: %w", addr, ctx.Err())
			}
		}
		return Result{}, fmt.Errorf("limiter: redis: %w", ctx.Err())
	case <-r.stop:
		return Result{}, errors.New("limiter: redis: store closed")
	}
}

// flush sends batches until Close.
func (r *RedisStore) flush() {
	defer r.wg.Done()
	batch := make([]*redisCall, 0, redisMaxBatch)
	for {
		select {
		case <-r.stop:
			r.failQueued()
			return
		case c := <-r.calls:
			batch = append(batch[:0], c)
		}
		// Let callers that are about to ask (those just answered, say)
		// join this batch: yield while the queue grows, a few times at most.
		for spins := 0; spins < 3 && len(r.calls) < redisMaxBatch; spins++ {
			n := len(r.calls)
			runtime.Gosched()
			if len(r.calls) == n {
				break
			}
		}
	more:
		for len(batch) < redisMaxBatch {
			select {
			case c := <-r.calls:
				batch = append(batch, c)
			default:
				break more
			}
		}
		r.send(batch)
	}
}

// failQueued answers the calls still queued when the store closes.
func (r *RedisStore) failQueued() {
	for {
		select {
		case c := <-r.calls:
			c.err = errors.New("limiter: redis: store closed")
			close(c.done)
		default:
			return
		}
	}
}

// send decides batch and hands each caller its answer: in one round on a
// single node; on a cluster, after the masters' breakers took out the calls
// of masters held open, in one round for the healthy masters and one, not
// waited for, per master that failed lately.
func (r *RedisStore) send(batch []*redisCall) {
	if r.nodes == nil {
		r.round(batch, nil, nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	batch, nodes, probes := r.admit(ctx, batch)
	cancel()
	// The calls for a master that failed lately (or is being probed) go
	// in a round of their own that the flusher does not wait for: a round
	// waits for all of its nodes, and the others' callers must not wait
	// for a dead one.
	var now []*redisCall
	var nowNodes []string
	var apart map[string][]*redisCall
	for i, c := range batch {
		if r.nodes.suspect(nodes[i]) {
			if apart == nil {
				apart = map[string][]*redisCall{}
			}
			apart[nodes[i]] = append(apart[nodes[i]], c)
			continue
		}
		now = append(now, c)
		nowNodes = append(nowNodes, nodes[i])
	}
	for addr, calls := range apart {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.round(calls, slices.Repeat([]string{addr}, len(calls)), probes)
		}()
	}
	if len(now) > 0 {
		r.round(now, nowNodes, probes)
	}
}

// round decides batch in one round trip (on a cluster, nodes[i] is
// batch[i]'s master, and probes the masters this round probes). Calls that
// met NOSCRIPT (a node that restarted or failed over, or the first use) are
// sent again once the script is loaded — only those: on a cluster the
// others already counted on their own nodes. A batch that met CROSSSLOT is
// sent again one key per call. At most three more rounds.
func (r *RedisStore) round(batch []*redisCall, nodes []string, probes map[string]bool) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	perKey := r.perKey.Load()
	groups := r.group(batch, perKey)
	cmds := make([]*redis.Cmd, len(groups))
	all := func(int) bool { return true }
	isNoscript := func(c *redis.Cmd) bool { return c.Err() != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") }
	noscript := func(i int) bool { return isNoscript(cmds[i]) }
	r.pipelineByNode(ctx, groups, cmds, all, nodes)
	for attempt := 0; attempt < 3; attempt++ {
		if !perKey && len(batch) > 1 && cmds[0].Err() != nil && redis.HasErrorPrefix(cmds[0].Err(), "CROSSSLOT") {
			// One address, but slots behind it (a cluster proxy, a managed
			// multi-shard Redis): from now on one key per call.
			perKey = true
			r.perKey.Store(true)
			groups = r.group(batch, true)
			cmds = make([]*redis.Cmd, len(groups))
			r.pipelineByNode(ctx, groups, cmds, all, nodes)
			continue
		}
		if !slices.ContainsFunc(cmds, isNoscript) || GCRAScript.Load(ctx, r.c).Err() != nil {
			break
		}
		r.pipelineByNode(ctx, groups, cmds, noscript, nodes)
	}
	r.reloadOnFailure(cmds)
	var isolated map[string]bool
	if r.nodes != nil {
		isolated = r.reportNodes(groups, cmds, nodes, probes)
	}
	for i, g := range groups {
		out, err := cmds[i].Int64Slice()
		if err == nil && len(out) != 4*len(g) {
			err = errors.New("unexpected script reply")
		}
		for j, c := range g {
			switch {
			case err != nil && nodes != nil && isolated[nodes[i]]:
				c.err = fmt.Errorf("%w: %w", ErrNodeDown, quiet(err))
			case err != nil:
				msg := "limiter: redis: " + strings.TrimPrefix(quiet(err).Error(), "redis: ")
				if nodes == nil {
					msg += nodeHint(err)
				}
				c.err = storeErr{msg, err}
			default:
				c.res = decode(out[4*j:4*j+4], c.limit)
			}
			close(c.done)
		}
	}
}

// quiet is err without what Redis quotes of a call's arguments (an unknown
// or refused command quotes them: keys, and with them users' e-mails),
// which would reach the logs.
func quiet(err error) error {
	if i := strings.Index(err.Error(), ", with args beginning with:"); i >= 0 {
		return storeErr{err.Error()[:i], err}
	}
	return err
}

// storeErr is an error said otherwise: its message, its cause for errors.Is
// and errors.As.
type storeErr struct {
	msg string
	err error
}

func (e storeErr) Error() string { return e.msg }
func (e storeErr) Unwrap() error { return e.err }

// admit answers at once, with ErrNodeDown, the calls whose master's
// breaker is open, and returns the others with their masters, and which of
// those masters this round probes. A key whose master is not known (the
// slots could not be read yet) is sent, outside the masters' breakers.
func (r *RedisStore) admit(ctx context.Context, batch []*redisCall) (send []*redisCall, nodes []string, probes map[string]bool) {
	for _, addr := range r.nodes.forget(func(key string) string { return r.masterOf(ctx, key) }) {
		if r.onNode != nil {
			r.onNode(addr, false)
		}
	}
	send = make([]*redisCall, 0, len(batch))
	nodes = make([]string, 0, len(batch))
	verdicts := map[string]bool{} // addr → sent this round
	for _, c := range batch {
		addr := r.masterOf(ctx, r.prefix+c.key)
		ok, seen := verdicts[addr]
		if !seen && addr == "" {
			// The slots are not known (the cluster was unreachable since the
			// start): sent, and the whole store's breaker judges the result.
			ok, seen = true, true
			verdicts[addr] = true
		}
		if !seen {
			var probe bool
			ok, probe = r.nodes.admit(addr, r.prefix+c.key)
			verdicts[addr] = ok
			if probe {
				if probes == nil {
					probes = map[string]bool{}
				}
				probes[addr] = true
			}
		}
		if !ok {
			c.err = ErrNodeDown
			close(c.done)
			continue
		}
		send = append(send, c)
		nodes = append(nodes, addr)
	}
	return send, nodes, probes
}

// reportNodes tells each master's breaker how this round went: failed when
// none of its calls got an answer (a reply, even an error reply, is one).
// On a cluster a group is one call, so groups[i] went to nodes[i]. It
// returns the failed masters whose failure is theirs alone, not the
// cluster's: one this round probed (already known down), or one that
// failed while others answer (see othersAnswer). Their calls fail with
// ErrNodeDown, which the FailoverStore does not count against the whole
// store.
func (r *RedisStore) reportNodes(groups [][]*redisCall, cmds []*redis.Cmd, nodes []string, probes map[string]bool) (isolated map[string]bool) {
	answered := map[string]bool{}
	keys := map[string]string{} // addr → one of its keys
	for i, g := range groups {
		addr := nodes[i]
		if addr == "" { // no master known: no breaker (see admit)
			continue
		}
		err := cmds[i].Err()
		var reply redis.Error
		answered[addr] = answered[addr] || err == nil || errors.As(err, &reply)
		keys[addr] = r.prefix + g[0].key
	}
	for _, ok := range answered {
		if ok {
			r.lastAnswer.Store(time.Now().UnixNano())
			break
		}
	}
	othersAnswer := r.othersAnswer()
	if !othersAnswer {
		// No master answered lately (a quiet replica, or traffic on the
		// failed master's keys only): ask the others now, rather than
		// blame the whole store for one master (QA: a dead master's first
		// failures switched a quiet replica to fallback on a healthy
		// cluster). A master this round probes is known down already.
		failed := map[string]bool{}
		for addr, ok := range answered {
			if !ok && !probes[addr] {
				failed[addr] = true
			}
		}
		if len(failed) > 0 {
			othersAnswer = r.askOthers(func(addr string) bool { return failed[addr] || r.nodes.isOpen(addr) })
		}
	}
	for addr, ok := range answered {
		opened, closed := r.nodes.report(addr, keys[addr], !ok, probes[addr])
		if (opened || closed) && r.onNode != nil {
			r.onNode(addr, opened)
		}
		if !ok && (othersAnswer || probes[addr]) {
			if isolated == nil {
				isolated = map[string]bool{}
			}
			isolated[addr] = true
		}
	}
	return isolated
}

// othersProbe is a probe of the other masters in flight: rounds that fail
// meanwhile wait for its answer rather than each send one (review: with
// every master hung, each round fanned out a script call per master).
type othersProbe struct {
	done chan struct{}
	ok   bool
}

// askOthers reports whether a master other than those skip names decides
// a probe, one probe at a time: a round that fails while one is in flight
// takes its answer (any master deciding says the cluster lives).
func (r *RedisStore) askOthers(skip func(addr string) bool) bool {
	r.othersMu.Lock()
	if p := r.othersCur; p != nil {
		r.othersMu.Unlock()
		<-p.done
		return p.ok
	}
	p := &othersProbe{done: make(chan struct{})}
	r.othersCur = p
	r.othersMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	p.ok = r.probeMasters(ctx, skip) == nil
	cancel()
	r.othersMu.Lock()
	r.othersCur = nil
	r.othersMu.Unlock()
	close(p.done)
	return p.ok
}

// ProbeCluster tells whether the cluster itself decides: nil when some
// master not held open by its breaker decides a probe (see probeMasters),
// else why none did (CLUSTERDOWN, no answer, every master held open). The
// FailoverStore probes a cluster with it: its own probe key lives on one
// master, which may be the one that is down while the others answer.
func (r *RedisStore) ProbeCluster(ctx context.Context) error {
	if r.nodes == nil {
		return r.Ping(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return r.probeMasters(ctx, r.nodes.isOpen)
}

// probeMasters sends a probe decision (probeLimit, on a key of the
// store's own: "probe{N}") to each master the client knows but skip, in
// parallel, and returns nil when one of them decided it, else the first
// error (an error reply, CLUSTERDOWN say, is a failure too: the cluster
// does not decide). A master is found by the keys of its slots, so one
// that owns very few may be missed; none is needed but one that answers.
func (r *RedisStore) probeMasters(ctx context.Context, skip func(addr string) bool) error {
	cc, ok := r.c.(*redis.ClusterClient)
	if !ok {
		return errors.New("limiter: redis: not a cluster")
	}
	keys := map[string]string{} // master → a probe key in its slots
	skipped := map[string]bool{}
	for n := 0; n < 1024; n++ {
		k := "probe{" + strconv.Itoa(n) + "}"
		node, err := cc.MasterForKey(ctx, r.prefix+k)
		if err != nil {
			return fmt.Errorf("limiter: redis: %w", err)
		}
		addr := node.Options().Addr
		if keys[addr] != "" || skipped[addr] {
			continue
		}
		if skip(addr) {
			skipped[addr] = true
			continue
		}
		keys[addr] = k
	}
	if len(keys) == 0 {
		return errors.New("limiter: redis: no cluster master answers (each is held open by its breaker)")
	}
	errs := make(chan error, len(keys))
	for _, k := range keys {
		go func() {
			interval := microsUp(probeLimit.interval())
			err := GCRAScript.Run(ctx, r.c, []string{r.prefix + k}, interval, interval*int64(probeLimit.burst()), 0).Err()
			errs <- err
		}()
	}
	var first error
	for range keys {
		err := <-errs
		if err == nil {
			r.lastAnswer.Store(time.Now().UnixNano())
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return storeErr{"limiter: redis: " + strings.TrimPrefix(quiet(first).Error(), "redis: "), first}
}

// othersAnswer: on a cluster, some master answered within the last two
// deadlines, so a failure now is one node's, not the cluster's.
func (r *RedisStore) othersAnswer() bool {
	return r.nodes != nil && time.Since(time.Unix(0, r.lastAnswer.Load())) < 2*r.timeout
}

// reloadOnFailure asks a cluster client to read the cluster's slots again
// when a call found no answer (a dead or unreachable node): go-redis would
// otherwise keep sending that node's slots to it until its periodic reload,
// a minute later, long after a replica took over. Redis's own error replies
// (MOVED is handled by go-redis itself) need no reload. Reloads are
// coalesced by go-redis, one at a time, 200 ms apart at most.
func (r *RedisStore) reloadOnFailure(cmds []*redis.Cmd) {
	cc, ok := r.c.(*redis.ClusterClient)
	if !ok {
		return
	}
	for _, c := range cmds {
		if c == nil || c.Err() == nil || errors.Is(c.Err(), redis.Nil) {
			continue
		}
		var reply redis.Error
		if errors.As(c.Err(), &reply) {
			continue
		}
		cc.ReloadState(context.Background())
		return
	}
}

// group splits batch into the script calls that decide it: one, or one per key.
func (r *RedisStore) group(batch []*redisCall, perKey bool) [][]*redisCall {
	if !perKey {
		return [][]*redisCall{batch}
	}
	groups := make([][]*redisCall, len(batch))
	for i := range batch {
		groups[i] = batch[i : i+1]
	}
	return groups
}

// pipelineByNode is pipeline with, on a cluster (nodes set: groups[i]
// goes to master nodes[i]), one pipeline per master, sent in parallel. In
// one pipeline, go-redis retries a dead master's calls and, when the
// deadline ends the retry, writes its error over every call, the live
// masters' answered ones too: their decisions, already counted in Redis,
// would be made again in memory, and their masters blamed.
func (r *RedisStore) pipelineByNode(ctx context.Context, groups [][]*redisCall, cmds []*redis.Cmd, pick func(int) bool, nodes []string) {
	byNode := map[string][]int{}
	if nodes != nil {
		for i := range groups {
			if pick(i) {
				byNode[nodes[i]] = append(byNode[nodes[i]], i)
			}
		}
	}
	if len(byNode) <= 1 {
		r.pipeline(ctx, groups, cmds, pick)
		return
	}
	var wg sync.WaitGroup
	for _, idx := range byNode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub := make([][]*redisCall, len(idx))
			subCmds := make([]*redis.Cmd, len(idx))
			for j, i := range idx {
				sub[j] = groups[i]
			}
			r.pipeline(ctx, sub, subCmds, func(int) bool { return true })
			for j, i := range idx {
				cmds[i] = subCmds[j]
			}
		}()
	}
	wg.Wait()
}

// pipeline sends one script call for each group that pick selects, filling cmds.
func (r *RedisStore) pipeline(ctx context.Context, groups [][]*redisCall, cmds []*redis.Cmd, pick func(int) bool) {
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, g := range groups {
			if !pick(i) {
				continue
			}
			keys := make([]string, len(g))
			args := make([]any, 0, 3*len(g))
			for j, c := range g {
				interval := microsUp(c.limit.interval())
				keys[j] = r.prefix + c.key
				args = append(args, interval, interval*int64(c.limit.burst()), c.owed)
			}
			cmds[i] = GCRAScript.EvalSha(ctx, p, keys, args...)
		}
		return nil
	})
	// Each command carries its own error, except when the connection could
	// not be set up (a wrong password: WRONGPASS, NOAUTH): then no command
	// got a reply, only the pipeline's error says why, and the commands
	// without a reply must carry it (those with one keep it).
	if err != nil {
		for i, c := range cmds {
			if c != nil && pick(i) && c.Err() == nil && c.Val() == nil {
				c.SetErr(err)
			}
		}
	}
}

// decode reads one decision: {allowed, remaining, retry_after_us, reset_after_us}.
func decode(out []int64, l Limit) Result {
	return Result{
		Allowed:    out[0] == 1,
		Limit:      l,
		Remaining:  int(out[1]),
		RetryAfter: time.Duration(out[2]) * time.Microsecond,
		ResetAfter: time.Duration(out[3]) * time.Microsecond,
	}
}

// Close stops the flushers; waiting decisions fail. Idempotent; call it
// before closing the client.
func (r *RedisStore) Close() error {
	r.closeOnce.Do(func() { close(r.stop) })
	r.wg.Wait()
	return nil
}

// Ping checks that Redis answers.
func (r *RedisStore) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	err := r.c.Ping(ctx).Err()
	if h := nodeHint(err); h != "" {
		return fmt.Errorf("%w%s", err, h) // at start too, not only from the second failure line on (review)
	}
	return err
}

// nodeHint is what a single node's (or a Sentinel master's) error means
// when go-redis's words do not say it: "" when they do.
func nodeHint(err error) string {
	switch {
	case err == nil:
		return ""
	case redis.HasErrorPrefix(err, "MOVED"):
		return " (REDIS_URL names a node of a Redis Cluster: give its address again as ?addr=host:port to use it as a cluster)"
	case errors.Is(err, redis.Nil) && strings.Contains(err.Error(), "sentinels"):
		// A sentinel answered that it watches no such master: go-redis
		// says "unreachable: redis: nil".
		return " (a sentinel knows no master by REDIS_URL's master_name: compare it with redis-cli -p 26379 sentinel masters)"
	}
	return ""
}

// NewRedisClient connects to REDIS_URL (see redisurl.Parse). Every call is
// bounded by timeout; the client never retries (the failover store decides
// what a failure means). With Sentinel (master_name in the URL) it is a
// *redis.Client that asks the sentinels for the master at each dial and
// drops its connections to a demoted one, so the store treats it as a
// single node; every setting below reaches both its master connections
// and its sentinel connections (go-redis's FailoverOptions copies them to
// each), so a dead sentinel costs no more than a dead Redis.
func NewRedisClient(url string, timeout time.Duration) (redis.UniversalClient, error) {
	o, err := redisOptions(url, timeout)
	if err != nil {
		return nil, err
	}
	return redis.NewUniversalClient(&o), nil
}

// redisOptions are NewRedisClient's options.
func redisOptions(url string, timeout time.Duration) (redis.UniversalOptions, error) {
	o, err := redisurl.Parse(url)
	if err != nil { // never quotes the URL, password and all
		return o, fmt.Errorf("limiter: REDIS_URL %w", err)
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
	o.MaxRetries = -1
	// One dial per call: go-redis's 5 dials 100 ms apart outlast the
	// deadline, and the caller got "context deadline exceeded" where the
	// dial said "connection refused" or "no such host".
	o.DialerRetries = 1
	// No pause between a cluster client's attempts on a call that found
	// no answer (10 ms, doubling, by default): it retries a dead master's
	// calls three times, and the pauses alone outlasted the deadline, so
	// the caller got "context deadline exceeded" where the master refused
	// connections (QA). A refused dial fails at once; a hung node's read
	// takes the whole deadline, leaving no time for another attempt.
	o.MinRetryBackoff, o.MaxRetryBackoff = -1, -1
	o.ContextTimeoutEnabled = true
	// Over TLS go-redis cannot see that the server (or a load balancer on
	// the way: Azure's drops idle flows after 4 minutes) closed a pooled
	// connection, and the next decision on it fails, a spurious switch to
	// the fallback (QA: 4 errors and one switch with rediss:// where
	// redis:// had none). Connections idle this long are dialled afresh.
	o.ConnMaxIdleTime = RedisConnMaxIdle
	return o, nil
}

// RedisConnMaxIdle is how long a Redis connection may wait in the pool.
const RedisConnMaxIdle = 3 * time.Minute

// microsUp is d in whole microseconds, the script's unit, rounded up (at
// least 1): rounded down, an interval of 1.4 µs was 1 µs, and Redis
// admitted up to twice the limit the memory store keeps (review). Up, a
// limit of over a million a second per key is at most a little stricter
// in Redis than configured, never looser.
func microsUp(d time.Duration) int64 {
	return max((int64(d)+int64(time.Microsecond)-1)/int64(time.Microsecond), 1)
}
