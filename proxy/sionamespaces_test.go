package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// What a session remembers of its namespaces stays bounded (QA: one socket
// sent 50,000 CONNECTs to namespaces the app refused, and chatguard held
// 207 MB for it): a refused or left namespace is forgotten, and a CONNECT
// past maxSessionNamespaces open ones ends the session.
func TestSocketIONamespacesBounded(t *testing.T) {
	t.Parallel()
	fake := &fakeSIO{refuseNS: "/bad"}
	env := startSIO(t, upstream(t, fake.ServeHTTP).URL, nil)
	cl := dialSIO(t, env.harness, nil)
	if got := cl.connect(""); !strings.HasPrefix(got, "40{") {
		t.Fatalf("CONNECT: %q", got)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(env.harness.logs.String())
		}
	})
	sess := rvPair(t, env.harness).sess
	nsCount := func() int {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		return len(sess.nsUser)
	}
	for i := 0; i < 3*maxSessionNamespaces; i++ {
		cl.send(fmt.Sprintf("40/bad%d%s,", i, strings.Repeat("x", 100)))
		if got := cl.next(); !strings.HasPrefix(got, fmt.Sprintf("44/bad%d%s,", i, strings.Repeat("x", 100))) {
			t.Fatalf("CONNECT /bad%d: %q, want the app's CONNECT_ERROR", i, got)
		}
	}
	waitFor(t, "the refused namespaces forgotten", func() bool { return nsCount() == 1 })
	// Left namespaces are forgotten too.
	for i := 0; i < 2*maxSessionNamespaces; i++ {
		cl.send(fmt.Sprintf("40/left%d,", i))
		if got := cl.next(); !strings.HasPrefix(got, fmt.Sprintf("40/left%d,", i)) {
			t.Fatalf("CONNECT /left%d: %q", i, got)
		}
		cl.send(fmt.Sprintf("41/left%d,", i))
	}
	waitFor(t, "the left namespaces forgotten", func() bool {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		return len(sess.nsUser) == 1 && len(sess.namespaces) == 1 // the list of accepted ones too (review)
	})
	// Open ones count: one past the cap ends the session.
	for i := 1; i < maxSessionNamespaces; i++ {
		cl.send(fmt.Sprintf("40/ok%d,", i))
		if got := cl.next(); !strings.HasPrefix(got, fmt.Sprintf("40/ok%d,", i)) {
			t.Fatalf("CONNECT /ok%d: %q", i, got)
		}
	}
	cl.send("40/one-too-many,")
	for i := 0; i < 30; i++ { // on their way before the close: dropped unread, and not logged (QA)
		cl.send(fmt.Sprintf("40/later%d,", i))
	}
	got, _ := cl.until()
	if len(got) == 0 || !strings.HasPrefix(got[0], "44/one-too-many,") || !strings.Contains(got[0], "VALIDATION_ERROR") {
		t.Errorf("CONNECT past the cap: %q, want chatguard's CONNECT_ERROR, then the end", got)
	}
	waitMetric(t, env.harness, `chatguard_socketio_event_rejections_total{event="connect",reason="namespaces"}`, 1)
	waitMetric(t, env.harness, `chatguard_websocket_forced_disconnects_total{reason="namespaces"}`, 1)
	if v := metricValue(t, env.harness, `chatguard_websocket_forced_disconnects_total{reason="auth"}`); v != 0 {
		t.Errorf("the cap counted as an auth failure: %v", v)
	}
	if n := strings.Count(env.harness.logs.String(), "a CONNECT to more namespaces"); n != 1 {
		t.Errorf("%d lines for the one connection the cap ended, want 1", n)
	}
	if fake.has("40/later0,") {
		t.Error("a CONNECT sent after the one that ended the session reached the app")
	}
}

// A recovery pid whose CONNECT's user chatguard no longer knows (the same
// namespace's earlier CONNECT was refused and forgotten while this one was
// on its way) is nobody's: an anonymous CONNECT must not recover it
// (review: it was recorded as anonymous, so anyone could).
func TestRecoveryPIDOfAForgottenNamespaceIsNobodys(t *testing.T) {
	t.Parallel()
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		_ = c.Write(ctx, websocket.MessageText, []byte(`0{"sid":"s1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`))
		for i := 0; i < 2; i++ { // both CONNECTs first, as an async auth middleware answers
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
		_ = c.Write(ctx, websocket.MessageText, []byte(`44{"message":"not yet"}`))
		_ = c.Write(ctx, websocket.MessageText, []byte(`40{"sid":"sock1","pid":"P1"}`))
		_, _, _ = c.Read(ctx)
	})
	env := startSIO(t, up.URL, nil)
	cl := dialSIO(t, env.harness, nil)
	cl.send("40")
	cl.send("40")
	if got := cl.next(); !strings.HasPrefix(got, "44") {
		t.Fatalf("first answer %q", got)
	}
	if got := cl.next(); !strings.HasPrefix(got, `40{"sid":"sock1"`) {
		t.Fatalf("second answer %q", got)
	}
	hub := env.harness.srv.ws
	waitFor(t, "the pid recorded", func() bool { return hub.pids.len() == 1 })
	if !hub.pids.mismatch("P1", "/", "") {
		t.Error("an anonymous CONNECT may recover pid P1, whose owner chatguard had forgotten")
	}
}
