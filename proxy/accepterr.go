package proxy

import (
	"log"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/logging"
)

// acceptErrorEvery is the least time between two log lines of a listener's
// accept errors: net/http retries an accept every 5 ms to 1 s while they
// last, and each retry is one more error.
const acceptErrorEvery = 10 * time.Second

// serverErrorLog is a listener's net/http error log. An accept error (out of
// file descriptors, above all) is an error line, at most one per
// acceptErrorEvery with the count of those it stands for, and is counted:
// before, it was a debug line, and a pod whose probes timed out for want
// of descriptors said nothing of why (QA; nginx logs accept4() failures at
// crit). What else net/http says there (a client's bad TLS handshake, a
// panic it recovered) stays at debug.
type serverErrorLog struct {
	log      *logrus.Logger
	listener string
	count    prometheus.Counter
	now      func() time.Time

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func newServerErrorLog(l *logrus.Logger, listener string, count prometheus.Counter) *log.Logger {
	return newLoggerFor(&serverErrorLog{log: l, listener: listener, count: count, now: time.Now})
}

func newLoggerFor(w *serverErrorLog) *log.Logger { return log.New(w, "", 0) }

func (w *serverErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	text, ok := strings.CutPrefix(msg, "http: Accept error: ")
	if !ok {
		w.log.WithField(logging.FieldCategory, logging.CategorySystem).Debug(msg)
		return len(p), nil
	}
	w.count.Inc()
	now := w.now()
	w.mu.Lock()
	if !w.last.IsZero() && now.Sub(w.last) < acceptErrorEvery {
		w.suppressed++
		w.mu.Unlock()
		return len(p), nil
	}
	more := w.suppressed
	w.last, w.suppressed = now, 0
	w.mu.Unlock()
	if i := strings.LastIndex(text, "; retrying in "); i >= 0 {
		text = text[:i]
	}
	f := logrus.Fields{logging.FieldCategory: logging.CategorySystem, "listener": w.listener, "error": text}
	if more > 0 {
		f["moreSinceLastLine"] = more
	}
	hint := ""
	if strings.Contains(text, "too many open files") {
		hint = ": out of file descriptors (raise the process's nofile limit, or find what holds them: chatguard_http_connections, chatguard_upgraded_connections)"
	}
	w.log.WithFields(f).Error("a listener cannot accept connections" + hint)
	return len(p), nil
}
