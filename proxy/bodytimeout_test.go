package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/config"
)

// A client that stops sending its body gets 408 within
// server.body_read_timeout of its last bytes, and the connection closes;
// it held its connection and an upstream one for good (nginx: 408 after
// client_body_timeout). A slow client that keeps sending, and a response
// that takes longer than the timeout after the body, are not cut.
func TestStalledRequestBodyGets408(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if r.URL.Path == "/slow-answer" {
			time.Sleep(3 * timeout)
		}
		_, _ = w.Write(b)
	})
	h := start(t, up.URL, func(c *config.Config) { c.Server.BodyReadTimeout = timeout })
	addr := strings.TrimPrefix(h.url, "http://")

	for name, head := range map[string]string{
		"content-length": "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789",
		"chunked":        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
		"large":          "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + strings.Repeat("x", 100_000),
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: no answer: %v", name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		took := time.Since(began)
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), `"VALIDATION_ERROR"`) || !resp.Close {
			t.Errorf("%s: %d close=%v %s", name, resp.StatusCode, resp.Close, body)
		}
		if took < timeout || took > 10*timeout {
			t.Errorf("%s: answered after %s with body_read_timeout %s", name, took, timeout)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("%s: connection still open after the 408: %v", name, err)
		}
		c.Close()
	}
	waitFor(t, "access line", func() bool { return accessLine(t, h, "/upload") != nil })
	if l := accessLine(t, h, "/upload"); l["status"] != float64(408) || l["reason"] != "body_timeout" {
		t.Errorf("access line %v", l)
	}

	// Slow but steady: a byte every timeout/3 for 4 timeouts.
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 12; i++ {
			time.Sleep(timeout / 3)
			_, _ = pw.Write([]byte{'a' + byte(i)})
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, h.url+"/steady", pr)
	resp, body := h.do(req)
	if resp.StatusCode != 200 || string(body) != "abcdefghijkl" {
		t.Errorf("steady slow body: %d %q", resp.StatusCode, body)
	}
	// The deadline does not outlive the body: an answer 3 timeouts later
	// arrives, and the connection serves the next request.
	for i := 0; i < 2; i++ {
		resp, body = h.do(mustRequest(t, http.MethodPost, h.url+"/slow-answer", "hello"))
		if resp.StatusCode != 200 || string(body) != "hello" {
			t.Errorf("answer after the body: %d %q", resp.StatusCode, body)
		}
	}
}

func mustRequest(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// An upstream that answers before the whole body and then streams its
// response is not cut by the client's pause in sending the rest: the
// response is already on its way (review: 4 of 20 bytes arrived, the
// deadline of the writer's pending read cancelling the request).
func TestBodyTimeoutSparesAnEarlyAnswer(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		time.Sleep(100 * time.Millisecond)
		w.WriteHeader(200)
		for i := 0; i < 10; i++ {
			_, _ = w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
	h := start(t, up.URL, func(c *config.Config) { c.Server.BodyReadTimeout = 300 * time.Millisecond })
	c := dialPublic(t, h)
	defer c.Close()
	if _, err := io.WriteString(c, "POST /early HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || len(b) != 10 {
		t.Errorf("early answer: %d, %d of 10 bytes (%v)", resp.StatusCode, len(b), err)
	}
}

// A Socket.IO polling POST whose client stalls gets the same 408, not a
// 413 "too large" (its read error was taken for an oversize body).
func TestStalledPollingPostGets408(t *testing.T) {
	t.Parallel()
	env, _ := pollingSession(t, func(c *config.Config) { c.Server.BodyReadTimeout = 300 * time.Millisecond })
	h := env.harness
	st, resps, closed := rawExchange(t, h, "POST "+pollPath+"&sid=p1 HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n42[\"x\"")
	if len(st) != 1 || resps[0].StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled polling POST: %v", st)
	}
	// Nothing more is read of a body the client stopped sending: the
	// connection closes with the 408.
	if !closed {
		t.Error("the connection stayed open after the 408")
	}
}

// An upstream that answers (401) before taking a large body whose client
// then stalls: the answer reaches the client at once and the connection
// closes. net/http read the rest of the body before writing the answer's
// head (to keep the connection), and with the timeout lifted for the early
// answer it waited for the stalled client for good (QA: nothing in 20 s).
func TestEarlyAnswerReachesAStalledClient(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Connection", "close") // as Node answers: Go's server would first read the rest
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"message":"jwt expired","name":"TokenExpiredError"}`)
	})
	for _, timeout := range []time.Duration{30 * time.Second, 0} { // 0: no body timeout at all
		earlyAnswerToStalledClient(t, up.URL, timeout)
	}
}

func earlyAnswerToStalledClient(t *testing.T, upstreamURL string, timeout time.Duration) {
	h := start(t, upstreamURL, func(c *config.Config) { c.Server.BodyReadTimeout = timeout })
	for name, head := range map[string]string{
		"content-length": "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n" + strings.Repeat("x", 1000),
		"chunked":        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + strings.Repeat("x", 1000) + "\r\n",
	} {
		c := dialPublic(t, h)
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("timeout %s, %s: no answer while the client holds the rest of its body: %v", timeout, name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"TOKEN_EXPIRED"`) || !resp.Close {
			t.Errorf("timeout %s, %s: %d close=%v %s", timeout, name, resp.StatusCode, resp.Close, body)
		}
		// The rest of the body is waited for as nginx's lingering close
		// does (5 s without a byte), then the connection closes.
		_ = c.SetReadDeadline(time.Now().Add(lingerTimeout + 5*time.Second))
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("timeout %s, %s: connection still open after the early answer: %v", timeout, name, err)
		}
		c.Close()
	}
}

// A client that sends its whole body before it reads (a simple script, a
// load tool) gets the upstream's early 413, not a reset: chatguard reads
// and drops the rest of the body as nginx's lingering close does. Closed
// under its unread bytes, the socket answered with a reset, which threw
// the 413 away from the client's receive buffer.
func TestEarlyAnswerReachesAClientThatSendsEverythingFirst(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		_, _ = io.WriteString(w, `{"message":"file too big"}`)
	})
	h := start(t, up.URL, nil)
	const size = 16 << 20
	c := dialPublic(t, h)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(c, "POST /api/media/upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", size); err != nil {
		t.Fatal(err)
	}
	chunk := []byte(strings.Repeat("x", 64<<10))
	for sent := 0; sent < size; sent += len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("after %d of %d bytes: %v", sent, size, err)
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer after the whole body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "file too big") {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
}

// A streamed (chunked) early answer ends when the upstream ends it, not
// after the lingering that follows an answer of known length (review: the
// last chunk came 5 s later to a client that stalled, 30 s to one that
// trickled, since net/http writes it only when the handler returns).
func TestChunkedEarlyAnswerIsNotHeldByLingering(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "already have it")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, ", thanks")
	})
	h := start(t, up.URL, nil)
	c := dialPublic(t, h)
	defer c.Close()
	fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n%s", strings.Repeat("x", 100000))
	// Well inside lingerTimeout: held by the lingering, the read times out.
	_ = c.SetReadDeadline(time.Now().Add(lingerTimeout / 2))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "already have it, thanks" || len(resp.TransferEncoding) == 0 {
		t.Errorf("chunked early answer: %q %v (TE %v)", b, err, resp.TransferEncoding)
	}
}

// Lingering stops when the server drains: a client trickling the rest of a
// refused body does not hold a graceful shutdown to its timeout (review:
// Serve returned after the whole 5 s instead of 0.5 s).
func TestLingeringEndsWithTheDrain(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"message":"no"}`)
	})
	h := start(t, up.URL, func(c *config.Config) { c.Server.DrainDelay, c.Server.ShutdownTimeout = 0, time.Minute })
	c := dialPublic(t, h)
	defer c.Close()
	fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n%s", strings.Repeat("x", 100000))
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	stopped := make(chan error, 1)
	go func() { stopped <- h.stop() }()
	select {
	case <-stopped:
	case <-time.After(lingerTimeout + 5*time.Second): // the shutdown timeout is a minute
		t.Fatal("the shutdown waited for a lingering client")
	}
}

// chatguard's own 413 (server.max_body_bytes) reaches a client that sends
// its whole body before reading, framed either way (review: "broken pipe"
// after 3.9 MB of a 16 MB Content-Length body, 5.9 MB chunked).
func TestOwn413ReachesAClientThatSendsEverythingFirst(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) })
	h := start(t, up.URL, func(c *config.Config) { c.Server.MaxBodyBytes = 1 << 20 })
	for _, chunked := range []bool{false, true} {
		const size = 16 << 20
		c := dialPublic(t, h)
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if chunked {
			fmt.Fprintf(c, "POST /api/media/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
		} else {
			fmt.Fprintf(c, "POST /api/media/upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", size)
		}
		chunk := []byte(strings.Repeat("x", 64<<10))
		for sent := 0; sent < size; sent += len(chunk) {
			if chunked {
				fmt.Fprintf(c, "%x\r\n", len(chunk))
			}
			if _, err := c.Write(chunk); err != nil {
				t.Fatalf("chunked %v: after %d of %d bytes: %v", chunked, sent, size, err)
			}
			if chunked {
				_, _ = io.WriteString(c, "\r\n")
			}
		}
		if chunked {
			_, _ = io.WriteString(c, "0\r\n\r\n")
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("chunked %v: %v %v", chunked, resp, err)
		}
		c.Close()
	}
}

// dialPublic opens a raw connection to h's public listener, closed at the
// test's end.
func dialPublic(t *testing.T, h *harness) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// chatguard's own refusals before the body (401 on a required route, 429
// over a limit) reach a client that sends its whole upload before reading,
// as its 413 does: the rest of the body is read and dropped (QA: "broken
// pipe" for 5 MB and larger bodies, where nginx's 429 arrived).
func TestOwnRefusalsReachAClientThatSendsEverythingFirst(t *testing.T) {
	t.Parallel()
	h := startMediaAuthRequired(t)
	const size = 16 << 20
	upload := func(path string) *http.Response {
		c := dialPublic(t, h)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", path, size)
		chunk := []byte(strings.Repeat("x", 64<<10))
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				t.Fatalf("%s: after %d of %d bytes: %v", path, sent, size, err)
			}
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: no answer after the whole body: %v", path, err)
		}
		_, _ = io.ReadAll(resp.Body)
		return resp
	}
	if resp := upload("/api/media/upload"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token on a required route: %d, want 401", resp.StatusCode)
	}
	codes := []int{}
	for i := 0; i < 4; i++ { // the login limit is 3 per 15 min; the body is no JSON: the IP's key
		codes = append(codes, upload("/api/auth/login").StatusCode)
	}
	if fmt.Sprint(codes) != "[200 200 200 429]" {
		t.Errorf("logins: %v, want [200 200 200 429]", codes)
	}
}

// Lingering after chatguard's own refusal waits for no body the client was
// never asked for (Expect: 100-continue), and a small body read whole
// leaves the connection usable for the next request.
func TestOwnRefusalLingerSparesExpectAndKeepAlive(t *testing.T) {
	t.Parallel()
	h := startMediaAuthRequired(t)
	c := dialPublic(t, h)
	_ = c.SetDeadline(time.Now().Add(lingerTimeout / 2))
	fmt.Fprintf(c, "POST /api/media/upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 16777216\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("Expect: 100-continue, no body sent: %v %v, want 401 at once", resp, err)
	}

	c = dialPublic(t, h)
	_ = c.SetDeadline(time.Now().Add(lingerTimeout / 2))
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "POST /api/media/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("small body: %v %v, want 401", resp, err)
	} else {
		_, _ = io.ReadAll(resp.Body)
	}
	fmt.Fprintf(c, "GET /api/messages HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the next request on that connection: %v %v, want 200", resp, err)
	}
}

// startMediaAuthRequired is a guarded chatguard whose media route requires
// a token, in front of an upstream that reads every body.
func startMediaAuthRequired(t *testing.T) *harness {
	t.Helper()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) })
	h, _ := startGuarded(t, up.URL, func(c *config.Config) {
		for i := range c.Routes {
			if c.Routes[i].Name == "media" {
				c.Routes[i].Auth = "required"
			}
		}
	})
	return h
}

// After chatguard's own 401 on a request with a small body, the next
// request on the same keep-alive connection is served. net/http reads and
// closes a small unread body when the answer's head goes out; the linger
// then read a closed body, took it for an unfinished one and set the
// connection's read deadline in the past, under net/http's background read
// of the next request: now and then that read failed first, the next
// request's context was cancelled (499 client_closed, no upstream) and the
// connection reset (QA soak: 163 of 130,457 requests; 1 % of 401-then-GET
// pairs).
func TestOwnRefusalKeepsTheConnectionForTheNextRequest(t *testing.T) {
	t.Parallel()
	h := startMediaAuthRequired(t)
	c := dialPublic(t, h)
	br := bufio.NewReader(c)
	const body = `{"name":"x"}`
	for i := 0; i < 1000; i++ { // it failed in 1 % of rounds
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "POST /api/media/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "+
			strconv.Itoa(len(body))+"\r\n\r\n"+body); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("round %d, the 401: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Close {
			t.Fatalf("round %d: %d, close %v; want 401 on a kept connection", i, resp.StatusCode, resp.Close)
		}
		if _, err := io.WriteString(c, "GET /api/other HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("round %d, the request after the 401: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("round %d, the request after the 401: %d", i, resp.StatusCode)
		}
	}
}

// chatguard's own refusal reaches a client that holds back the rest of a
// small body at once: net/http, which reads up to 256 KiB of a body before
// an answer's head, held the 401 (and 403, 429) until the body came, for
// good (QA: nothing in 400 s, the connection open). The body that comes
// afterwards is read and dropped, and the connection serves the next
// request; a client that never sends it is closed after the linger.
func TestOwnRefusalReachesAClientHoldingItsBody(t *testing.T) {
	t.Parallel()
	h := startMediaAuthRequired(t)
	for _, completes := range []bool{true, false} {
		c := dialPublic(t, h)
		br := bufio.NewReader(c)
		_ = c.SetDeadline(time.Now().Add(lingerTimeout / 2))
		fmt.Fprintf(c, "POST /api/media/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n%s", strings.Repeat("x", 10))
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("990 bytes held back: %v %v, want the 401 at once", resp, err)
		}
		_, _ = io.ReadAll(resp.Body)
		if !completes {
			_ = c.SetDeadline(time.Now().Add(lingerTimeout + 5*time.Second))
			start := time.Now()
			if n, err := br.Read(make([]byte, 1)); err == nil {
				t.Fatalf("the stalled client's connection gave %d more bytes", n)
			}
			if d := time.Since(start); d > lingerTimeout+3*time.Second {
				t.Fatalf("the stalled client's connection closed after %v", d)
			}
			c.Close()
			continue
		}
		_ = c.SetDeadline(time.Now().Add(lingerTimeout / 2))
		fmt.Fprintf(c, "%sGET /api/messages HTTP/1.1\r\nHost: a\r\n\r\n", strings.Repeat("x", 990))
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("the request after the body: %v %v, want 200", resp, err)
		}
		c.Close()
	}
}

// An answer of chatguard's own that is not a refusal (the stats endpoint's
// 200) to a request with a small body keeps the connection: net/http reads
// that body whole when the answer's head goes out, and the linger then
// finds it closed, which is no unfinished body (review: the connection was
// closed under the client, with no Connection: close).
func TestOwnAnswerToASmallBodyKeepsTheConnection(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	h := start(t, up.URL, func(c *config.Config) { c.StatsToken = "s3cret-token-value" })
	c := dialPublic(t, h)
	defer c.Close()
	br := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /api/internal/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token-value\r\nContent-Length: 5\r\n\r\nhello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("stats: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	fmt.Fprintf(c, "GET /api/messages HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the next request on the connection: %v %v", resp, err)
	}
}

// A body closed through r.Body by a Close that failed (ReverseProxy's, or
// the transport writer's, reading what is left of it under a deadline) was
// read neither whole nor given up on by net/http: the connection closes
// after the answer, and what the client sends afterwards is never read as
// a request (review: taken for net/http's own close, it was kept, and the
// rest of the body ran as a second request).
func TestBodyClosedByAFailedCloseEndsTheConnection(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if r.URL.Path != "/first" {
			_, _ = io.WriteString(w, "second")
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		b := &idleBody{ReadCloser: r.Body, w: w, rc: rc, timedOut: new(atomic.Bool), busy: make(chan struct{}, 1)}
		buf := make([]byte, 5)
		_, _ = io.ReadFull(b, buf)
		w.Header().Set("Content-Length", "2")
		_, _ = io.WriteString(w, "ok")
		_ = rc.Flush()
		_ = rc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_ = b.Close() // the writer's Close: it reads on, meets the deadline and fails
		b.end(true, func() bool { return false })
	}))
	t.Cleanup(srv.Close)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nhello", 5+len(smuggled))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	time.Sleep(500 * time.Millisecond) // past the failed Close
	_, _ = io.WriteString(c, smuggled)
	if resp, err := http.ReadResponse(br, nil); err == nil {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("the rest of the body was read as a request: %d %q", resp.StatusCode, b)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 {
		t.Fatalf("the server saw %v", seen)
	}
}
