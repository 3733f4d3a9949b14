// Command upstream is the stand-in backend of the WebSocket relay benchmark
// (bench/ws/run.sh). It serves, on one listener:
//
//   - /ws/echo: a plain WebSocket that sends every message back as it came;
//   - /socket.io/?EIO=4&transport=websocket: the least of Engine.IO v4 and
//     Socket.IO v5 a client needs (open packet, CONNECT, pings, events with
//     and without acks; see eio.go);
//   - GET /healthz: 200, for the script's readiness check.
//
// Each connection costs one goroutine (its reader); the Engine.IO pings run
// on a timer, not a goroutine of their own, the way Node schedules them. It
// does as little as possible, so that the benchmark measures the proxy.
//
// SIGUSR2 runs a garbage collection and returns free memory to the OS (as
// chatguard does), so that the script can read its memory per connection.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3000", "listen address (host:port)")
	pingInterval := flag.Duration("ping-interval", 25*time.Second, "Engine.IO pingInterval")
	pingTimeout := flag.Duration("ping-timeout", 20*time.Second, "Engine.IO pingTimeout: a client that answers no ping within it is dropped")
	flag.Parse()
	if err := run(*addr, *pingInterval, *pingTimeout); err != nil {
		fmt.Fprintf(os.Stderr, "upstream: %v\n", err)
		os.Exit(1)
	}
}

func run(addr string, pingInterval, pingTimeout time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	eio := &engineIO{pingInterval: pingInterval, pingTimeout: pingTimeout}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/ws/echo", echo)
	mux.Handle("/socket.io/", eio)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(os.Stderr, "upstream: ", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(os.Stderr, "upstream: listening on %s\n", ln.Addr())

	for {
		select {
		case err := <-errc:
			return fmt.Errorf("serve: %w", err)
		case <-usr2:
			debug.FreeOSMemory()
		case <-ctx.Done():
			// Hijacked connections are not the server's any more: they
			// end with the process.
			_ = srv.Close()
			if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve: %w", err)
			}
			return nil
		}
	}
}

// readLimit is Socket.IO's default maxHttpBufferSize, and the open packet's maxPayload.
const readLimit = 1_000_000

var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// echo sends every message back, text or binary, until the client closes.
func echo(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept answered the bad handshake
	}
	defer c.CloseNow()
	c.SetReadLimit(readLimit)
	for {
		typ, rd, err := c.Reader(context.Background())
		if err != nil {
			closeLike(c, err)
			return
		}
		// A buffer only while a message is in hand: an idle connection holds none.
		buf := buffers.Get().(*bytes.Buffer)
		buf.Reset()
		_, err = buf.ReadFrom(rd)
		if err == nil {
			err = c.Write(context.Background(), typ, buf.Bytes())
		}
		putBuffer(buf)
		if err != nil {
			closeLike(c, err)
			return
		}
	}
}

// putBuffer returns buf to the pool unless one huge message grew it.
func putBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= 64<<10 {
		buffers.Put(buf)
	}
}

// closeLike answers a peer's close with the same code (a normal close when
// it gave none); a dropped connection is just dropped.
func closeLike(c *websocket.Conn, err error) {
	switch code := websocket.CloseStatus(err); code {
	case -1:
		_ = c.CloseNow()
	case websocket.StatusNoStatusRcvd:
		_ = c.Close(websocket.StatusNormalClosure, "")
	default:
		_ = c.Close(code, "")
	}
}
