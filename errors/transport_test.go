package errors_test

import (
	"context"
	"crypto/tls"
	stderrors "errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "github.com/chatguard/chatguard/errors"
)

// closedAddr returns an address on 127.0.0.1 that nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// refusedDial is what net.Dial returns for a closed port.
func refusedDial(t *testing.T) error {
	t.Helper()
	c, err := net.Dial("tcp", closedAddr(t))
	if err == nil {
		c.Close()
		t.Skip("something listens on the closed port")
	}
	return err
}

// refusedHTTP is what http.Client (as ReverseProxy's transport) returns for a closed port.
func refusedHTTP(t *testing.T) error {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + closedAddr(t) + "/api/messages")
	if err == nil {
		resp.Body.Close()
		t.Skip("something listens on the closed port")
	}
	return err
}

// readTimeout is a real read deadline expiring on a TCP connection.
func readTimeout(t *testing.T) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if sc, ok := <-accepted; ok {
		defer sc.Close()
	}
	if err := c.SetReadDeadline(time.Unix(1, 0)); err != nil { // already past: no waiting
		t.Fatal(err)
	}
	_, err = c.Read(make([]byte, 1))
	if err == nil {
		t.Fatal("read with a past deadline succeeded")
	}
	return err
}

// connReset makes the peer abort the connection (SO_LINGER 0 sends RST) and
// returns what the next read sees.
func connReset(t *testing.T) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 16)
		_, _ = c.Read(buf) // wait for the request so that the client is mid-exchange
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	<-done
	_, err = c.Read(make([]byte, 1))
	if err == nil {
		t.Fatal("read after RST succeeded")
	}
	return err
}

// serverHangsUp is what an HTTP client sees when the upstream closes the
// connection without answering (a crashed Node process).
func serverHangsUp(t *testing.T) error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x")) // POST: not retried
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("request to a hanging-up server succeeded")
	}
	return err
}

// canceledRequest is a request whose client went away.
func canceledRequest(t *testing.T) error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("canceled request succeeded")
	}
	return err
}

// expiredRequest is a request whose deadline passed before it was sent.
func expiredRequest(t *testing.T) error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(1, 0))
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("expired request succeeded")
	}
	return err
}

// bodyTooLarge is what reading a request body through http.MaxBytesReader
// returns once the limit is passed, wrapped as the proxy wraps it.
func bodyTooLarge(t *testing.T) error {
	t.Helper()
	rc := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(strings.Repeat("x", 100))), 10)
	_, err := io.ReadAll(rc)
	var mbe *http.MaxBytesError
	if !stderrors.As(err, &mbe) {
		t.Fatalf("MaxBytesReader returned %v", err)
	}
	return fmt.Errorf("proxy: copy request body: %w", err)
}

// dnsFailure is a real resolver failure, produced without touching the network.
func dnsFailure(t *testing.T) error {
	t.Helper()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		return nil, stderrors.New("no DNS server in tests")
	}}
	_, err := r.LookupHost(context.Background(), "upstream.chatguard-test.example")
	var dnsErr *net.DNSError
	if !stderrors.As(err, &dnsErr) {
		t.Fatalf("LookupHost returned %T %v, want *net.DNSError", err, err)
	}
	return &net.OpError{Op: "dial", Net: "tcp", Err: err}
}

// timeoutError is a net.Error that only says it timed out.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// plainNetError is a net.Error that did not time out.
type plainNetError struct{}

func (plainNetError) Error() string   { return "network is down" }
func (plainNetError) Timeout() bool   { return false }
func (plainNetError) Temporary() bool { return false }

func TestFromProxyError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    func(t *testing.T) error
		code   apierrors.Code
		status int
		reason string
	}{
		{"dial closed port", refusedDial, apierrors.CodeUpstreamUnavailable, 502, "refused"},
		{"http client to closed port", refusedHTTP, apierrors.CodeUpstreamUnavailable, 502, "refused"},
		{"bare ECONNREFUSED", func(*testing.T) error { return syscall.ECONNREFUSED }, apierrors.CodeUpstreamUnavailable, 502, "refused"},
		{"context.DeadlineExceeded", func(*testing.T) error { return context.DeadlineExceeded }, apierrors.CodeUpstreamTimeout, 504, "timeout"},
		{"wrapped DeadlineExceeded", func(*testing.T) error { return fmt.Errorf("upstream: %w", context.DeadlineExceeded) }, apierrors.CodeUpstreamTimeout, 504, "timeout"},
		{"request past its deadline", expiredRequest, apierrors.CodeUpstreamTimeout, 504, "timeout"},
		{"read deadline on a TCP conn", readTimeout, apierrors.CodeUpstreamTimeout, 504, "timeout"},
		{"os.ErrDeadlineExceeded", func(*testing.T) error { return os.ErrDeadlineExceeded }, apierrors.CodeUpstreamTimeout, 504, "timeout"},
		{"net.Error timeout", func(*testing.T) error {
			return &net.OpError{Op: "read", Net: "tcp", Err: timeoutError{}}
		}, apierrors.CodeUpstreamTimeout, 504, "timeout"},
		{"net.Error without timeout", func(*testing.T) error { return plainNetError{} }, apierrors.CodeUpstreamUnavailable, 502, "other"},
		{"MaxBytesError wrapped with %w", bodyTooLarge, apierrors.CodePayloadTooLarge, 413, "body_too_large"},
		{"context.Canceled", func(*testing.T) error { return context.Canceled }, apierrors.CodeServiceUnavailable, 499, "client_closed"},
		{"canceled client request", canceledRequest, apierrors.CodeServiceUnavailable, 499, "client_closed"},
		{"io.ErrUnexpectedEOF", func(*testing.T) error { return fmt.Errorf("read response: %w", io.ErrUnexpectedEOF) }, apierrors.CodeUpstreamUnavailable, 502, "eof"},
		{"io.EOF", func(*testing.T) error { return io.EOF }, apierrors.CodeUpstreamUnavailable, 502, "eof"},
		{"upstream hangs up", serverHangsUp, apierrors.CodeUpstreamUnavailable, 502, "eof"},
		{"ECONNRESET from a real RST", connReset, apierrors.CodeUpstreamUnavailable, 502, "reset"},
		{"ECONNRESET wrapped as net does", func(*testing.T) error {
			return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
		}, apierrors.CodeUpstreamUnavailable, 502, "reset"},
		{"EPIPE", func(*testing.T) error {
			return &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}
		}, apierrors.CodeUpstreamUnavailable, 502, "reset"},
		{"DNS failure", dnsFailure, apierrors.CodeUpstreamUnavailable, 502, "dns"},
		{"DNS not found", func(*testing.T) error {
			return &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "chat-backend", IsNotFound: true}}
		}, apierrors.CodeUpstreamUnavailable, 502, "dns"},
		// A resolver timeout is reported as a DNS failure, not as a slow upstream.
		{"DNS timeout", func(*testing.T) error {
			return &net.DNSError{Err: "i/o timeout", Name: "chat-backend", IsTimeout: true}
		}, apierrors.CodeUpstreamUnavailable, 502, "dns"},
		// net/http's own chunked reader on a body it cannot frame (TCP QA: "other").
		{"malformed chunked body", func(*testing.T) error { return chunkedReadError("zz\r\n") }, apierrors.CodeUpstreamUnavailable, 502, "bad_response"},
		{"chunk length too large", func(*testing.T) error { return chunkedReadError("fffffffffffffffff\r\n") }, apierrors.CodeUpstreamUnavailable, 502, "bad_response"},
		{"chunked body cut short", func(*testing.T) error { return chunkedReadError("5\r\nab") }, apierrors.CodeUpstreamUnavailable, 502, "eof"},
		{"untrusted certificate", untrustedCert, apierrors.CodeUpstreamUnavailable, 502, "tls"},
		{"plain HTTP behind https://", plainBehindTLS, apierrors.CodeUpstreamUnavailable, 502, "tls"},
		{"the upstream's TLS alert (a client certificate required)", tlsAlert, apierrors.CodeUpstreamUnavailable, 502, "tls"},
		{"unknown error", func(*testing.T) error { return stderrors.New("proxy: something odd") }, apierrors.CodeUpstreamUnavailable, 502, "other"},
		{"nil", func(*testing.T) error { return nil }, apierrors.CodeUpstreamUnavailable, 502, "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := tt.err(t)
			e, reason := apierrors.FromProxyError(in)
			if reason != tt.reason {
				t.Errorf("FromProxyError(%T %v) reason = %q, want %q", in, in, reason, tt.reason)
			}
			if e == nil {
				t.Fatal("nil *Error")
			}
			if e.Code != tt.code || e.HTTPStatus() != tt.status {
				t.Errorf("FromProxyError(%v) = %s %d, want %s %d", in, e.Code, e.HTTPStatus(), tt.code, tt.status)
			}
			if e.Message == "" {
				t.Error("empty message")
			}
			// The proxy's own failure text (addresses, syscalls) never reaches the client.
			if in != nil && e.Message == in.Error() {
				t.Errorf("message is the Go error text %q", e.Message)
			}
			if tt.reason != "client_closed" && e.Message != e.Code.Message() {
				t.Errorf("message %q, want the catalogue's %q", e.Message, e.Code.Message())
			}
		})
	}
}

func TestStatusClientClosed(t *testing.T) {
	t.Parallel()
	if apierrors.StatusClientClosed != 499 {
		t.Fatalf("StatusClientClosed = %d, want 499 (nginx)", apierrors.StatusClientClosed)
	}
}

// untrustedCert is a real handshake with a server whose certificate the
// client does not trust (httptest's own CA).
func untrustedCert(t *testing.T) error {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // its side of the refused handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, err := (&http.Client{Transport: &http.Transport{}}).Get(srv.URL)
	return err
}

// plainBehindTLS is an https:// request, through net/http's Transport as
// chatguard sends it, to a server that speaks plain HTTP.
func plainBehindTLS(t *testing.T) error {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	_, err := (&http.Client{Transport: &http.Transport{}}).Get("https://" + strings.TrimPrefix(srv.URL, "http://"))
	return err
}

// tlsAlert is a handshake the upstream refuses with an alert: it wants a
// client certificate chatguard does not have.
func tlsAlert(t *testing.T) error {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert, MaxVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}).Get(srv.URL)
	return err
}

// chunkedReadError is what net/http's chunked reader returns on body.
func chunkedReadError(body string) error {
	_, err := io.ReadAll(httputil.NewChunkedReader(strings.NewReader(body)))
	return err
}
