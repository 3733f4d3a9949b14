package limiter

import (
	"context"
	"fmt"
	"net/url"
	"strings"

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
}

func newRedisLogger(log *logrus.Entry, redisURL string) redisLogger {
	l := redisLogger{log: log}
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
func (l redisLogger) Printf(_ context.Context, format string, args ...any) {
	msg := strings.TrimPrefix(fmt.Sprintf(format, args...), "redis: ")
	msg = redact.String(redact.ReplaceAll(msg, l.secrets))
	l.log.Warn("redis: " + msg)
}
