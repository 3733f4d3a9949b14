package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatguard/chatguard/internal/buildinfo"
	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/metrics"
	"github.com/chatguard/chatguard/internal/testnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines decodes every JSON log line.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// harness is a running Server on loopback listeners.
type harness struct {
	t      *testing.T
	srv    *Server
	url    string // public
	admin  string // admin
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
	client *http.Client
}

// start runs a Server in front of upstream (a URL) with cfg adjusted by mutate.
func start(t *testing.T, upstream string, mutate func(*config.Config)) *harness {
	t.Helper()
	return startWith(t, upstream, mutate, nil)
}

// startWith is start with an optional transport in place of the real one.
func startWith(t *testing.T, upstream string, mutate func(*config.Config), rt http.RoundTripper) *harness {
	t.Helper()
	return startOpts(t, upstream, mutate, func(o *Options) { o.Transport = rt })
}

// startOpts is start with the Options adjusted by opts (after Config, Logger
// and Registry are set).
func startOpts(t *testing.T, upstream string, mutate func(*config.Config), opts func(*Options)) *harness {
	t.Helper()
	srv, logs, lg, err := newTestServer(upstream, mutate, opts)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adm, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{
		t: t, srv: srv, logs: logs, cancel: cancel, done: make(chan error, 1),
		url:    "http://" + pub.Addr().String(),
		admin:  "http://" + adm.Addr().String(),
		client: &http.Client{Transport: &http.Transport{DisableCompression: true}},
	}
	go func() { h.done <- srv.Serve(ctx, pub, adm) }()
	t.Cleanup(func() {
		h.stop()
		h.client.CloseIdleConnections()
		_ = lg.Close()
	})
	return h
}

// newTestServer is a Server in front of upstream with the test defaults
// (no drain delay, a 5 s shutdown timeout), cfg adjusted by mutate and the
// Options by opts; logs receives its log. It fails with an error, never
// with t.Fatal, so that tests may build servers off their own goroutine.
func newTestServer(upstream string, mutate func(*config.Config), opts func(*Options)) (*Server, *syncBuffer, *logging.Logger, error) {
	cfg := config.Defaults()
	cfg.Upstream = upstream
	cfg.Server.DrainDelay = 0
	cfg.Server.ShutdownTimeout = 5 * time.Second
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:1"
	if mutate != nil {
		mutate(cfg)
	}
	if probs := config.Validate(cfg); len(probs) > 0 {
		return nil, nil, nil, fmt.Errorf("test config invalid: %v", probs)
	}
	logs := &syncBuffer{}
	reg := metrics.NewRegistry(buildinfo.Get())
	lg, err := logging.New(logging.Options{Level: cfg.Log.Level, Out: logs, Registerer: reg})
	if err != nil {
		return nil, nil, nil, err
	}
	o := Options{Config: cfg, Logger: lg.Logger, Registry: reg}
	if opts != nil {
		opts(&o)
	}
	srv, err := New(o)
	if err != nil {
		_ = lg.Close()
		return nil, nil, nil, err
	}
	return srv, logs, lg, nil
}

// stop shuts the server down and waits for Serve to return.
func (h *harness) stop() error {
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err // keep it for a second stop
		return err
	case <-time.After(15 * time.Second):
		h.t.Fatal("Serve did not return after cancel")
		return nil
	}
}

func (h *harness) do(req *http.Request) (*http.Response, []byte) {
	h.t.Helper()
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("read body: %v", err)
	}
	return resp, body
}

func (h *harness) get(path string, header ...string) (*http.Response, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.url+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return h.do(req)
}

// envelope decodes an error envelope and checks its invariants: success
// false, a timestamp, and the requestId equal to the response header.
func envelope(t *testing.T, resp *http.Response, body []byte) map[string]any {
	t.Helper()
	var env struct {
		Success *bool `json:"success"`
		Error   struct {
			Code      string         `json:"code"`
			Message   string         `json:"message"`
			Details   map[string]any `json:"details"`
			Timestamp string         `json:"timestamp"`
		} `json:"error"`
		RequestID string `json:"requestId"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("body is not an envelope: %q: %v", body, err)
	}
	if env.Success == nil || *env.Success {
		t.Fatalf("success must be false: %s", body)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000Z", env.Error.Timestamp); err != nil {
		t.Fatalf("timestamp %q: %v", env.Error.Timestamp, err)
	}
	if id := resp.Header.Get("X-Request-ID"); env.RequestID == "" || env.RequestID != id {
		t.Fatalf("requestId %q != X-Request-ID header %q", env.RequestID, id)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("Content-Type = %q", ct)
	}
	return map[string]any{"code": env.Error.Code, "message": env.Error.Message, "details": env.Error.Details}
}

// upstream starts an httptest server; it is closed at cleanup.
func upstream(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// closedPort returns a loopback address that refuses connections for the
// whole test (see testnet.RefusedAddr: a freed port could be taken by
// another test's listener).
func closedPort(t *testing.T) string {
	t.Helper()
	return testnet.RefusedAddr(t)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// withGot1xx makes a client request report informational responses.
func withGot1xx(ctx context.Context, f func(code int)) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error { f(code); return nil },
	})
}
