package proxy

import (
	"bufio"
	cryptotls "crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/config"
)

// An upstream body whose next bytes do not come within
// proxy.response_body_timeout is given up, as nginx's proxy_read_timeout
// does (QA: Content-Length 10, 3 bytes, silence: the client waited past
// 100 s with no log line). The client keeps what came, the access line and
// the metrics say timeout, and both connections close.
func TestStalledUpstreamBodyIsGivenUp(t *testing.T) {
	t.Parallel()
	for _, tls := range []bool{false, true} { // chatguard's own transport (a deadline), net/http's (a timer)
		// The send timeout no longer than the body timeout (the defaults
		// are both 60 s): the write deadline armed when "abc" was written
		// ran out as the body timeout fired, and the client got nothing,
		// not even the status line (QA).
		for _, send := range []time.Duration{time.Minute, 300 * time.Millisecond, 200 * time.Millisecond} {
			t.Run(fmt.Sprintf("tls=%v,send=%v", tls, send), func(t *testing.T) {
				t.Parallel()
				stalledBodyGivenUp(t, tls, send)
			})
		}
	}
}

func stalledBodyGivenUp(t *testing.T, tls bool, send time.Duration) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		_, _ = io.WriteString(w, "abc")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	var url string
	if tls {
		srv := httptest.NewTLSServer(handler)
		t.Cleanup(srv.Close)
		url = srv.URL
	} else {
		url = upstream(t, handler).URL
	}
	h := start(t, url, func(c *config.Config) {
		c.Proxy.ResponseBodyTimeout = 300 * time.Millisecond
		c.Server.SendTimeout = send
	})
	if tls {
		h.srv.proxy.Transport.(*http.Transport).TLSClientConfig = &cryptotls.Config{InsecureSkipVerify: true} // the test server's certificate
	}
	began := time.Now()
	resp, err := h.client.Get(h.url + "/hang")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || string(got) != "abc" {
		t.Fatalf("client read %q, %v; want the 3 bytes and a cut", got, err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("cut after %v", took)
	}
	var line map[string]any
	waitFor(t, "access line", func() bool { line = accessLine(t, h, "/hang"); return line != nil })
	if line["reason"] != "timeout" || line["aborted"] != true {
		t.Errorf("access line %v: want reason timeout, aborted", line)
	}
	if v := metricValue(t, h, `chatguard_upstream_errors_total{code="UPSTREAM_TIMEOUT",reason="timeout"}`); v != 1 {
		t.Errorf("upstream errors{timeout} = %v, want 1", v)
	}
}

// Time the copy spends writing to a client that reads slowly is not the
// upstream's: a body that comes at once, read by a client that pauses
// longer than the timeout, arrives whole. An event stream quiet for longer
// than the timeout is not cut either.
func TestResponseBodyTimeoutSparesSlowClientsAndEventStreams(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 16<<20)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/events" {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: one\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(700 * time.Millisecond)
			_, _ = io.WriteString(w, "data: two\n\n")
			return
		}
		_, _ = io.WriteString(w, big)
	})
	h := start(t, up.URL, func(c *config.Config) { c.Proxy.ResponseBodyTimeout = 300 * time.Millisecond })

	resp, err := h.client.Get(h.url + "/big")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(900 * time.Millisecond) // the client reads nothing; the copy waits in its write
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || len(got) != len(big) {
		t.Errorf("slow client read %d bytes, %v; want all %d", len(got), err, len(big))
	}

	resp, err = h.client.Get(h.url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	var events []string
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			events = append(events, strings.TrimSpace(line))
		}
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	if strings.Join(events, ",") != "data: one,data: two" {
		t.Errorf("event stream: %q", events)
	}
}

// A client that takes none of its response for server.send_timeout is cut
// (nginx's send_timeout; QA: a client that read nothing held the upstream
// connection for as long as it paused). The access line says so (499,
// send_timeout). A client that reads, and the next request on its
// keep-alive connection after a longer pause, are not affected.
func TestClientThatStopsReadingIsCut(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("y", 24<<20)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, big) })
	h := start(t, up.URL, func(c *config.Config) { c.Server.SendTimeout = time.Second })

	resp, err := h.client.Get(h.url + "/stuck")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // takes nothing: the copy's writes block
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || len(got) == len(big) {
		t.Fatalf("a client that paused for 3 s got %d of %d bytes, err %v; want a cut", len(got), len(big), err)
	}
	var line map[string]any
	waitFor(t, "access line", func() bool { line = accessLine(t, h, "/stuck"); return line != nil })
	if line["status"] != float64(499) || line["reason"] != "send_timeout" {
		t.Errorf("access line %v: want 499, reason send_timeout", line)
	}

	// One client, one connection: a whole body, a pause past the timeout,
	// then another request on the same connection.
	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	for i := range 2 {
		resp, err := c.Get(h.url + "/reader")
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(got) != len(big) {
			t.Fatalf("request %d: %d bytes, %v", i+1, len(got), err)
		}
		time.Sleep(1500 * time.Millisecond)
	}
}
