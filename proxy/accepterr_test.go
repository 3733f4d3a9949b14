package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
)

// emfileListener fails its first n accepts as a process out of file
// descriptors does, then closes.
type emfileListener struct {
	net.Listener
	n int
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.n > 0 {
		l.n--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: &acceptSyscallError{syscall.EMFILE}}
	}
	return nil, net.ErrClosed
}

// acceptSyscallError is os.SyscallError's shape ("accept4: too many open
// files"), a temporary error for net/http's retry.
type acceptSyscallError struct{ errno syscall.Errno }

func (e *acceptSyscallError) Error() string   { return "accept4: " + e.errno.Error() }
func (e *acceptSyscallError) Unwrap() error   { return e.errno }
func (e *acceptSyscallError) Temporary() bool { return e.errno.Temporary() }
func (e *acceptSyscallError) Timeout() bool   { return false }

// A listener out of file descriptors is an error line that says so, at
// most one per acceptErrorEvery with the count of the rest, and counted in
// chatguard_accept_errors_total: before, net/http's retries were debug
// lines, and a pod whose probes timed out said nothing of why (QA).
func TestAcceptErrorsAreLoggedAndCounted(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetLevel(logrus.InfoLevel)
	count := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	clock := time.Unix(1000, 0)
	w := &serverErrorLog{log: l, listener: "public", count: count, now: func() time.Time { return clock }}

	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	srv := &http.Server{ErrorLog: newLoggerFor(w)}
	if err := srv.Serve(&emfileListener{Listener: inner, n: 3}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve: %v", err)
	}
	w.Write([]byte("http: TLS handshake error from 1.2.3.4:5: EOF\n")) // not an accept error: debug
	clock = clock.Add(acceptErrorEvery)
	w.Write([]byte("http: Accept error: accept tcp [::]:8080: accept4: too many open files; retrying in 10ms\n"))

	if n := testutil.ToFloat64(count); n != 4 {
		t.Errorf("counted %v accept errors, want 4", n)
	}
	var lines []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("line %q: %v", s, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2 (the first error, then the next after %v):\n%s", len(lines), acceptErrorEvery, buf.String())
	}
	for i, m := range lines {
		if m["level"] != "error" || !strings.HasPrefix(m["msg"].(string), "a listener cannot accept connections: out of file descriptors") ||
			m["listener"] != "public" || !strings.HasSuffix(m["error"].(string), "accept4: too many open files") {
			t.Errorf("line %d: %v", i, m)
		}
	}
	if lines[0]["moreSinceLastLine"] != nil || lines[1]["moreSinceLastLine"] != 2.0 {
		t.Errorf("moreSinceLastLine %v then %v, want none then 2", lines[0]["moreSinceLastLine"], lines[1]["moreSinceLastLine"])
	}
}
