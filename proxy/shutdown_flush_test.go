package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// A response whose handler finished while its client paused reading (a
// mobile link stalling for 1 s) is still delivered when a shutdown starts:
// net/http flushes its last bytes as the socket drains, within what is left
// of server.shutdown_timeout (5 s here), not within a fixed 100 ms. The
// sweep over the first part's size finds the sizes where the last 1000
// bytes wait in net/http's buffer for room in a full socket.
func TestShutdownDeliversFinishedResponseToAPausedClient(t *testing.T) {
	t.Parallel()
	var cut atomic.Int32
	var wg sync.WaitGroup
	for first := 12 << 10; first <= 52<<10; first += 2 << 10 {
		wg.Add(1)
		go func() { // all at once: each mostly waits (t.Parallel would run two at a time)
			defer wg.Done()
			if shutdownWhilePaused(t, first) {
				cut.Add(1)
			}
		}()
	}
	wg.Wait()
	if cut.Load() > 0 {
		t.Errorf("%d responses whose handler had finished were cut by the shutdown", cut.Load())
	}
}

// shutdownWhilePaused reports whether the response of first+1000 bytes was
// cut. It runs on its own goroutine: failures are t.Error, never t.Fatal.
func shutdownWhilePaused(t *testing.T, first int) (truncated bool) {
	size := first + 1000
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(make([]byte, first))
		w.(http.Flusher).Flush()
		time.Sleep(100 * time.Millisecond)
		_, _ = w.Write(make([]byte, 1000))
	})
	srv, logs, lg, err := newTestServer(up.URL, nil, nil) // shutdown timeout 5 s
	if err != nil {
		t.Error(err)
		return false
	}
	defer lg.Close()
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Error(err)
		return false
	}
	adm, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pub.Close()
		t.Error(err)
		return false
	}
	raw, _ := pub.(*net.TCPListener).SyscallConn()
	_ = raw.Control(func(fd uintptr) { // small send buffers, inherited by accepted sockets
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pub, adm) }()

	conn, err := net.Dial("tcp", pub.Addr().String())
	if err != nil {
		t.Error(err)
		return false
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(1)
	fmt.Fprintf(conn, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	stopped := make(chan struct{})
	go func() { // SIGTERM once the handler has finished (its access line is out)
		defer close(stopped)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !strings.Contains(logs.String(), `"path":"/big"`); {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		<-done
	}()
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil)
	if err != nil {
		t.Error(err)
		return false
	}
	time.Sleep(time.Second) // the client's link stalls
	n, err := io.Copy(io.Discard, resp.Body)
	<-stopped
	if err != nil || n != int64(size) {
		t.Logf("first part %d: the client got %d of %d bytes: %v", first, n, size, err)
		return true
	}
	return false
}
