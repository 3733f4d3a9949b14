package limiter

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A cluster client retries a call that found no answer at once: with
// go-redis's pauses (10 ms, doubling) between its three retries, a dead
// master's refused dials outlasted the deadline, and the caller was told
// "context deadline exceeded" instead of "connection refused" (QA).
func TestRedisClusterClientRetriesWithoutPause(t *testing.T) {
	t.Parallel()
	c, err := NewRedisClient("redis://127.0.0.1:1?addr=127.0.0.1:2", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o := c.(*redis.ClusterClient).Options()
	if o.MinRetryBackoff != 0 || o.MaxRetryBackoff != 0 {
		t.Errorf("retry pauses %v to %v, want none", o.MinRetryBackoff, o.MaxRetryBackoff)
	}
}
