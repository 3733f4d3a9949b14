package limiter

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
// every chatguard replica.
type RedisStore struct {
	c       redis.UniversalClient
	prefix  string
	timeout time.Duration
}

// NewRedisStore uses c; every call gets timeout (0 = 50 ms) and keys start with prefix.
func NewRedisStore(c redis.UniversalClient, prefix string, timeout time.Duration) *RedisStore {
	if timeout <= 0 {
		timeout = 50 * time.Millisecond
	}
	return &RedisStore{c: c, prefix: prefix, timeout: timeout}
}

// Allow decides one request in one script call.
func (r *RedisStore) Allow(ctx context.Context, key string, l Limit) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	interval := l.interval().Microseconds()
	if interval < 1 {
		interval = 1
	}
	out, err := gcraScript.Run(ctx, r.c, []string{r.prefix + key}, interval, interval*int64(l.burst())).Int64Slice()
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
		if err != nil {
			return nil, fmt.Errorf("limiter: REDIS_URL: %w", err)
		}
		o = redis.UniversalOptions{
			Addrs: copt.Addrs, Username: copt.Username, Password: copt.Password,
			TLSConfig: copt.TLSConfig, ClientName: "chatguard", IsClusterMode: true,
		}
	} else {
		opt, err := redis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("limiter: REDIS_URL: %w", err)
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
