package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// maxSpread is how many distinct source addresses -spread hands out.
const maxSpread = 254 * 256

// sourceAddr is client i's loopback address under -spread: 127.1.x.y.
func sourceAddr(i int) net.IP {
	return net.IPv4(127, 1, byte(i/254), byte(i%254+1))
}

type localAddrKey struct{}

// newHTTPClient dials each handshake from the address in its context, if any.
func newHTTPClient() *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: 10 * time.Second}
			if ip, ok := ctx.Value(localAddrKey{}).(net.IP); ok {
				d.LocalAddr = &net.TCPAddr{IP: ip}
			}
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives:  true, // an upgraded connection is never reused anyway
		DisableCompression: true,
	}
	return &http.Client{Transport: tr}
}

// conn is one client's WebSocket and what it needs to talk over it.
type conn struct {
	c    *websocket.Conn
	kind string
	wmu  sync.Mutex    // pings are answered from the reader while the sender writes
	buf  *bytes.Buffer // nil: every read allocates its message (idle clients hold no buffer)
}

// dial opens client i's WebSocket and, for sio, completes the Engine.IO open
// and the Socket.IO CONNECT.
func dial(ctx context.Context, hc *http.Client, o options, i int) (*conn, error) {
	u := o.url + "/ws/echo"
	if o.kind == "sio" {
		u = o.url + "/socket.io/?EIO=4&transport=websocket"
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if o.spread {
		ctx = context.WithValue(ctx, localAddrKey{}, sourceAddr(i))
	}
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(1 << 20)
	cn := &conn{c: c, kind: o.kind}
	if o.kind == "sio" {
		if err := cn.sioConnect(ctx); err != nil {
			_ = c.CloseNow()
			return nil, err
		}
	}
	if o.mode == "idle" && o.kind == "ws" {
		// One message each way, so that whatever a relay allocates on
		// first use is counted, as the Socket.IO handshake does for sio.
		if err := cn.hello(ctx, o); err != nil {
			_ = c.CloseNow()
			return nil, err
		}
	}
	return cn, nil
}

func (cn *conn) sioConnect(ctx context.Context) error {
	_, open, err := cn.c.Read(ctx)
	if err != nil {
		return fmt.Errorf("engine.io open: %w", err)
	}
	if len(open) == 0 || open[0] != '0' {
		return fmt.Errorf("engine.io open: got %.40q", open)
	}
	if err := cn.write(ctx, []byte("40")); err != nil {
		return fmt.Errorf("socket.io connect: %w", err)
	}
	for {
		msg, err := cn.read(ctx)
		if err != nil {
			return fmt.Errorf("socket.io connect: %w", err)
		}
		switch {
		case bytes.HasPrefix(msg, []byte("40")):
			return nil
		case bytes.HasPrefix(msg, []byte("44")):
			return fmt.Errorf("socket.io connect refused: %.200s", msg)
		}
	}
}

func (cn *conn) hello(ctx context.Context, o options) error {
	msg, _ := request(o, 0)
	if err := cn.write(ctx, msg); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	got, err := cn.read(ctx)
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("hello: the echo differs: %.40q", got)
	}
	return nil
}

func (cn *conn) write(ctx context.Context, msg []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return cn.c.Write(ctx, websocket.MessageText, msg)
}

// read returns the next message; for sio, Engine.IO pings are answered and
// skipped.
func (cn *conn) read(ctx context.Context) ([]byte, error) {
	for {
		msg, err := cn.next(ctx)
		if err != nil {
			return nil, err
		}
		if cn.kind == "sio" && len(msg) == 1 && msg[0] == '2' {
			if err := cn.write(ctx, []byte("3")); err != nil {
				return nil, err
			}
			continue
		}
		return msg, nil
	}
}

// next reads one message, into cn.buf when there is one (the message is
// then valid until the next read).
func (cn *conn) next(ctx context.Context) ([]byte, error) {
	if cn.buf == nil {
		_, msg, err := cn.c.Read(ctx)
		return msg, err
	}
	_, r, err := cn.c.Reader(ctx)
	if err != nil {
		return nil, err
	}
	cn.buf.Reset()
	if _, err := cn.buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return cn.buf.Bytes(), nil
}

// request is one message of -size bytes and what its answer starts with.
// ws: the echo is the message itself. sio: `42<id>["event",{…}]`, answered
// `43<id>[…]`.
func request(o options, seq uint64) (msg, want []byte) {
	if o.kind == "ws" {
		head := `{"type":"message","seq":` + strconv.FormatUint(seq, 10) + `,"text":"`
		return pad(head, `"}`, o.size), nil
	}
	id := strconv.FormatUint(seq, 10)
	head := `42` + id + `["` + o.event + `",{"conversationId":"conv_42","text":"`
	return pad(head, `"}]`, o.size), []byte("43" + id + "[")
}

func pad(head, tail string, size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, head...)
	for len(b) < size-len(tail) {
		b = append(b, 'x')
	}
	return append(b, tail...)
}

// matches reports whether got answers msg (want from request).
func matches(o options, msg, want, got []byte) bool {
	if o.kind == "ws" {
		return bytes.Equal(msg, got)
	}
	return bytes.HasPrefix(got, want)
}

// connectAll opens o.clients connections, o.concurrency handshakes at a time.
// It returns the ones that opened and the first error of those that did not.
func connectAll(ctx context.Context, o options) ([]*conn, int, error) {
	hc := newHTTPClient()
	conns := make([]*conn, o.clients)
	var (
		mu       sync.Mutex
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan int)
	for w := 0; w < min(o.concurrency, o.clients); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				cn, err := dial(ctx, hc, o, i)
				if err != nil {
					mu.Lock()
					failed++
					if firstErr == nil {
						firstErr = fmt.Errorf("client %d: %w", i, err)
					}
					mu.Unlock()
					continue
				}
				conns[i] = cn
			}
		}()
	}
	for i := 0; i < o.clients && ctx.Err() == nil; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	out := conns[:0]
	for _, cn := range conns {
		if cn != nil {
			out = append(out, cn)
		}
	}
	if ctx.Err() != nil && firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil && errors.Is(firstErr, context.Canceled) {
		firstErr = errors.New("interrupted")
	}
	return out, failed, firstErr
}
