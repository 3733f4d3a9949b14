package limiter

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/redact"
)

// SetRedisLogger sends what go-redis logs by itself (a pool that cannot
// dial, a connection a hook refused) to log, at level warning, instead of
// the plain-text lines its default logger writes to stderr, which break a
// JSON log stream. The password of redisURL, if any, never appears in them.
//
// go-redis has one logger for the whole process (redis.SetLogger), not one
// per client: call this once, from main, for the client it builds.
func SetRedisLogger(log *logrus.Entry, redisURL string) {
	redis.SetLogger(newRedisLogger(log, redisURL))
}

// redisLogger is go-redis's Logging interface over logrus.
type redisLogger struct {
	log     *logrus.Entry
	secrets []string // filtered out of every line, besides redact.String's rules
	now     func() time.Time

	mu   sync.Mutex
	seen map[string]*repeated // by format: at most one line each redisLogEvery
}

type repeated struct {
	at     time.Time // the last line written
	hidden int       // lines not written since
}

// redisLogEvery is how often one kind of go-redis line is written: its
// pool retries a dead Redis every second or so, 3,600 warnings an hour
// saying the same (chatguard's own "still failing" line is once a minute).
const redisLogEvery = time.Minute

func newRedisLogger(log *logrus.Entry, redisURL string) *redisLogger {
	l := &redisLogger{log: log, now: time.Now, seen: map[string]*repeated{}}
	if u, err := url.Parse(redisURL); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			l.secrets = append(l.secrets, pw)
		}
	}
	// And as written in the URL, %-escapes and all, in case a line quotes it.
	if _, rest, ok := strings.Cut(redisURL, "://"); ok {
		authority, _, _ := strings.Cut(rest, "/")
		authority, _, _ = strings.Cut(authority, "?")
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			if _, pw, ok := strings.Cut(authority[:at], ":"); ok && pw != "" && (len(l.secrets) == 0 || pw != l.secrets[0]) {
				l.secrets = append(l.secrets, pw)
			}
		}
	}
	return l
}

// Printf logs one go-redis line. go-redis starts most of its own with
// "redis: "; every line gets exactly one.
// The same kind of line (its format) is written at most once each
// redisLogEvery, with the count of those left out since.
func (l *redisLogger) Printf(_ context.Context, format string, args ...any) {
	now := l.now()
	l.mu.Lock()
	r := l.seen[format]
	if r != nil && now.Sub(r.at) < redisLogEvery {
		r.hidden++
		l.mu.Unlock()
		return
	}
	hidden := 0
	if r == nil {
		if len(l.seen) >= 64 { // formats are go-redis's constants; bounded all the same
			clear(l.seen)
		}
		r = &repeated{}
		l.seen[format] = r
	}
	hidden, r.at, r.hidden = r.hidden, now, 0
	l.mu.Unlock()
	msg := strings.TrimPrefix(fmt.Sprintf(format, args...), "redis: ")
	msg = redact.String(redact.ReplaceAll(msg, l.secrets))
	e := l.log
	if hidden > 0 {
		e = e.WithField("repeatedSinceLast", hidden)
	}
	e.Warn("redis: " + msg)
}
