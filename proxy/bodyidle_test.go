package proxy

import (
	"bufio"
	"io"
	"net/http"
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
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		_, _ = io.WriteString(w, "abc")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	h := start(t, up.URL, func(c *config.Config) { c.Proxy.ResponseBodyTimeout = 300 * time.Millisecond })
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
