package limiter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// gcraScript is one decision in one round trip. Redis's TIME is the clock,
// so that replicas of chatguard never disagree about "now"; times are
// microseconds (exact in Lua's doubles for centuries). One key per call, so
// it runs unchanged on Redis Cluster. Returns {allowed, remaining,
// retry_after_us, reset_after_us}.
var gcraScript = redis.NewScript(`
local interval = tonumber(ARGV[1])
local burst_offset = tonumber(ARGV[2])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call("GET", KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local diff = now - (new_tat - burst_offset)
if diff < 0 then
  return {0, 0, -diff, tat - now}
end
local ttl = new_tat - now
redis.call("SET", KEYS[1], string.format("%d", new_tat), "PX", math.ceil(ttl / 1000))
return {1, math.floor(diff / interval), 0, ttl}
`)

// RedisStore keeps TATs in Redis (a single node or a cluster), shared by
// every chatguard replica. Concurrent decisions are pipelined: each of a few
// flusher goroutines takes every decision waiting and sends them in one
// round trip, so a busy proxy pays one round trip per batch, not per
// request; an idle one sends each decision at once. Close stops the flushers.
type RedisStore struct {
	c       redis.UniversalClient
	prefix  string
	timeout time.Duration

	calls     chan *redisCall
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type redisCall struct {
	key   string
	limit Limit
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
	r := &RedisStore{c: c, prefix: prefix, timeout: timeout, calls: make(chan *redisCall, 1024), stop: make(chan struct{})}
	for i := 0; i < redisFlushers; i++ {
		r.wg.Add(1)
		go r.flush()
	}
	return r
}

// Allow decides one request; it waits at most the store's timeout.
func (r *RedisStore) Allow(ctx context.Context, key string, l Limit) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &redisCall{key: key, limit: l, done: make(chan struct{})}
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

// send runs one pipeline of script calls and hands each caller its answer.
// Calls that met NOSCRIPT (a node that restarted or failed over, or the
// first use) are sent again once the script is loaded — only those: on a
// cluster the others already counted on their own nodes.
func (r *RedisStore) send(batch []*redisCall) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	cmds := make([]*redis.Cmd, len(batch))
	r.pipeline(ctx, batch, cmds, func(int) bool { return true })
	retry := func(i int) bool { return cmds[i].Err() != nil && redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") }
	for i := range batch {
		if retry(i) {
			if gcraScript.Load(ctx, r.c).Err() == nil {
				r.pipeline(ctx, batch, cmds, retry)
			}
			break
		}
	}
	for i, c := range batch {
		c.res, c.err = decode(cmds[i], c.limit)
		close(c.done)
	}
}

// pipeline sends the calls of batch that pick selects, filling cmds.
func (r *RedisStore) pipeline(ctx context.Context, batch []*redisCall, cmds []*redis.Cmd, pick func(int) bool) {
	_, _ = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range batch {
			if !pick(i) {
				continue
			}
			interval := max(c.limit.interval().Microseconds(), 1)
			cmds[i] = gcraScript.EvalSha(ctx, p, []string{r.prefix + c.key}, interval, interval*int64(c.limit.burst()))
		}
		return nil
	}) // each command carries its own error
}

func decode(cmd *redis.Cmd, l Limit) (Result, error) {
	out, err := cmd.Int64Slice()
	if err != nil {
		return Result{}, fmt.Errorf("limiter: redis: %w", err)
	}
	if len(out) != 4 {
		return Result{}, errors.New("limiter: redis: unexpected script reply")
	}
	return Result{
		Allowed:    out[0] == 1,
		Limit:      l,
		Remaining:  int(out[1]),
		RetryAfter: time.Duration(out[2]) * time.Microsecond,
		ResetAfter: time.Duration(out[3]) * time.Microsecond,
	}, nil
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
	return r.c.Ping(ctx).Err()
}

// NewRedisClient parses REDIS_URL: redis://[user:password@]host:port[/db]
// or rediss:// for one node; a cluster lists more nodes with addr
// parameters (redis://h1:7000?addr=h2:7001&addr=h3:7002), as go-redis's
// ParseClusterURL reads them.
// Every call is bounded by timeout; the client never retries (the failover
// store decides what a failure means).
func NewRedisClient(url string, timeout time.Duration) (redis.UniversalClient, error) {
	var o redis.UniversalOptions
	if strings.Contains(url, "addr=") {
		copt, err := redis.ParseClusterURL(url)
		if err != nil { // the error would quote the URL, password and all
			return nil, errors.New("limiter: REDIS_URL is not a valid Redis cluster URL")
		}
		o = redis.UniversalOptions{
			Addrs: copt.Addrs, Username: copt.Username, Password: copt.Password,
			TLSConfig: copt.TLSConfig, ClientName: "chatguard", IsClusterMode: true,
		}
	} else {
		opt, err := redis.ParseURL(url)
		if err != nil { // the error would quote the URL, password and all
			return nil, errors.New("limiter: REDIS_URL is not a valid Redis URL")
		}
		o = redis.UniversalOptions{
			Addrs: []string{opt.Addr}, DB: opt.DB, Username: opt.Username, Password: opt.Password,
			TLSConfig: opt.TLSConfig, ClientName: "chatguard",
		}
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
	o.MaxRetries = -1
	o.ContextTimeoutEnabled = true
	return redis.NewUniversalClient(&o), nil
}
