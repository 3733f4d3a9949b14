package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/identity"
	"github.com/chatguard/chatguard/limiter"
	"github.com/chatguard/chatguard/sessions"
)

const (
	testStatsToken = "test-stats-token-0123456789abcdef"
	testUser       = "alice@example.com"
	sioPath        = "/socket.io/?EIO=4&transport=websocket"
	pollPath       = "/socket.io/?EIO=4&transport=polling"
)

// sioEnv is a running Server with what cmd/chatguard wires for sockets: a
// table manager (its sweep runs every memory.sweep_interval), the registry
// that evictions disconnect through, a JWT verifier and an event limiter.
type sioEnv struct {
	*harness
	reg *sessions.Registry
	std *sessions.Standard
}

// startSIO is startOpts with sockets wired; every config gets the test JWT
// secret and stats token before mutate runs.
func startSIO(t *testing.T, upstreamURL string, mutate func(*config.Config)) *sioEnv {
	t.Helper()
	return startSIOOpts(t, upstreamURL, mutate, nil)
}

// startSIOOpts is startSIO with a last say on the options (nil: none).
func startSIOOpts(t *testing.T, upstreamURL string, mutate func(*config.Config), extra func(*Options)) *sioEnv {
	t.Helper()
	env := &sioEnv{}
	var reg atomic.Pointer[sessions.Registry]
	env.harness = startOpts(t, upstreamURL, func(c *config.Config) {
		c.Auth.JWTSecret = testJWTSecret
		c.StatsToken = testStatsToken
		if mutate != nil {
			mutate(c)
		}
	}, func(o *Options) {
		cfg := o.Config
		mgr := sessions.NewManager(sessions.ManagerOptions{SweepInterval: cfg.Memory.SweepInterval})
		t.Cleanup(func() { mgr.Close() }) // runs after the server stopped
		std, err := sessions.NewStandard(mgr, cfg.Tables, sessions.StandardOptions{
			OnConnectedUserEvicted: func(u string, c sessions.ConnectedUser, why sessions.Reason) {
				if r := reg.Load(); r != nil {
					r.OnEvicted(u, c, why)
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		env.std = std
		env.reg = sessions.NewRegistry(sessions.RegistryOptions{
			Tables: std, MaxPerUser: cfg.WebSocket.MaxSocketsPerUser, MaxPerIP: cfg.WebSocket.MaxSocketsPerIP,
		})
		reg.Store(env.reg)
		if o.Verifier, err = identity.New(identity.Options{Secret: []byte(testJWTSecret)}); err != nil {
			t.Fatal(err)
		}
		if o.Limiter, err = limiter.New(limiter.Options{Store: limiter.NewMemoryStore(std.EventRateLimits)}); err != nil {
			t.Fatal(err)
		}
		o.Sockets, o.UserRoles = env.reg, std.UserRoles
		if extra != nil {
			extra(o)
		}
	})
	return env
}

// socketStats is the registry's stats block as [sockets, users, conversations].
func (e *sioEnv) socketStats() [3]int {
	b := e.reg.StatsBlock()
	return [3]int{b["connectedSockets"].(int), b["connectedUsers"].(int), b["activeConversations"].(int)}
}

func (e *sioEnv) waitStats(t *testing.T, want [3]int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("socket stats %v", want), func() bool { return e.socketStats() == want })
}

// authFor is a CONNECT auth payload carrying a valid token of user.
func authFor(t *testing.T, user string) string {
	return `{"token":"` + userToken(t, user, time.Now().Add(time.Hour)) + `"}`
}

// dialWS opens a WebSocket through h (closed at cleanup) with a 1 MiB read
// limit, and returns it with a context for its reads and writes.
func dialWS(t *testing.T, h *harness, path string, o *websocket.DialOptions) (*websocket.Conn, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, wsURL(h, path), o)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	c.SetReadLimit(1 << 20)
	return c, ctx
}

// userToken signs an HS256 user token with the test secret (see guard_test.go).
func userToken(t *testing.T, email string, exp time.Time) string {
	t.Helper()
	return token(t, jwt.MapClaims{"email": email, "role": "agent", "name": "Alice", "exp": exp.Unix()})
}

// metricValue is the value of one series (name{labels} as /metrics prints
// it), or -1 when the series is absent.
func metricValue(t *testing.T, h *harness, series string) float64 {
	t.Helper()
	for _, l := range strings.Split(scrape(t, h), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", l, err)
			}
			return f
		}
	}
	return -1
}

func waitMetric(t *testing.T, h *harness, series string, want float64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); metricValue(t, h, series) != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", series, metricValue(t, h, series), want)
		}
	}
}

func wsURL(h *harness, path string) string { return "ws" + strings.TrimPrefix(h.url, "http") + path }

// upgradeRequest sends a WebSocket handshake by hand, for the refusals
// (a 101 would never end the body read).
func upgradeRequest(t *testing.T, h *harness, path string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatalf("%s upgraded; a refusal was expected", path)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// fakeSIO is a minimal Engine.IO v4 / Socket.IO v5 server over WebSocket:
// it opens, accepts CONNECT, acks events that ask for it, optionally pings,
// and records every message it receives.
type fakeSIO struct {
	ping       time.Duration // 0: never
	maxPayload int           // the open packet's maxPayload; 0: 1000000
	socketID   string        // every CONNECT's socket id (a recovered socket); "": sock<n>
	pid        string        // with socketID: CONNECT replies carry a private id (connection state recovery): the CONNECT's own, or pid-<n>
	bigAck     int           // acks carry a string of this many bytes; 0: ["ok"]
	// binAck: acks are BINARY_ACKs whose one attachment ("att") follows
	// their text message after this long; 0: text acks.
	binAck time.Duration
	// refuseNS: a CONNECT to a namespace with this prefix gets
	// CONNECT_ERROR, as Socket.IO answers one it does not serve.
	refuseNS string

	mu     sync.Mutex
	got    []string // text as is, binary as "bin:" + payload, end as "end:<code>"
	active atomic.Int64
	seq    atomic.Int64
}

func (f *fakeSIO) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, s)
}

func (f *fakeSIO) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func (f *fakeSIO) has(s string) bool { return slices.Contains(f.received(), s) }

func (f *fakeSIO) count(prefix string) int {
	n := 0
	for _, g := range f.received() {
		if strings.HasPrefix(g, prefix) {
			n++
		}
	}
	return n
}

func (f *fakeSIO) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	f.active.Add(1)
	defer f.active.Add(-1)
	defer c.CloseNow()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	write := func(s string) error { return c.Write(ctx, websocket.MessageText, []byte(s)) }
	maxPayload := f.maxPayload
	if maxPayload == 0 {
		maxPayload = 1000000
	}
	if write(fmt.Sprintf(`0{"sid":"s1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":%d}`, maxPayload)) != nil {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if f.ping > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(f.ping)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if write("2") != nil {
						return
					}
				}
			}
		}()
	}
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			f.record(fmt.Sprintf("end:%d", websocket.CloseStatus(err)))
			return
		}
		if typ == websocket.MessageBinary {
			f.record("bin:" + string(msg))
			continue
		}
		s := string(msg)
		f.record(s)
		switch {
		case (s == "40" || strings.HasPrefix(s, "40{")) && f.socketID != "":
			pid := ""
			if f.pid != "" {
				var auth struct{ PID string }
				_ = json.Unmarshal([]byte(s[2:]), &auth)
				if auth.PID == "" {
					auth.PID = fmt.Sprintf("%s-%d", f.pid, f.seq.Add(1))
				}
				pid = `,"pid":"` + auth.PID + `"`
			}
			err = write(`40{"sid":"` + f.socketID + `"` + pid + `}`)
		case s == "40" || strings.HasPrefix(s, "40{"):
			err = write(fmt.Sprintf(`40{"sid":"sock%d"}`, f.seq.Add(1)))
		case strings.HasPrefix(s, "40/") && f.refuseNS != "" && strings.HasPrefix(s[2:], f.refuseNS):
			ns, _, _ := strings.Cut(s[2:], ",")
			err = write(`44` + ns + `,{"message":"Invalid namespace"}`)
		case strings.HasPrefix(s, "40/"): // another namespace: 40/admin,{…}
			ns, _, _ := strings.Cut(s[2:], ",")
			err = write(fmt.Sprintf(`40%s,{"sid":"sock%d"}`, ns, f.seq.Add(1)))
		case strings.HasPrefix(s, "42") || strings.HasPrefix(s, "45"):
			if id := ackID(s); id != "" && f.binAck > 0 {
				if err = write("461-" + id + `[{"_placeholder":true,"num":0}]`); err == nil {
					time.Sleep(f.binAck)
					err = c.Write(ctx, websocket.MessageBinary, []byte("att"))
				}
			} else if id != "" && f.bigAck > 0 {
				err = write("43" + id + `["` + strings.Repeat("a", f.bigAck) + `"]`)
			} else if id != "" {
				err = write("43" + id + `["ok"]`)
			}
		}
		if err != nil {
			return
		}
	}
}

// ackID is the ack id of an EVENT (42<id>[…]) or BINARY_EVENT (45<n>-<id>[…]).
func ackID(s string) string {
	rest := s[2:]
	if s[1] == '5' {
		_, rest, _ = strings.Cut(rest, "-")
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		return ""
	}
	return rest[:end]
}

// sioClient is a raw Engine.IO v4 client over WebSocket: it answers pings
// and hands the test every other message.
type sioClient struct {
	t      *testing.T
	c      *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
}

// dialSIO opens a Socket.IO WebSocket through h and reads the open packet.
func dialSIO(t *testing.T, h *harness, header http.Header) *sioClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	c, _, err := websocket.Dial(ctx, wsURL(h, sioPath), &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		cancel()
		t.Fatalf("dial socket.io: %v", err)
	}
	cl := &sioClient{t: t, c: c, ctx: ctx, cancel: cancel}
	t.Cleanup(cl.close)
	if open := cl.next(); !strings.HasPrefix(open, `0{"sid":"s1"`) {
		t.Fatalf("first message %q is not the open packet", open)
	}
	return cl
}

func (cl *sioClient) close() {
	_ = cl.c.Close(websocket.StatusNormalClosure, "")
	cl.cancel()
}

func (cl *sioClient) send(s string) {
	cl.t.Helper()
	if err := cl.c.Write(cl.ctx, websocket.MessageText, []byte(s)); err != nil {
		cl.t.Fatalf("send %q: %v", s, err)
	}
}

func (cl *sioClient) sendBinary(b []byte) {
	cl.t.Helper()
	if err := cl.c.Write(cl.ctx, websocket.MessageBinary, b); err != nil {
		cl.t.Fatalf("send binary: %v", err)
	}
}

// read returns the next message other than a ping (answered with a pong).
func (cl *sioClient) read() (string, error) {
	for {
		_, msg, err := cl.c.Read(cl.ctx)
		if err != nil {
			return "", err
		}
		if string(msg) == "2" {
			if err := cl.c.Write(cl.ctx, websocket.MessageText, []byte("3")); err != nil {
				return "", err
			}
			continue
		}
		return string(msg), nil
	}
}

func (cl *sioClient) next() string {
	cl.t.Helper()
	m, err := cl.read()
	if err != nil {
		cl.t.Fatalf("read: %v", err)
	}
	return m
}

// connect sends CONNECT with auth (may be empty) and returns the answer.
func (cl *sioClient) connect(auth string) string {
	cl.t.Helper()
	cl.send("40" + auth)
	return cl.next()
}

// until reads messages until the socket closes and returns them with the close.
func (cl *sioClient) until() ([]string, error) {
	var got []string
	for {
		m, err := cl.read()
		if err != nil {
			return got, err
		}
		got = append(got, m)
	}
}

// rejection decodes the envelope of a rejected event's answer: head is the
// ack's header ("4317": its single argument is the envelope) or "42" (the
// error event, whose payload is the envelope).
func rejection(t *testing.T, msg, head string) map[string]any {
	t.Helper()
	rest, ok := strings.CutPrefix(msg, head)
	if !ok || !strings.HasPrefix(rest, "[") {
		t.Fatalf("%q is not a packet %s[…]", msg, head)
	}
	var args []json.RawMessage
	if err := json.Unmarshal([]byte(rest), &args); err != nil {
		t.Fatalf("%q: %v", msg, err)
	}
	if head == "42" {
		if len(args) == 0 || string(args[0]) != `"error"` {
			t.Fatalf("%q is not the error event", msg)
		}
		args = args[1:]
	}
	if len(args) != 1 {
		t.Fatalf("%q carries %d arguments, want the envelope alone", msg, len(args))
	}
	var env struct {
		Success *bool `json:"success"`
		Error   struct {
			Code    string         `json:"code"`
			Details map[string]any `json:"details"`
		} `json:"error"`
		RequestID string `json:"requestId"`
	}
	if err := json.Unmarshal(args[0], &env); err != nil || env.Success == nil || *env.Success || env.RequestID == "" {
		t.Fatalf("not an envelope: %s (%v)", args[0], err)
	}
	return map[string]any{"code": env.Error.Code, "details": env.Error.Details}
}

// fakePolling is an Engine.IO v4 long-polling server for one session "p1":
// POST bodies are recorded (CONNECT queues the answer), and a GET waits up
// to hold for packets, as a real long-poll does, then answers a ping.
type fakePolling struct {
	hold time.Duration
	quit chan struct{}

	mu    sync.Mutex
	posts []string
	queue []string
	wake  chan struct{}
	gets  atomic.Int64 // GETs with a sid in flight
	// engine: as engine.io, a close packet POSTed answers the waiting GET
	// with a noop and ends the session, so does a GET cut short, and a
	// request for an ended session gets 400; every answer to a request
	// with an Origin grants it (the app's CORS).
	engine bool
	closed bool
	probes atomic.Int64 // WebSockets accepted
}

func newFakePolling(t *testing.T, hold time.Duration) *fakePolling {
	f := &fakePolling{hold: hold, quit: make(chan struct{}), wake: make(chan struct{}, 1)}
	t.Cleanup(func() { close(f.quit) })
	return f
}

func (f *fakePolling) postBodies() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.posts...)
}

func (f *fakePolling) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isWebSocketUpgrade(r) {
		f.probe(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	if o := r.Header.Get("Origin"); f.engine && o != "" {
		w.Header().Set("Access-Control-Allow-Origin", o)
		w.Header().Set("Access-Control-Allow-Credentials", "true")
	}
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed && r.URL.Query().Get("sid") != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"code":1,"message":"Session ID unknown"}`)
		return
	}
	if r.URL.Query().Get("sid") == "" {
		_, _ = io.WriteString(w, `0{"sid":"p1","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`)
		return
	}
	if r.Method == http.MethodPost {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.posts = append(f.posts, string(b))
		for _, p := range strings.Split(string(b), "\x1e") {
			if p == "40" || strings.HasPrefix(p, "40{") {
				f.queue = append(f.queue, `40{"sid":"sockp1"}`)
			}
			if p == "1" && f.engine {
				f.queue = append(f.queue, "6")
				f.closed = true
			}
		}
		f.mu.Unlock()
		select {
		case f.wake <- struct{}{}:
		default:
		}
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "ok")
		return
	}
	f.gets.Add(1)
	defer f.gets.Add(-1)
	timer := time.NewTimer(f.hold)
	defer timer.Stop()
	for {
		f.mu.Lock()
		q := f.queue
		f.queue = nil
		f.mu.Unlock()
		if len(q) > 0 {
			_, _ = io.WriteString(w, strings.Join(q, "\x1e"))
			return
		}
		select {
		case <-f.wake:
		case <-timer.C:
			_, _ = io.WriteString(w, "2")
			return
		case <-r.Context().Done():
			if f.engine { // "transport error": engine.io drops the session
				f.mu.Lock()
				f.closed = true
				f.mu.Unlock()
			}
			return
		case <-f.quit:
			return
		}
	}
}

// probe is the session's upgrade to WebSocket: it answers the probe ping
// and records what else comes.
func (f *fakePolling) probe(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	f.probes.Add(1)
	defer c.CloseNow()
	for {
		_, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if string(msg) == "2probe" {
			_ = c.Write(r.Context(), websocket.MessageText, []byte("3probe"))
		}
	}
}

// oneMessagePerMinute limits send-message to 1 a minute per user.
func oneMessagePerMinute(c *config.Config) {
	c.WebSocket.Events = []config.EventLimit{{Name: "send-message", Limit: config.RouteLimit{Rate: 1, Period: time.Minute}}}
}

// say queues packets for the upstream's next poll answer.
func (f *fakePolling) say(pkt string) {
	f.mu.Lock()
	f.queue = append(f.queue, pkt)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// pollSession is the polling session chatguard follows as sid (nil: none).
func pollSession(h *harness, sid string) *sioSession {
	return h.srv.ws.polling(sid)
}

// poll sends one polling request through h.
func poll(t *testing.T, h *harness, method, query, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.url+pollPath+query, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	}
	resp, b := h.do(req)
	return resp, string(b)
}

// pendingPoll sends a GET poll in the background; its body (or error) comes
// on the channel.
func pendingPoll(h *harness, query string) <-chan string {
	out := make(chan string, 1)
	go func() {
		resp, err := h.client.Get(h.url + pollPath + query)
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out <- string(b)
	}()
	return out
}

// closeStatus describes how a read ended: the close code, or the error.
func closeStatus(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("%d %s", ce.Code, ce.Reason)
	}
	return "dropped: " + err.Error()
}

// relayUpstream accepts a WebSocket (any origin) with subprotocol chat.v2,
// echoes every message, closes with 4002 when asked, and reports each
// handshake's headers and how each connection ended.
type relayUpstream struct {
	headers chan http.Header
	ends    chan string
}

func newRelayUpstream() *relayUpstream {
	return &relayUpstream{headers: make(chan http.Header, 16), ends: make(chan string, 16)}
}

func (u *relayUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.headers <- r.Header.Clone()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"chat.v2"}, InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for {
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			u.ends <- closeStatus(err)
			return
		}
		if string(msg) == "please close 4002" {
			_ = c.Close(4002, "server bye")
			u.ends <- "sent 4002"
			return
		}
		if err := c.Write(r.Context(), typ, msg); err != nil {
			u.ends <- closeStatus(err)
			return
		}
	}
}

// keyRecorder is a RoundTripper that remembers the Sec-WebSocket-Key it sent.
type keyRecorder struct {
	mu  sync.Mutex
	key string
}

func (k *keyRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	k.mu.Lock()
	k.key = r.Header.Get("Sec-WebSocket-Key")
	k.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// checkStatsEndpoint reads data.socket from the admin stats endpoint.
func checkStatsEndpoint(t *testing.T, h *harness, users int) {
	t.Helper()
	if got := statsSockets(t, h); got["connectedUsers"] != users || got["connectedSockets"] != users {
		t.Fatalf("stats socket block = %v, want %d users", got, users)
	}
}
