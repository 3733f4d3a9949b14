package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A request net/http ends before chatguard's handler runs (malformed, which
// it answers 400 itself, or cut off before its headers ended) is counted,
// and logged at most once each unservedLogEvery; served requests, on a
// connection kept alive or not, are not (QA: such requests left no trace).
func TestUnservedRequestsAreCounted(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	h := start(t, up.URL, nil)
	addr := strings.TrimPrefix(h.url, "http://")
	send := func(raw string, wantAnswer bool) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		if !wantAnswer {
			return // cut off: closed with the headers unfinished
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("%q: %d", raw, resp.StatusCode)
		}
		_, _ = io.Copy(io.Discard, c) // until net/http closes it
	}
	// Two requests served on one connection, then closed: not counted.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := 0; i < 2; i++ {
		_, _ = io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	c.Close()
	send("GET /a HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\x1b[31m\r\n\r\n", true)
	send("GET /b HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", true)
	send("GET /c HTTP/1.1\r\nHost: x\r\nUser-Ag", false)
	waitMetric(t, h, "chatguard_http_unserved_requests_total", 3)
	if n := strings.Count(h.logs.String(), "never reached chatguard"); n != 1 {
		t.Errorf("%d log lines for 3 unserved requests within %v, want 1:\n%s", n, unservedLogEvery, h.logs.String())
	}
	if v := metricValue(t, h, `chatguard_http_requests_total{route="other",status_class="2xx"}`); v != 2 {
		t.Errorf("served requests counted %v, want 2", v)
	}
}
