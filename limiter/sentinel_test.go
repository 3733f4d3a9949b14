package limiter

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// sentinelSet is a master, its replica and sentinels watching them as
// "mymaster", each a process of the test's own on a free port.
type sentinelSet struct {
	master, replica *redisServer
	sentinels       []*redisServer
}

// startSentinels starts the set: master and replica require password
// (none if empty), and so do the sentinels when sentinelAuth. A sentinel
// calls the master down after 500 ms without an answer and, alone in its
// quorum of 1, fails it over at once.
func startSentinels(t *testing.T, sentinels int, password string, sentinelAuth bool) *sentinelSet {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli is not installed")
	}
	// No 5 s wait before the full sync a replica asks for (Redis 7's
	// diskless default).
	set := &sentinelSet{master: startRedis(t, "--repl-diskless-sync-delay", "0")}
	set.replica = startRedis(t, "--replicaof", "127.0.0.1", fmt.Sprint(set.master.port), "--masterauth", password)
	for _, r := range []*redisServer{set.master, set.replica} {
		if password == "" {
			continue
		}
		for _, kv := range [][2]string{{"masterauth", password}, {"requirepass", password}} {
			if out, err := r.cli("config", "set", kv[0], kv[1]).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		r.password = password
	}
	// The replica must be in sync before a sentinel first asks the master
	// about it (at once, then every 10 s), or it is found late.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(cliOut(set.replica, "info", "replication"), "master_link_status:up") {
		if time.Now().After(deadline) {
			t.Fatal("the replica never synced")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < sentinels; i++ {
		s := &redisServer{t: t, port: freePort(t, 0)}
		conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
			"sentinel monitor mymaster 127.0.0.1 %d 1\n"+
			"sentinel down-after-milliseconds mymaster 500\n"+
			"sentinel failover-timeout mymaster 2000\n", s.port, t.TempDir(), set.master.port)
		if password != "" {
			conf += "sentinel auth-pass mymaster " + password + "\n"
		}
		if sentinelAuth {
			conf += "requirepass " + password + "\n"
			s.password = password
		}
		path := filepath.Join(t.TempDir(), "sentinel.conf") // rewritten by the sentinel
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		s.args = []string{path, "--sentinel"}
		s.start()
		t.Cleanup(s.kill)
		set.sentinels = append(set.sentinels, s)
	}
	for _, s := range set.sentinels {
		for !strings.Contains(cliOut(s, "sentinel", "replicas", "mymaster"), fmt.Sprint(set.replica.port)) {
			if time.Now().After(deadline) {
				t.Fatalf("sentinel %d never found the replica", s.port)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return set
}

func cliOut(r *redisServer, args ...string) string {
	out, _ := r.cli(args...).CombinedOutput()
	return string(out)
}

// url is REDIS_URL for the set: its sentinels, then extra addresses.
func (set *sentinelSet) url(userinfo string, extra ...string) string {
	u := "redis://" + userinfo + set.sentinels[0].addr() + "?master_name=mymaster"
	for _, s := range set.sentinels[1:] {
		u += "&addr=" + s.addr()
	}
	for _, a := range extra {
		u += "&addr=" + a
	}
	return u
}

// Through sentinels that share Redis's password, the store is exact, as
// on a node: every decision reaches the master (the replica would answer
// READONLY, a failed decision here).
func TestRedisSentinelStore(t *testing.T) {
	t.Parallel()
	set := startSentinels(t, 2, "s3cret-pw", true)
	s := redisStore(t, set.url(":s3cret-pw@"), 5*time.Second)
	if _, ok := s.c.(*redis.Client); !ok || s.Cluster() || s.perKey.Load() {
		t.Fatalf("client %T: a failover client is a single node's, batched", s.c)
	}
	exactness(t, s, "exact")
	if out := cliOut(set.master, "exists", "chatguard:rl:exact"); strings.TrimSpace(out) != "1" {
		t.Fatalf("the key is not on the master: %q", out)
	}
}

// The sentinels give the failover client every setting the store relies
// on, as a node's client has them.
func TestRedisSentinelClientSettings(t *testing.T) {
	t.Parallel()
	o, err := redisOptions("rediss://:pw@127.0.0.1:1?master_name=mymaster&addr=127.0.0.1:2", 70*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	fo := o.Failover() // what NewUniversalClient gives the failover client; it copies these to each sentinel's
	if fo.MasterName != "mymaster" || len(fo.SentinelAddrs) != 2 || fo.Password != "pw" || fo.SentinelPassword != "pw" || fo.TLSConfig == nil {
		t.Fatalf("options %+v", fo)
	}
	for name, ok := range map[string]bool{
		"timeouts":       fo.DialTimeout == 70*time.Millisecond && fo.ReadTimeout == fo.DialTimeout && fo.WriteTimeout == fo.DialTimeout && fo.PoolTimeout == fo.DialTimeout,
		"no retries":     fo.MaxRetries == -1 && fo.DialerRetries == 1,
		"no backoff":     fo.MinRetryBackoff == -1 && fo.MaxRetryBackoff == -1,
		"context":        fo.ContextTimeoutEnabled,
		"idle redial":    fo.ConnMaxIdleTime == RedisConnMaxIdle,
		"client name":    fo.ClientName == "chatguard",
		"no replica use": !fo.ReplicaOnly && !fo.RouteByLatency && !fo.RouteRandomly,
	} {
		if !ok {
			t.Errorf("%s: not set for the failover client: %+v", name, fo)
		}
	}
	c, err := NewRedisClient("redis://127.0.0.1:1?master_name=mymaster", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// (go-redis reads MaxRetries -1 as 0 retries.)
	if rc, ok := c.(*redis.Client); !ok || rc.Options().MaxRetries != 0 || rc.Options().ConnMaxIdleTime != RedisConnMaxIdle {
		t.Fatalf("client %T", c)
	}
}

// kill -9 the master under load, as TestFailoverWhenRedisDies does a
// node's: no decision fails or waits much past the deadline; the store
// falls back, and once the sentinel has promoted the replica it is back on
// Redis, on the new master. Redis requires a password, the sentinel none
// (it accepts any), and the URL lists a second sentinel that is dead.
func TestRedisSentinelFollowsFailover(t *testing.T) {
	t.Parallel()
	set := startSentinels(t, 1, "s3cret-pw", false)
	mem, err := sessions.NewStateTable(sessions.StateOptions{MaxEntries: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	var transitions []string
	var mu sync.Mutex
	f, err := NewFailoverStore(FailoverOptions{
		Primary:  redisStore(t, set.url(":s3cret-pw@", fmt.Sprintf("127.0.0.1:%d", freePort(t, 0))), 50*time.Millisecond),
		Fallback: NewMemoryStore(mem), Cooldown: 100 * time.Millisecond,
		OnModeChange: func(from, to string, _ error) {
			mu.Lock()
			transitions = append(transitions, from+">"+to)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() { f.Watch(stopWatch); close(watched) }()
	defer func() { close(stopWatch); <-watched }()

	limit := Limit{Rate: 5, Period: time.Hour}
	var slowest atomic.Int64
	var decisions atomic.Int64
	decide := func(key string) Result {
		start := time.Now()
		res, err := f.Allow(context.Background(), key, limit)
		d := time.Since(start)
		if int64(d) > slowest.Load() {
			slowest.Store(int64(d))
		}
		decisions.Add(1)
		// The deadline (50 ms) plus the margin TestFailoverWhenRedisDies allows.
		if d > 50*time.Millisecond+500*time.Millisecond {
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

	stop := make(chan struct{})
	var wg sync.WaitGroup
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
				time.Sleep(time.Millisecond) // decisions, not a busy loop on two cores
			}
		}(g)
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(50 * time.Millisecond)
	set.master.kill()
	killed := time.Now()
	for f.Mode() != ModeFallback {
		if time.Since(killed) > 5*time.Second {
			t.Fatal("never fell back")
		}
		time.Sleep(5 * time.Millisecond)
	}
	fellBack := time.Since(killed)
	allowed := 0
	for i := 0; i < 10; i++ { // the limit still holds in fallback
		if decide("fresh").Allowed {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("fallback admitted %d of 10, want 5", allowed)
	}
	for f.Mode() != ModeRedis {
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("still %s 15 s after the kill; sentinel says %q", f.Mode(), cliOut(set.sentinels[0], "sentinel", "get-master-addr-by-name", "mymaster"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	back := time.Since(killed)
	decide("after")
	if out := cliOut(set.replica, "exists", "chatguard:rl:after"); strings.TrimSpace(out) != "1" {
		t.Fatalf("back in redis mode, but the key is not on the promoted replica: %q", out)
	}
	t.Logf("kill -9 of the master (down-after-milliseconds 500): fallback after %v, back on Redis (the promoted replica) after %v; %d decisions, slowest %v",
		fellBack.Round(time.Millisecond), back.Round(10*time.Millisecond), decisions.Load(), time.Duration(slowest.Load()).Round(time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	if len(transitions) < 2 || transitions[0] != "redis>fallback" || transitions[len(transitions)-1] != "fallback>redis" {
		t.Fatalf("transitions %v", transitions)
	}
}

// A failover the sentinels make while the master lives on (SENTINEL
// FAILOVER, a rolling update of the chart's pods) demotes it to a replica
// that answers READONLY: the store follows the new master instead, and
// keeps deciding in Redis.
func TestRedisSentinelFollowsADemotion(t *testing.T) {
	t.Parallel()
	set := startSentinels(t, 1, "", false)
	s := redisStore(t, set.url(""), 50*time.Millisecond)
	lim := Limit{Rate: 1000, Period: time.Minute}
	firstDecision(t, s, "before", lim)
	began := time.Now()
	for { // NOGOODSLAVE until the sentinel has the replica's INFO
		out := cliOut(set.sentinels[0], "sentinel", "failover", "mymaster")
		if strings.Contains(out, "OK") {
			break
		}
		if time.Since(began) > 10*time.Second {
			t.Fatalf("sentinel failover: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	began = time.Now()
	var failed []string
	for i := 0; ; i++ {
		// Replicated from the old master, a key would be on the new one
		// before the promotion: only one written after it counts.
		promoted := strings.HasPrefix(cliOut(set.replica, "role"), "master")
		key := fmt.Sprintf("after-%d", i)
		_, err := s.Allow(context.Background(), key, lim)
		if err != nil && len(failed) < 5 {
			failed = append(failed, err.Error())
		}
		if err == nil && promoted && strings.TrimSpace(cliOut(set.replica, "exists", "chatguard:rl:"+key)) == "1" {
			break
		}
		if time.Since(began) > 10*time.Second {
			t.Fatalf("decisions not on the new master 10 s after SENTINEL FAILOVER; errors %q; sentinel says %q", failed,
				cliOut(set.sentinels[0], "sentinel", "get-master-addr-by-name", "mymaster"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(began)
	// The sentinel demotes the old master when it next reads its INFO (up
	// to 10 s later): do it now, as it will. Decisions stay on the new
	// master, none meets READONLY.
	if out := cliOut(set.master, "replicaof", "127.0.0.1", fmt.Sprint(set.replica.port)); !strings.Contains(out, "OK") {
		t.Fatalf("replicaof: %s", out)
	}
	for i := 0; i < 20; i++ {
		if _, err := s.Allow(context.Background(), "after", lim); err != nil {
			t.Fatalf("decision %d after the switch: %v", i, err)
		}
	}
	t.Logf("decisions on the new master %v after SENTINEL FAILOVER; errors meanwhile: %q", took.Round(10*time.Millisecond), failed)
}

// A Sentinel URL that cannot work fails each decision within the deadline
// and says why, without the password.
func TestRedisSentinelErrorsSayWhy(t *testing.T) {
	t.Parallel()
	set := startSentinels(t, 1, "s3cret-pw", true)
	for url, want := range map[string]string{
		"redis://:s3cret-pw@" + set.sentinels[0].addr() + "?master_name=nosuch":             "knows no master by REDIS_URL's master_name",
		"redis://:wrong-pw@" + set.sentinels[0].addr() + "?master_name=mymaster":            "WRONGPASS",
		fmt.Sprintf("redis://:s3cret-pw@127.0.0.1:%d?master_name=mymaster", freePort(t, 0)): "connection refused",
	} {
		c, err := NewRedisClient(url, 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		st := NewRedisStore(c, "t:", 50*time.Millisecond)
		if perr := st.Ping(context.Background()); want == "knows no master by REDIS_URL's master_name" &&
			(perr == nil || !strings.Contains(perr.Error(), want)) {
			// At start too: serve's first line is the Ping's (review).
			t.Errorf("Ping: %v, want it to say %q", perr, want)
		}
		start := time.Now()
		_, err = st.Allow(context.Background(), "k", Limit{Rate: 10, Period: time.Minute})
		took := time.Since(start)
		st.Close()
		c.Close()
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "-pw") {
			t.Errorf("%s: %v, want it to say %q and no password", want, err, want)
		}
		if took > 50*time.Millisecond+500*time.Millisecond {
			t.Errorf("%s: the decision took %v", want, took)
		}
	}
}

// The sentinel the client asks hangs (SIGSTOP: a partitioned host) as the
// master dies: the client asks the other sentinels, each decision still
// ends within the deadline, and decisions reach the promoted replica.
func TestRedisSentinelHungSentinel(t *testing.T) {
	t.Parallel()
	set := startSentinels(t, 3, "", false) // two of three elect the sentinel that fails the master over
	s := redisStore(t, set.url(""), 50*time.Millisecond)
	lim := Limit{Rate: 1000, Period: time.Minute}
	firstDecision(t, s, "k", lim)
	var used *redisServer
	for _, sn := range set.sentinels {
		if strings.Contains(cliOut(sn, "client", "list"), "name=chatguard") {
			used = sn
		}
	}
	if used == nil {
		t.Fatal("no sentinel has the client's connection")
	}
	if err := used.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer used.cmd.Process.Signal(syscall.SIGCONT) // before its kill, a cleanup
	set.master.kill()
	began := time.Now()
	for {
		start := time.Now()
		_, err := s.Allow(context.Background(), "k", lim)
		if d := time.Since(start); d > 50*time.Millisecond+500*time.Millisecond {
			t.Errorf("a decision took %v", d)
		}
		if err == nil && strings.HasPrefix(cliOut(set.replica, "role"), "master") {
			t.Logf("decisions on the promoted replica %v after kill -9 of the master, with the client's sentinel hung", time.Since(began).Round(10*time.Millisecond))
			return
		}
		if time.Since(began) > 15*time.Second {
			t.Fatalf("still failing 15 s after the kill: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tlsRedis is a redis-server (a sentinel with conf) that speaks TLS only,
// with the certificate of testnet.SelfSigned.
func tlsRedis(t *testing.T, certFile, keyFile string, conf string, extra ...string) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	r := &redisServer{t: t, port: freePort(t, 0)}
	tlsArgs := []string{"--port", "0", "--tls-port", fmt.Sprint(r.port), "--bind", "127.0.0.1", "--dir", t.TempDir(),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", certFile,
		"--tls-auth-clients", "no", "--tls-replication", "yes"}
	if conf != "" {
		path := filepath.Join(t.TempDir(), "sentinel.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		r.args = append([]string{path, "--sentinel"}, tlsArgs...)
	} else {
		r.args = append(append(tlsArgs, "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"), extra...)
	}
	r.cliArgs = []string{"--tls", "--cacert", certFile}
	r.start()
	t.Cleanup(r.kill)
	return r
}

// rediss:// with Sentinel: sentinels and master speak TLS, and their
// certificate is checked (against the URL's host, as go-redis does for
// the master too) with no skip_verify.
func TestRedisSentinelTLS(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli is not installed")
	}
	certFile, keyFile, pool := testnet.SelfSigned(t)
	master := tlsRedis(t, certFile, keyFile, "")
	sentinel := tlsRedis(t, certFile, keyFile, fmt.Sprintf("sentinel monitor mymaster 127.0.0.1 %d 1\n", master.port))
	o, err := redisOptions("rediss://localhost:"+fmt.Sprint(sentinel.port)+"?master_name=mymaster", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "localhost" || o.TLSConfig.InsecureSkipVerify {
		t.Fatalf("TLS config %+v", o.TLSConfig)
	}
	// Not trusted: refused (the certificate is checked).
	untrusted := o
	untrusted.TLSConfig = o.TLSConfig.Clone()
	uc := redis.NewUniversalClient(&untrusted)
	err = uc.Ping(context.Background()).Err()
	uc.Close()
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("an untrusted certificate: %v", err)
	}
	o.TLSConfig.RootCAs = pool // as SSL_CERT_FILE would
	c := redis.NewUniversalClient(&o)
	t.Cleanup(func() { c.Close() })
	s := NewRedisStore(c, "chatguard:rl:", 5*time.Second)
	t.Cleanup(func() { s.Close() })
	for i := 0; i < 3; i++ {
		if res, err := s.Allow(context.Background(), "tls", Limit{Rate: 2, Period: time.Hour}); err != nil || res.Allowed != (i < 2) {
			t.Fatalf("decision %d: %+v %v", i, res, err)
		}
	}
	if out := cliOut(master, "exists", "chatguard:rl:tls"); strings.TrimSpace(out) != "1" {
		t.Fatalf("the key is not on the master: %q", out)
	}
}

// firstDecision makes the store's first decision, retried for a few
// seconds: it asks a sentinel for the master, dials it and logs in, all
// within the test's 50 ms deadline, which a loaded machine can miss (seen
// under CI's parallel packages: "dial tcp …: i/o timeout"). What the tests
// measure comes after it.
func firstDecision(t *testing.T, s *RedisStore, key string, lim Limit) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := s.Allow(context.Background(), key, lim)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no first decision in 5 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
