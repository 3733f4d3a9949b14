package limiter

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatguard/chatguard/internal/testnet"
	"github.com/chatguard/chatguard/sessions"
)

// redisServer is a redis-server of the test's own, on a free port.
type redisServer struct {
	t        *testing.T
	port     int
	args     []string
	cmd      *exec.Cmd
	password string   // for redis-cli, if the server starts with one
	cliArgs  []string // for redis-cli: --tls and its CA, say
}

func freePort(t *testing.T, alsoFree int) int { return testnet.FreePort(t, alsoFree) }

func startRedis(t *testing.T, extra ...string) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	r := &redisServer{t: t, port: freePort(t, 10000)}
	r.args = append([]string{"--port", fmt.Sprint(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}, extra...)
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

func (r *redisServer) start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", r.args...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := r.cli("ping").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) == "PONG" {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %d did not start: %s", r.port, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cli is redis-cli args against r, with its password.
func (r *redisServer) cli(args ...string) *exec.Cmd {
	if r.password != "" {
		args = append([]string{"-a", r.password, "--no-auth-warning"}, args...)
	}
	args = append(slices.Clone(r.cliArgs), args...)
	return exec.Command("redis-cli", append([]string{"-p", fmt.Sprint(r.port)}, args...)...)
}

// kill is kill -9: no goodbye to clients.
func (r *redisServer) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// redisStore is a store with the given per-call deadline: exactness tests
// use a generous one (they test counting, and share two cores with the rest
// of the suite); failover tests the production one.
func redisStore(t *testing.T, url string, timeout time.Duration) *RedisStore {
	t.Helper()
	c, err := NewRedisClient(url, timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := NewRedisStore(c, "chatguard:rl:", timeout)
	t.Cleanup(func() { s.Close() }) // before the client: cleanups run last-in first-out
	return s
}

func exactness(t *testing.T, s Store, key string) {
	t.Helper()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < 200; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := s.Allow(context.Background(), key, Limit{Rate: 50, Period: time.Hour})
			if err != nil {
				t.Error(err)
			}
			if res.Allowed {
				admitted.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if admitted.Load() != 50 {
		t.Fatalf("%s: %d admitted, want exactly 50", key, admitted.Load())
	}
}

func TestRedisStore(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	s := redisStore(t, "redis://"+r.addr()+"/0", 5*time.Second)
	exactness(t, s, "exact")

	login := Limit{Rate: 3, Period: 15 * time.Minute}
	for i := 0; i < 3; i++ {
		res, err := s.Allow(context.Background(), "login", login)
		if err != nil || !res.Allowed || res.Remaining != 2-i {
			t.Fatalf("attempt %d: %+v %v", i+1, res, err)
		}
	}
	res, err := s.Allow(context.Background(), "login", login)
	if err != nil || res.Allowed || res.RetryAfter < 4*time.Minute || res.RetryAfter > 5*time.Minute {
		t.Fatalf("4th attempt: %+v %v", res, err)
	}
	out, _ := exec.Command("redis-cli", "-p", fmt.Sprint(r.port), "pttl", "chatguard:rl:login").Output()
	var pttl int64
	fmt.Sscan(string(out), &pttl)
	if pttl <= 0 || pttl > int64(15*time.Minute/time.Millisecond) {
		t.Fatalf("key TTL %d ms: keys must expire when they are as good as new", pttl)
	}

	// The debt of a lifted limit ends with the restored one's window, as
	// in gcra (QA: a reverted 24h period kept clients out for ten hours).
	typo, restored := Limit{Rate: 2, Period: 24 * time.Hour}, Limit{Rate: 7, Period: time.Minute}
	for i := 0; i < 3; i++ {
		if _, err := s.Allow(context.Background(), "typo", typo); err != nil {
			t.Fatal(err)
		}
	}
	res, err = s.Allow(context.Background(), "typo", restored)
	if err != nil || res.Allowed || res.RetryAfter > restored.interval()+time.Millisecond || res.ResetAfter > restored.Period+time.Millisecond {
		t.Fatalf("under the restored limit: %+v %v", res, err)
	}
	// A fallback debt longer than the window (a replica's share of 3
	// logins per 15 min among 5 replicas is 1 per 25 min) counts as the
	// whole window, at this decision as at the next: the key is at its
	// limit, its next request one interval away.
	login15 := Limit{Rate: 3, Period: 15 * time.Minute}
	for i := 0; i < 2; i++ {
		res, err = s.AllowOwing(context.Background(), "owed", login15, 25*time.Minute)
		if err != nil || res.Allowed || res.RetryAfter > 5*time.Minute+time.Millisecond || res.ResetAfter > 15*time.Minute+time.Millisecond {
			t.Fatalf("owing 25 min under a 15 min window, decision %d: %+v %v", i, res, err)
		}
	}
	// The refusal stored the debt cut to the window, which runs out.
	out, _ = exec.Command("redis-cli", "-p", fmt.Sprint(r.port), "pttl", "chatguard:rl:typo").Output()
	fmt.Sscan(string(out), &pttl)
	if pttl <= 0 || pttl > int64(restored.Period/time.Millisecond)+1 {
		t.Fatalf("key TTL %d ms after the restored limit's refusal", pttl)
	}
}

// startCluster starts a Redis Cluster of masters masters, each with
// replicas replicas, and waits until every node sees it up.
func startCluster(t *testing.T, masters, replicas int, nodeTimeout string) []*redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli is not installed")
	}
	var nodes []*redisServer
	var addrs []string
	for i := 0; i < masters*(1+replicas); i++ {
		n := startRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", nodeTimeout)
		nodes = append(nodes, n)
		addrs = append(addrs, n.addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", fmt.Sprint(replicas), "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("cluster create: %v\n%s", err, out)
	}
	// Every node must see the cluster up: one that has not yet heard of
	// the others' slots answers CLUSTERDOWN.
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range nodes {
		waitClusterOK(t, n, deadline)
		// A replica that has not synced yet would never take over.
		for {
			out, _ := exec.Command("redis-cli", "-p", fmt.Sprint(n.port), "info", "replication").Output()
			if !strings.Contains(string(out), "role:slave") || strings.Contains(string(out), "master_link_status:up") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %d never synced: %s", n.port, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nodes
}

func waitClusterOK(t *testing.T, n *redisServer, deadline time.Time) {
	t.Helper()
	for {
		out, _ := exec.Command("redis-cli", "-p", fmt.Sprint(n.port), "cluster", "info").Output()
		if strings.Contains(string(out), "cluster_state:ok") {
			return
		}
		if time.Now().After(deadline) {
			nodesOut, _ := exec.Command("redis-cli", "-p", fmt.Sprint(n.port), "cluster", "nodes").Output()
			t.Fatalf("node %d: cluster not ok: %s\n%s", n.port, out, nodesOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// masters are those of nodes that are masters now.
func masters(t *testing.T, nodes []*redisServer) []*redisServer {
	t.Helper()
	var out []*redisServer
	for _, n := range nodes {
		if role, _ := exec.Command("redis-cli", "-p", fmt.Sprint(n.port), "role").Output(); strings.HasPrefix(string(role), "master") {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		t.Fatal("no master")
	}
	return out
}

// firstMaster is the first of nodes that is a master now.
func firstMaster(t *testing.T, nodes []*redisServer) *redisServer { return masters(t, nodes)[0] }

func clusterURL(nodes []*redisServer) string {
	u := "redis://" + nodes[0].addr()
	for i, n := range nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + n.addr()
	}
	return u
}

func TestRedisCluster(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 0, "2000")
	s := redisStore(t, clusterURL(nodes), 5*time.Second)
	// Keys that land on different masters.
	for _, k := range []string{"messages|user=a", "messages|user=b", "login|ip=10.0.0.1", "webhook|ip=10.0.0.2"} {
		exactness(t, s, k)
	}
	// One node's address alone is a single node to the client: the keys
	// of the other masters meet MOVED, and the error says what to write
	// (QA: a MOVED line every probe, no hint); the address given again as
	// addr makes it a cluster.
	one := "redis://" + nodes[0].addr()
	single := redisStore(t, one, 5*time.Second)
	moved := 0
	for i := range 30 {
		_, err := single.Allow(context.Background(), fmt.Sprintf("messages|user=m%d", i), Limit{Rate: 10, Period: time.Minute})
		if err == nil {
			continue
		}
		moved++
		if !strings.Contains(err.Error(), "MOVED") || !strings.Contains(err.Error(), "?addr=host:port") {
			t.Errorf("single-node URL on a cluster: %v", err)
		}
	}
	if moved == 0 {
		t.Error("no key of 30 met MOVED through one node's address")
	}
	again := redisStore(t, one+"?addr="+nodes[0].addr(), 5*time.Second)
	for i := range 30 {
		if _, err := again.Allow(context.Background(), fmt.Sprintf("messages|user=m%d", i), Limit{Rate: 10, Period: time.Minute}); err != nil {
			t.Fatalf("the node's address given again as addr: %v", err)
		}
	}
}

// A master dies and its replica takes over: the store follows the
// promotion within seconds, not at go-redis's periodic reload of the
// cluster's slots a minute later.
func TestRedisClusterFollowsFailover(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 1, "1000")
	s := redisStore(t, clusterURL(nodes), 500*time.Millisecond)
	keys := make([]string, 30) // about a third on each master
	for i := range keys {
		keys[i] = fmt.Sprintf("messages|user=u%d", i)
	}
	lim := Limit{Rate: 1000, Period: time.Minute}
	failing := func() (n int) {
		for _, k := range keys {
			if _, err := s.Allow(context.Background(), k, lim); err != nil {
				n++
			}
		}
		return n
	}
	if n := failing(); n != 0 {
		t.Fatalf("%d of %d decisions failed on a healthy cluster", n, len(keys))
	}
	victim := firstMaster(t, nodes)
	victim.kill()
	if n := failing(); n == 0 { // the dead master's keys fail at first
		t.Fatal("no decision failed with a master dead: the test would prove nothing")
	}
	survivor := nodes[0]
	if survivor == victim {
		survivor = nodes[1]
	}
	waitClusterOK(t, survivor, time.Now().Add(20*time.Second)) // a replica was promoted
	promoted := time.Now()
	for {
		n := failing()
		if n == 0 {
			break
		}
		if time.Since(promoted) > 10*time.Second {
			t.Fatalf("%d of %d decisions still fail %v after the promotion", n, len(keys), time.Since(promoted).Round(time.Second))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("all decisions on Redis again %v after the promotion", time.Since(promoted).Round(10*time.Millisecond))
}

// kill -9 the Redis under load: no decision waits much longer than the
// deadline, none fails, the limit is still enforced; when Redis returns,
// the store goes back to it.
func TestFailoverWhenRedisDies(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	mem, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	var transitions []string
	var mu sync.Mutex
	f, err := NewFailoverStore(FailoverOptions{
		Primary: redisStore(t, "redis://"+r.addr(), 50*time.Millisecond), Fallback: NewMemoryStore(mem),
		Cooldown: 100 * time.Millisecond,
		OnModeChange: func(from, to string, _ error) {
			mu.Lock()
			transitions = append(transitions, from+">"+to)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	limit := Limit{Rate: 5, Period: time.Hour}
	var slowest atomic.Int64
	defer func() { t.Logf("slowest decision: %s", time.Duration(slowest.Load())) }()
	decide := func(key string) Result {
		start := time.Now()
		res, err := f.Allow(context.Background(), key, limit)
		if d := int64(time.Since(start)); d > slowest.Load() {
			slowest.Store(d)
		}
		// The deadline (50 ms) plus a margin for a CI machine whose two cores
		// also run the rest of the suite: a stalled decision would take seconds.
		if d := time.Since(start); d > 50*time.Millisecond+500*time.Millisecond {
			t.Errorf("a decision took %s", d)
		}
		if err != nil {
			t.Errorf("decision failed: %v", err)
		}
		return res
	}
	if !decide("k1").Allowed || f.Mode() != ModeRedis {
		t.Fatal("redis mode")
	}
	for i := 0; i < 5; i++ { // a key that uses its whole limit in Redis
		if !decide("used").Allowed {
			t.Fatalf("used: request %d refused in Redis", i+1)
		}
	}

	// Load from 8 goroutines while Redis dies.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var allowedAfter atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				decide(fmt.Sprintf("load-%d-%d", g, i%20))
			}
		}(g)
	}
	time.Sleep(50 * time.Millisecond)
	r.kill()
	deadline := time.Now().Add(5 * time.Second)
	for f.Mode() != ModeFallback {
		if time.Now().After(deadline) {
			t.Fatal("never fell back")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// In fallback the limit still holds: 5 per hour for a fresh key.
	for i := 0; i < 10; i++ {
		if decide("fresh").Allowed {
			allowedAfter.Add(1)
		}
	}
	if allowedAfter.Load() != 5 {
		t.Errorf("fallback admitted %d of 10, want 5", allowedAfter.Load())
	}
	// A key that used its limit in Redis stays limited: the fallback
	// followed Redis's decisions, it does not start afresh.
	if res := decide("used"); res.Allowed || res.RetryAfter < 11*time.Minute {
		t.Errorf("after the switch to memory, the used-up key got %+v", res)
	}
	r.start() // same port
	for f.Mode() != ModeRedis {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("never went back to redis")
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(transitions) < 2 || transitions[0] != "redis>fallback" || transitions[len(transitions)-1] != "fallback>redis" {
		t.Fatalf("transitions %v", transitions)
	}
}

func TestFailoverShareOfReplicas(t *testing.T) {
	t.Parallel()
	mem, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
	t.Cleanup(func() { mem.Close() })
	dead := redisStore(t, "redis://127.0.0.1:1", 50*time.Millisecond) // nothing listens there
	f, err := NewFailoverStore(FailoverOptions{Primary: dead, Fallback: NewMemoryStore(mem), Replicas: 3, Failures: 1, Cooldown: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := 0; i < 20; i++ {
		res, err := f.Allow(context.Background(), "k", Limit{Rate: 9, Period: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed {
			n++
		}
	}
	if n != 3 || f.Mode() != ModeFallback {
		t.Fatalf("one of 3 replicas admitted %d of a limit of 9 (mode %s)", n, f.Mode())
	}
}

// After SCRIPT FLUSH (a restarted or failed-over node), decisions load the
// script again and each is counted once.
func TestRedisNoscriptRecovery(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	s := redisStore(t, "redis://"+r.addr(), 5*time.Second)
	l := Limit{Rate: 100, Period: time.Hour}
	if _, err := s.Allow(context.Background(), "k", l); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("redis-cli", "-p", fmt.Sprint(r.port), "script", "flush").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Allow(context.Background(), "k", l); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	res, err := s.Allow(context.Background(), "k", l)
	if err != nil || res.Remaining != 100-22 {
		t.Fatalf("after 22 decisions: remaining %d (want 78), %v", res.Remaining, err)
	}
}

func TestRedisStoreCloseFreesCallers(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	c, err := NewRedisClient("redis://"+r.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := NewRedisStore(c, "p:", time.Second)
	s.Close()
	start := time.Now()
	if _, err := s.Allow(context.Background(), "k", Limit{Rate: 1, Period: time.Second}); err == nil || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("Allow after Close: %v after %s", err, time.Since(start))
	}
}

// fakeStore answers as told.
type fakeStore struct {
	fail  atomic.Bool
	delay atomic.Int64
}

func (f *fakeStore) Allow(ctx context.Context, _ string, l Limit) (Result, error) {
	if d := f.delay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	if f.fail.Load() {
		return Result{}, fmt.Errorf("down")
	}
	return Result{Allowed: true, Limit: l}, nil
}

// fakeFailover is a FailoverStore over a fakeStore (3 failures open it, no
// probe for an hour) and a memory fallback.
func fakeFailover(t *testing.T) (*FailoverStore, *fakeStore) {
	t.Helper()
	mem, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
	t.Cleanup(func() { mem.Close() })
	primary := &fakeStore{}
	f, err := NewFailoverStore(FailoverOptions{Primary: primary, Fallback: NewMemoryStore(mem), Failures: 3, Cooldown: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return f, primary
}

// Only the half-open probe closes an open breaker: a slow call that began
// before it opened does not.
func TestBreakerClosedOnlyByTheProbe(t *testing.T) {
	t.Parallel()
	f, primary := fakeFailover(t)
	primary.delay.Store(int64(200 * time.Millisecond))
	slow := make(chan struct{})
	go func() { f.Allow(context.Background(), "slow", Limit{Rate: 10, Period: time.Minute}); close(slow) }()
	time.Sleep(20 * time.Millisecond)
	primary.delay.Store(0)
	primary.fail.Store(true)
	for i := 0; i < 3; i++ {
		f.Allow(context.Background(), "k", Limit{Rate: 10, Period: time.Minute})
	}
	if f.Mode() != ModeFallback {
		t.Fatal("breaker did not open")
	}
	primary.fail.Store(false)
	<-slow // succeeds after the breaker opened
	if f.Mode() != ModeFallback {
		t.Fatal("a non-probe success closed the breaker before its cooldown")
	}
}

// Calls out together that fail together (one stall of Redis, one batch's
// round trip) are one failure, not one each: Failures in a row means as
// many stalls (QA: a healthy local Redis on a busy machine flapped to
// fallback seven times in 90 s, each time on one slow round trip).
func TestBreakerCountsAStallOnce(t *testing.T) {
	t.Parallel()
	f, primary := fakeFailover(t)
	l := Limit{Rate: 10, Period: time.Minute}
	primary.delay.Store(int64(50 * time.Millisecond))
	primary.fail.Store(true)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); f.Allow(context.Background(), fmt.Sprint("k", i), l) }()
	}
	wg.Wait()
	if f.Mode() != ModeRedis {
		t.Fatal("one stall under 8 concurrent decisions opened the breaker")
	}
	for i := 0; i < 2; i++ { // two more stalls, one after the other: three in a row
		f.Allow(context.Background(), "k", l)
	}
	if f.Mode() != ModeFallback {
		t.Fatal("three failures in a row did not open the breaker")
	}
}

// TestRedisStoreBatches: concurrent decisions on a single node go up as a
// few script calls, not one each; a key that holds something else (a hash
// an operator put under the prefix) is decided as fresh and fails nobody
// else's decision in its batch.
func TestRedisStoreBatches(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("redis-cli", append([]string{"-p", fmt.Sprint(r.port)}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	cli("hset", "chatguard:rl:poison", "a", "b")
	s := redisStore(t, "redis://"+r.addr()+"/0", 5*time.Second)
	cli("config", "resetstat")

	const n = 200
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]Result, n)
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			key := fmt.Sprintf("k%d", g%20)
			if g%50 == 0 {
				key = "poison"
			}
			res, err := s.Allow(context.Background(), key, Limit{Rate: 100, Period: time.Hour})
			if err != nil {
				t.Errorf("%s: %v", key, err)
			}
			results[g] = res
		}()
	}
	close(start)
	wg.Wait()
	for g, res := range results {
		if !res.Allowed {
			t.Errorf("decision %d denied under a limit of 100: %+v", g, res)
		}
	}
	var calls int
	for _, line := range strings.Split(cli("info", "commandstats"), "\n") {
		if strings.HasPrefix(line, "cmdstat_evalsha:") {
			fmt.Sscanf(strings.TrimPrefix(line, "cmdstat_evalsha:"), "calls=%d", &calls)
		}
	}
	if calls == 0 || calls > n/2 {
		t.Fatalf("%d script calls for %d concurrent decisions: want a few batches", calls, n)
	}
	if got := cli("get", "chatguard:rl:poison"); got == "" {
		t.Fatal("the foreign value under the prefix was not replaced by a TAT")
	}
	t.Logf("%d concurrent decisions in %d script calls", n, calls)
}

// One address with slots behind it — a cluster proxy, a managed multi-shard
// Redis — answers a batch across slots with CROSSSLOT: the store must switch
// to one key per call and lose no decision. A one-node Redis Cluster owning
// every slot, reached with a plain redis:// URL, answers the same way.
func TestRedisStoreCrossSlotEndpoint(t *testing.T) {
	t.Parallel()
	r := startRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	if out, err := exec.Command("redis-cli", "-p", fmt.Sprint(r.port), "cluster", "addslotsrange", "0", "16383").CombinedOutput(); err != nil {
		t.Skipf("cluster addslotsrange: %v %s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := exec.Command("redis-cli", "-p", fmt.Sprint(r.port), "cluster", "info").Output()
		if strings.Contains(string(out), "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s := redisStore(t, "redis://"+r.addr(), 5*time.Second)
	if s.perKey.Load() {
		t.Fatal("a redis:// URL starts in batch mode")
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	var admitted [10]atomic.Int64
	for g := 0; g < 200; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := s.Allow(context.Background(), fmt.Sprintf("k%d", g%10), Limit{Rate: 5, Period: time.Hour})
			if err != nil {
				t.Errorf("decision failed: %v", err)
			}
			if res.Allowed {
				admitted[g%10].Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	for k := range admitted {
		if n := admitted[k].Load(); n != 5 {
			t.Errorf("key k%d: %d admitted, want exactly 5", k, n)
		}
	}
	if !s.perKey.Load() {
		t.Fatal("the store did not switch to one key per call")
	}
}

// A wrong password is reported as such (WRONGPASS), not as a reply of an
// unexpected type, and the password itself is in no error.
func TestRedisWrongPasswordIsNamed(t *testing.T) {
	r := startRedis(t)
	if out, err := exec.Command("redis-cli", "-p", fmt.Sprint(r.port), "config", "set", "requirepass", "right-password-0123").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c, err := NewRedisClient("redis://:wrong-password-4567@"+r.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := NewRedisStore(c, "t:", time.Second)
	defer st.Close()
	_, err = st.Allow(context.Background(), "k", Limit{Rate: 10, Period: time.Minute})
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("error %v: want it to name WRONGPASS", err)
	}
	if strings.Contains(err.Error(), "password-") {
		t.Fatalf("a password is in the error: %v", err)
	}
}

// A Redis that cannot be reached says why (QA: "connection refused" and
// an unknown host were both logged as "context deadline exceeded": go-redis
// retried the dial 5 times, 100 ms apart, past the call's deadline, so the
// runbook's grep read "Redis is slow" when it was down or misnamed).
func TestRedisUnreachableSaysWhy(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]string{
		fmt.Sprintf("redis://127.0.0.1:%d", freePort(t, 0)): "connection refused",
		"redis://no-such-host.invalid:6379":                 "lookup no-such-host.invalid", // "no such host", or the resolver's own failure
	} {
		c, err := NewRedisClient(url, 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		st := NewRedisStore(c, "t:", 50*time.Millisecond)
		_, err = st.Allow(context.Background(), "k", Limit{Rate: 10, Period: time.Minute})
		st.Close()
		c.Close()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want it to say %q", url, err, want)
		}
	}
}

// A cluster master dies: until its replica is promoted (the cluster's node
// timeout), its keys are decided in memory at once by its own breaker,
// while the other masters' keys stay in Redis; decisions do not wait for
// the dead node, and the store is back on Redis after the promotion.
func TestRedisClusterNodeDownIsolated(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 1, "3000")
	rs := redisStore(t, clusterURL(nodes), 50*time.Millisecond)
	changes := watchNodeChanges(rs, 200*time.Millisecond)
	mem, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	var switches atomic.Int64
	f, err := NewFailoverStore(FailoverOptions{
		Primary: rs, Fallback: NewMemoryStore(mem), Cooldown: 200 * time.Millisecond,
		OnModeChange: func(from, to string, err error) { switches.Add(1); t.Logf("%s -> %s: %v", from, to, err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 30) // about a third on each master
	for i := range keys {
		keys[i] = fmt.Sprintf("messages|user=u%d", i)
	}
	lim := Limit{Rate: 1_000_000, Period: time.Minute}
	victim := firstMaster(t, nodes)
	// 8 callers; count the decisions on the surviving masters' keys, and
	// those of them that waited for the deadline.
	onVictim := map[string]bool{}
	for _, k := range keys {
		onVictim[k] = rs.masterOf(context.Background(), rs.prefix+k) == victim.addr()
	}
	var total, slow, downErrs atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop); wg.Wait() }) }
	t.Cleanup(halt) // before the table closes
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				k := keys[i%len(keys)]
				if _, err := f.Allow(context.Background(), k, lim); err != nil {
					t.Error(err)
					return
				}
				if onVictim[k] {
					continue
				}
				total.Add(1)
				if time.Since(start) >= 40*time.Millisecond {
					slow.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	victim.kill()
	killed := time.Now()
	time.Sleep(2 * time.Second) // well inside the node timeout: no promotion yet
	t0, s0 := total.Load(), slow.Load()
	down := rs.NodesDown()
	for _, k := range keys { // the survivors' keys are still decided in Redis
		if _, err := rs.Allow(context.Background(), k, lim); errors.Is(err, ErrNodeDown) {
			downErrs.Add(1)
		}
	}
	mode := f.Mode()
	survivor := nodes[0]
	if survivor == victim {
		survivor = nodes[1]
	}
	waitClusterOK(t, survivor, time.Now().Add(20*time.Second)) // the replica was promoted
	promoted := time.Now()
	for len(rs.NodesDown()) != 0 {
		if time.Since(promoted) > 10*time.Second {
			t.Fatalf("nodes still down %v after the promotion: %v", time.Since(promoted).Round(time.Second), rs.NodesDown())
		}
		time.Sleep(50 * time.Millisecond)
	}
	back := time.Since(promoted)
	halt()
	t.Logf("2 s after the kill: %d decisions on the survivors' keys, %d of them slow (>= 40 ms); %d of %d keys on the dead node; back %v after the promotion (%v after the kill)",
		t0, s0, downErrs.Load(), len(keys), back.Round(10*time.Millisecond), time.Since(killed).Round(100*time.Millisecond))
	if len(down) != 1 || down[0] != victim.addr() {
		t.Errorf("nodes down %v, want [%s]", down, victim.addr())
	}
	if n, want := downErrs.Load(), countTrue(onVictim); n != int64(want) || want == 0 {
		t.Errorf("%d of %d keys refused as on a down node: want the dead master's %d", n, len(keys), want)
	}
	if mode != ModeRedis {
		t.Errorf("store mode %s with two of three masters up, want redis", mode)
	}
	// Before the breakers, most of the survivors' decisions in the window
	// waited for the deadline too (a batch waits for all of its nodes):
	// allow the rounds that open the breaker and the probes.
	if s0*10 > t0 {
		t.Errorf("%d of %d decisions on live masters waited for the deadline after another master died", s0, t0)
	}
	if got := changes(); len(got) < 2 || got[0] != victim.addr()+" down=true" {
		t.Errorf("node changes %v: want %s down, then up", got, victim.addr())
	}
}

// watchNodeChanges sets rs's node breakers (3 failures, cooldown) and
// returns what they reported so far, as "addr down=bool" lines.
func watchNodeChanges(rs *RedisStore, cooldown time.Duration) func() []string {
	var mu sync.Mutex
	var changes []string
	rs.WatchNodes(3, cooldown, func(addr string, down bool) {
		mu.Lock()
		changes = append(changes, fmt.Sprintf("%s down=%v", addr, down))
		mu.Unlock()
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(changes)
	}
}

func countTrue(m map[string]bool) (n int) {
	for _, v := range m {
		if v {
			n++
		}
	}
	return n
}

// One round holding keys of a hung master and of a live one: the live
// master's answer stands (its caller gets the Redis decision, its breaker
// sees no failure); only the hung master's call fails.
func TestClusterRoundKeepsLiveMastersAnswers(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 0, "5000")
	rs := redisStore(t, clusterURL(nodes), 50*time.Millisecond)
	ms := masters(t, nodes)
	a, b := ms[0], ms[1]
	keyOn := func(n *redisServer) string {
		for i := 0; ; i++ {
			if k := fmt.Sprintf("k%d", i); rs.masterOf(context.Background(), rs.prefix+k) == n.addr() {
				return k
			}
		}
	}
	lim := Limit{Rate: 100, Period: time.Minute}
	ka, kb := keyOn(a), keyOn(b)
	left := map[string]int{}
	for _, k := range []string{ka, kb} { // the script loaded, connections open
		// Setup, not what is tested: on a loaded machine the first call
		// (a dial and the script's load) can outlast the 50 ms deadline.
		var err error
		var res Result
		for try := 0; try < 20; try++ {
			if res, err = rs.Allow(context.Background(), k, lim); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		left[k] = res.Remaining
	}
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.cmd.Process.Signal(syscall.SIGCONT) })
	ca := &redisCall{key: ka, limit: lim, done: make(chan struct{})}
	cb := &redisCall{key: kb, limit: lim, done: make(chan struct{})}
	rs.round([]*redisCall{ca, cb}, []string{a.addr(), b.addr()}, nil)
	if cb.err != nil || !cb.res.Allowed || cb.res.Remaining != left[kb]-1 {
		t.Errorf("the live master's call: %+v, %v; want its decision (%d left)", cb.res, cb.err, left[kb]-1)
	}
	if rs.nodes.suspect(b.addr()) {
		t.Error("the live master was blamed for the hung one")
	}
	if ca.err == nil || !rs.nodes.suspect(a.addr()) {
		t.Errorf("the hung master's call: %v, suspect %v; want a failure on it", ca.err, rs.nodes.suspect(a.addr()))
	}
}

// A cluster whose slots were never read (unreachable since the start):
// decisions fail to the whole store's breaker, and no node is named down.
func TestClusterUnreachableNamesNoNode(t *testing.T) {
	t.Parallel()
	url := fmt.Sprintf("redis://127.0.0.1:%d?addr=127.0.0.1:%d", freePort(t, 0), freePort(t, 0))
	rs := redisStore(t, url, 50*time.Millisecond)
	var named []string
	rs.WatchNodes(1, time.Second, func(addr string, _ bool) { named = append(named, addr) })
	for range 5 {
		if _, err := rs.Allow(context.Background(), "k", Limit{Rate: 1, Period: time.Minute}); err == nil || errors.Is(err, ErrNodeDown) {
			t.Fatalf("decision on an unreachable cluster: %v, want a plain failure", err)
		}
	}
	if down := rs.NodesDown(); len(down) != 0 || len(named) != 0 {
		t.Errorf("nodes down %q, changes %q: want none (no master is known)", down, named)
	}
}

// downable is a Redis store that can be made to fail, as a Redis that
// hangs and comes back with its keys.
type downable struct {
	*RedisStore
	down atomic.Bool
}

func (d *downable) Allow(ctx context.Context, key string, l Limit) (Result, error) {
	return d.AllowOwing(ctx, key, l, 0)
}

func (d *downable) AllowOwing(ctx context.Context, key string, l Limit, debt time.Duration) (Result, error) {
	if d.down.Load() {
		return Result{}, errors.New("redis: i/o timeout")
	}
	return d.RedisStore.AllowOwing(ctx, key, l, debt)
}

// What the fallback admitted while Redis failed reaches Redis when it
// comes back: a login that used its 3 attempts across a Redis blip (1 in
// Redis, 2 in memory), or all 3 in memory, gets no more once Redis
// decides again, and the debt stays in Redis after the first refusal.
// Redis used to know only its own share of the attempts: 6 in 3 s.
func TestFallbackDebtReachesRedis(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	mem, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	primary := &downable{RedisStore: redisStore(t, "redis://"+r.addr(), time.Second)}
	f, err := NewFailoverStore(FailoverOptions{Primary: primary, Fallback: NewMemoryStore(mem), Failures: 1, Cooldown: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	login := Limit{Rate: 3, Period: 15 * time.Minute}
	allowed := func(key string, n int) (got []bool) {
		for i := 0; i < n; i++ {
			res, err := f.Allow(ctx, key, login)
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			got = append(got, res.Allowed)
		}
		return got
	}
	if got := allowed("login|a", 1); !got[0] {
		t.Fatal("first attempt refused")
	}
	primary.down.Store(true)
	allowed("login|probe", 1)
	if f.Mode() != ModeFallback {
		t.Fatalf("mode %s, want fallback", f.Mode())
	}
	if got := fmt.Sprint(allowed("login|a", 3), allowed("login|b", 4)); got != "[true true false] [true true true false]" {
		t.Fatalf("in fallback: %s", got)
	}
	primary.down.Store(false)
	for deadline := time.Now().Add(5 * time.Second); f.Mode() != ModeRedis; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the store did not return to Redis")
		}
		allowed("login|probe", 1)
	}
	if got := fmt.Sprint(allowed("login|a", 2), allowed("login|b", 2), allowed("login|c", 1)); got != "[false false] [false false] [true]" {
		t.Fatalf("back in Redis (a, b, a fresh c): %s", got)
	}
	if _, a := f.owing("login|a"); a != 0 {
		t.Fatal("a's debt still waiting after Redis took it")
	}
	if _, b := f.owing("login|b"); b != 0 {
		t.Fatal("debts still waiting after Redis took them")
	}
	c := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer c.Close()
	if ttl := c.PTTL(ctx, "chatguard:rl:login|b").Val(); ttl < 14*time.Minute {
		t.Fatalf("b's TAT in Redis expires in %s, want its whole 15-minute debt", ttl)
	}
}

// A key holding something that is not a plausible TAT — a value an
// operator wrote by hand, a damaged one — is decided as fresh: never a
// failed batch (nan made the script fail, and the store fall back), never
// a key refused for good (inf and huge numbers overflowed to a permanent
// 429 with Retry-After 0).
func TestRedisJunkValuesReadAsFresh(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	s := redisStore(t, "redis://"+r.addr(), time.Second)
	c := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer c.Close()
	ctx := context.Background()
	l := Limit{Rate: 3, Period: time.Minute}
	for i, junk := range []string{"nan", "-nan", "inf", "-inf", "1e300", "99999999999999999999", "0x10", "hello", ""} {
		key := fmt.Sprint("junk", i)
		if err := c.Set(ctx, "chatguard:rl:"+key, junk, 0).Err(); err != nil {
			t.Fatal(err)
		}
		res, err := s.Allow(ctx, key, l)
		if err != nil || !res.Allowed || res.Remaining != 2 {
			t.Errorf("%q: %+v %v, want allowed with 2 left", junk, res, err)
		}
	}
}

// Redis quotes the arguments of a command it does not know (a renamed
// EVALSHA: keys, and in them users' e-mails); the store's error, which the
// switch to fallback logs, keeps the reason and drops the quote.
func TestRedisErrorsQuoteNoKeys(t *testing.T) {
	t.Parallel()
	r := startRedis(t, "--rename-command", "EVALSHA", "EVALSHA_RENAMED")
	s := redisStore(t, "redis://"+r.addr(), time.Second)
	_, err := s.Allow(context.Background(), "auth_login|ip=10.0.0.1|body:email=ada@example.com", Limit{Rate: 3, Period: time.Minute})
	if err == nil {
		t.Fatal("no error without EVALSHA")
	}
	if msg := err.Error(); strings.Contains(msg, "ada@") || !strings.Contains(msg, "unknown command") || strings.Contains(msg, "redis: redis:") {
		t.Fatalf("error %q", msg)
	}
}

// flakyStore fails with the error it is given, as a Redis whose cause of
// failure changes (a wrong password, then a missing permission).
type flakyStore struct {
	mu     sync.Mutex
	err    error
	probes int // calls for probeKey
}

func (f *flakyStore) set(err error) { f.mu.Lock(); f.err = err; f.mu.Unlock() }

func (f *flakyStore) probeCount() int { f.mu.Lock(); defer f.mu.Unlock(); return f.probes }

func (f *flakyStore) Allow(_ context.Context, key string, l Limit) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if key == probeKey {
		f.probes++
	}
	if f.err != nil {
		return Result{}, f.err
	}
	return Result{Allowed: true, Limit: l}, nil
}

// watchFixture is a FailoverStore over primary, with a small memory
// fallback, whose mode changes and still-failing reports it records.
type watchFixture struct {
	f      *FailoverStore
	mu     sync.Mutex
	events []string
}

func newWatchFixture(t *testing.T, primary Store, cooldown time.Duration) *watchFixture {
	t.Helper()
	mem, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
	t.Cleanup(func() { mem.Close() })
	w := &watchFixture{}
	f, err := NewFailoverStore(FailoverOptions{
		Primary: primary, Fallback: NewMemoryStore(mem), Cooldown: cooldown,
		OnModeChange:   func(from, to string, err error) { w.say(fmt.Sprintf("%s>%s: %v", from, to, err)) },
		OnStillFailing: func(err error) { w.say("still: " + err.Error()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	w.f = f
	return w
}

func (w *watchFixture) say(s string) { w.mu.Lock(); w.events = append(w.events, s); w.mu.Unlock() }

func (w *watchFixture) said() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.events, "\n")
}

// watch runs Watch until the test ends.
func (w *watchFixture) watch(t *testing.T) {
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() { defer close(stopped); w.f.Watch(stop) }()
	t.Cleanup(func() { close(stop); <-stopped })
}

// waitMode waits up to 5 s for the store to be in mode.
func (w *watchFixture) waitMode(t *testing.T, mode, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); w.f.Mode() != mode; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
	}
}

// In fallback, Watch probes the primary every cooldown: the store returns
// to Redis when Redis does, with no rate-limited request to make the
// probe (the mode, its gauge and its alert said fallback until one came).
// A probe that fails for a new reason says so; the same reason again is
// not repeated within the minute. Trip switches at once (a Redis that did
// not answer at start).
func TestFailoverWatchAndTrip(t *testing.T) {
	t.Parallel()
	primary := &flakyStore{}
	w := newWatchFixture(t, primary, 20*time.Millisecond)
	primary.set(errors.New("WRONGPASS"))
	w.f.Trip(errors.New("WRONGPASS"))
	if w.f.Mode() != ModeFallback {
		t.Fatal("Trip did not switch to fallback")
	}
	w.watch(t)
	time.Sleep(150 * time.Millisecond) // several probes, the same reason
	primary.set(errors.New("NOPERM evalsha"))
	time.Sleep(150 * time.Millisecond)
	primary.set(nil)
	w.waitMode(t, ModeRedis, "the store did not return to Redis without traffic")
	if got := w.said(); got != "redis>fallback: WRONGPASS\nstill: NOPERM evalsha\nfallback>redis: <nil>" {
		t.Fatalf("events:\n%s", got)
	}
}

// A Redis that dies while no limited request comes is noticed: Watch probes
// a primary that had no call for a cooldown, and Failures failed probes
// open the breaker (QA: a quiet instance said "redis" for 6.5 minutes with
// Redis killed). A busy primary gets no probes.
func TestFailoverWatchNoticesAQuietPrimaryDying(t *testing.T) {
	t.Parallel()
	primary := &flakyStore{}
	w := newWatchFixture(t, primary, 40*time.Millisecond)
	w.watch(t)

	// Busy: a decision every 5 ms, so the primary is never quiet.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if _, err := w.f.Allow(context.Background(), "k", Limit{Rate: 1 << 20, Period: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	if n := primary.probeCount(); n > 1 {
		t.Errorf("%d probes of a busy primary", n)
	}
	// Quiet, then Redis dies: fallback without a single request.
	primary.set(errors.New("dial tcp: connection refused"))
	w.waitMode(t, ModeFallback, "a quiet store never noticed its primary failing")
	primary.set(nil)
	w.waitMode(t, ModeRedis, "the store did not return to Redis")
	if got := w.said(); got != "redis>fallback: dial tcp: connection refused\nfallback>redis: <nil>" {
		t.Errorf("events:\n%s", got)
	}
}

// clusterFlaky is a flakyStore that says it is a Redis Cluster.
type clusterFlaky struct{ flakyStore }

func (*clusterFlaky) Cluster() bool { return true }

// On a Redis Cluster a quiet store is not probed: the probe key lives on
// one master, and that master down would send a quiet replica's every key
// to the fallback (review); each master has a breaker of its own.
func TestFailoverWatchDoesNotProbeAQuietCluster(t *testing.T) {
	t.Parallel()
	primary := &clusterFlaky{}
	primary.set(errors.New("CLUSTERDOWN"))
	w := newWatchFixture(t, primary, 20*time.Millisecond)
	w.watch(t)
	time.Sleep(300 * time.Millisecond) // 15 cooldowns of quiet
	if n := primary.probeCount(); n != 0 || w.f.Mode() != ModeRedis {
		t.Errorf("%d probes of a quiet cluster, mode %s", n, w.f.Mode())
	}
}

// Pooled connections are redialled after RedisConnMaxIdle, under the 4
// minutes after which cloud load balancers drop an idle flow: over TLS
// go-redis cannot see such a close, and the next decision failed (QA).
func TestRedisClientRedialsIdleConnections(t *testing.T) {
	t.Parallel()
	for _, url := range []string{"redis://127.0.0.1:1", "rediss://127.0.0.1:1", "redis://127.0.0.1:1?addr=127.0.0.1:2"} {
		c, err := NewRedisClient(url, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var idle time.Duration
		switch c := c.(type) {
		case *redis.Client:
			idle = c.Options().ConnMaxIdleTime
		case *redis.ClusterClient:
			idle = c.Options().ConnMaxIdleTime
		}
		c.Close()
		if idle <= 0 || idle >= 4*time.Minute {
			t.Errorf("%s: connections idle %v before a redial; want under 4 minutes", url, idle)
		}
	}
}

// tellingFailover is a FailoverStore over a flakyStore, on the clock *now
// that the test moves, and what its OnStillFailing was told.
func tellingFailover(t *testing.T, now *time.Time) (*FailoverStore, *[]string) {
	t.Helper()
	mem, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
	t.Cleanup(func() { mem.Close() })
	told := new([]string)
	f, err := NewFailoverStore(FailoverOptions{
		Primary: &flakyStore{}, Fallback: NewMemoryStore(mem),
		OnStillFailing: func(err error) { *told = append(*told, err.Error()) },
		Now:            func() time.Time { return *now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return f, told
}

// A probe's reason that alternates with another (a TLS Redis refusing the
// password answers WRONGPASS and EOF in turn) is told once a minute each,
// not once a probe (QA: 25 lines a minute).
func TestFailoverStillFailingAlternating(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	f, told := tellingFailover(t, &now)
	f.Trip(errors.New("WRONGPASS"))
	for i := range 20 { // 20 probes 2.5 s apart: 47.5 s
		if i%2 == 0 {
			f.failed(errors.New("EOF"), time.Time{})
		} else {
			f.failed(errors.New("WRONGPASS"), time.Time{})
		}
		now = now.Add(2500 * time.Millisecond)
	}
	if got := strings.Join(*told, ","); got != "EOF" {
		t.Fatalf("told within the first minute: %q, want EOF only (WRONGPASS opened the breaker)", got)
	}
	now = now.Add(15 * time.Second) // a minute after the first of each
	f.failed(errors.New("WRONGPASS"), time.Time{})
	f.failed(errors.New("EOF"), time.Time{})
	f.failed(errors.New("WRONGPASS"), time.Time{})
	if got := strings.Join(*told, ","); got != "EOF,WRONGPASS,EOF" {
		t.Fatalf("told: %q, want each reason again after a minute", got)
	}
}

// A master held open comes back when it answers again even though no
// decision on one of its keys comes (QA: on a quiet replica a healthy
// master stayed down, with its gauge and alert, until traffic hashed there).
func TestRedisClusterDownNodeProbedWhileQuiet(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 0, "5000")
	rs := redisStore(t, clusterURL(nodes), 50*time.Millisecond)
	changes := watchNodeChanges(rs, 100*time.Millisecond)
	victim := firstMaster(t, nodes)
	var key string
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("messages|user=u%d", i); rs.masterOf(context.Background(), rs.prefix+k) == victim.addr() {
			key = k
		}
	}
	if got := rs.masterOf(context.Background(), rs.prefix+probeKeyFor(rs.prefix+key, rs.prefix)); got != victim.addr() {
		t.Fatalf("the probe key of %s lives on %s, not on its master %s", key, got, victim.addr())
	}
	lim := Limit{Rate: 1000, Period: time.Minute}
	// The first call loads the script (NOSCRIPT, then again): on a busy
	// machine that may take longer than the store's 50 ms.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := rs.Allow(context.Background(), key, lim); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("redis-cli", "-p", fmt.Sprint(victim.port), "client", "pause", "1500", "ALL").CombinedOutput(); err != nil {
		t.Fatalf("client pause: %v %s", err, out)
	}
	paused := time.Now()
	for i := 0; len(rs.NodesDown()) == 0; i++ {
		if i == 20 {
			t.Fatalf("the paused master was never held open")
		}
		_, _ = rs.Allow(context.Background(), key, lim)
	}
	// No decision from here on: the watcher alone must bring it back.
	for len(rs.NodesDown()) > 0 {
		if time.Since(paused) > 5*time.Second {
			t.Fatalf("master still held open %v after its pause ended, with no traffic", time.Since(paused)-1500*time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if back := time.Since(paused); back < 1200*time.Millisecond { // the pause began before paused
		t.Errorf("held open for %v only, shorter than the pause", back)
	}
	if want := []string{victim.addr() + " down=true", victim.addr() + " down=false"}; !slices.Equal(changes(), want) {
		t.Errorf("node changes %v, want %v", changes(), want)
	}
}

// A reason is told once a minute even when each failure's text differs by
// what changes every time: the connection's local port, a MOVED's slot
// (QA: a "still failing" line every probe).
func TestFailoverStillFailingIgnoresPortsAndSlots(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	f, told := tellingFailover(t, &now)
	f.Trip(errors.New("limiter: redis: dial tcp 10.0.0.5:6379: connect: connection refused"))
	for i := range 20 {
		f.failed(fmt.Errorf("limiter: redis: write tcp 127.0.0.1:%d->127.0.0.1:27224: write: broken pipe", 40000+i), time.Time{})
		f.failed(fmt.Errorf("limiter: redis: read tcp [::1]:%d->[::1]:6379: i/o timeout", 50000+i), time.Time{})
		f.failed(fmt.Errorf("limiter: redis: MOVED %d 127.0.0.1:27232", 12000+i), time.Time{})
		now = now.Add(2 * time.Second)
	}
	if len(*told) != 3 {
		t.Fatalf("told %d times in 40 s: %q, want each of the 3 reasons once", len(*told), *told)
	}
	for _, tc := range [][2]string{
		{"write tcp 127.0.0.1:40680->127.0.0.1:27224: write: broken pipe", "write tcp 127.0.0.1:27224: write: broken pipe"},
		{"read tcp [fe80::1%eth0]:5->[::1]:6379: i/o timeout", "read tcp [::1]:6379: i/o timeout"},
		{"MOVED 14850 10.0.0.7:6379", "MOVED 10.0.0.7:6379"},
		{"dial tcp 10.0.0.5:6379: connect: connection refused", "dial tcp 10.0.0.5:6379: connect: connection refused"},
	} {
		if got := reasonOf(tc[0]); got != tc[1] {
			t.Errorf("reasonOf(%q) = %q, want %q", tc[0], got, tc[1])
		}
	}
}

// A failed call that does not switch the store is named in the log (once a
// minute per reason), not only counted (QA: killed connections raised the
// errors counter by 106 without a line).
func TestFailoverNamesFailuresThatDoNotSwitch(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	mem, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 100})
	t.Cleanup(func() { mem.Close() })
	var told []string
	primary := &flakyStore{}
	f, err := NewFailoverStore(FailoverOptions{
		Primary: primary, Fallback: NewMemoryStore(mem),
		OnFailure:    func(err error) { told = append(told, err.Error()) },
		OnModeChange: func(from, to string, err error) { t.Errorf("switched %s -> %s: %v", from, to, err) },
		Now:          func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	lim := Limit{Rate: 100, Period: time.Minute}
	call := func(e error) {
		primary.set(e)
		if _, err := f.Allow(context.Background(), "k", lim); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
	}
	for range 10 { // a failure now and then, between successes
		call(errors.New("limiter: redis: EOF"))
		call(nil)
		call(errors.New("limiter: redis: NOSCRIPT No matching script"))
		call(nil)
	}
	if got := strings.Join(told, ","); got != "limiter: redis: EOF,limiter: redis: NOSCRIPT No matching script" {
		t.Errorf("told %q, want each reason once in 40 s", got)
	}
	now = now.Add(time.Minute)
	call(errors.New("limiter: redis: EOF"))
	if len(told) != 3 {
		t.Errorf("told %q: want EOF again after a minute", told)
	}
	if f.Mode() != ModeRedis {
		t.Errorf("mode %s", f.Mode())
	}
}

// deadOwing is a primary that can take debts and never answers.
type deadOwing struct{}

func (deadOwing) Allow(context.Context, string, Limit) (Result, error) {
	return Result{}, errors.New("redis: i/o timeout")
}

func (deadOwing) AllowOwing(context.Context, string, Limit, time.Duration) (Result, error) {
	return Result{}, errors.New("redis: i/o timeout")
}

// What the fallback owes Redis lives in a table that is swept and seen:
// the manager's when one is given (in its stats, swept by it), else the
// store's own, swept by Watch (QA: 7.6 MB of expired debts stayed after an
// outage, in no figure, until the process ended).
func TestFallbackDebtsAreSwept(t *testing.T) {
	t.Parallel()
	lim := Limit{Rate: 1, Period: 50 * time.Millisecond}
	fill := func(f *FailoverStore) {
		for i := range 200 {
			if _, err := f.Allow(context.Background(), fmt.Sprintf("login|u%d", i), lim); err != nil {
				t.Fatal(err)
			}
		}
	}
	newStore := func(debts *sessions.StateTable) *FailoverStore {
		mem, _ := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 1000})
		t.Cleanup(func() { mem.Close() })
		f, err := NewFailoverStore(FailoverOptions{Primary: deadOwing{}, Fallback: NewMemoryStore(mem), Failures: 1, Cooldown: time.Hour, Debts: debts})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}

	m := sessions.NewManager(sessions.ManagerOptions{})
	t.Cleanup(func() { m.Close() })
	debts, err := sessions.NewManagedStateTable(m, sessions.TableRateLimitDebts, sessions.StateOptions{MaxEntries: MaxDebts})
	if err != nil {
		t.Fatal(err)
	}
	fill(newStore(debts))
	size := func() int {
		for _, st := range m.Stats() {
			if st.Name == sessions.TableRateLimitDebts {
				return st.Size
			}
		}
		t.Fatal("no rateLimitDebts table in the manager's stats")
		return 0
	}
	if n := size(); n < 190 {
		t.Fatalf("the manager sees %d debts, want about 200", n)
	}
	time.Sleep(100 * time.Millisecond)
	m.Sweep()
	if n := size(); n != 0 {
		t.Errorf("%d debts left after they expired and the manager swept", n)
	}

	own := newStore(nil)
	own.debtSweep = 50 * time.Millisecond
	fill(own)
	if own.owed.Len() < 190 {
		t.Fatalf("own table holds %d debts", own.owed.Len())
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { own.Watch(stop); close(done) }()
	defer func() { close(stop); <-done }()
	for deadline := time.Now().Add(3 * time.Second); own.owed.Len() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("own table still holds %d expired debts", own.owed.Len())
		}
	}
}
