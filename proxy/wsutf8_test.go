package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// utf8Check agrees with utf8.Valid however a message is cut into reads.
func TestUTF8CheckAcrossReads(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", "é€😀 mixed ascii", strings.Repeat("😀", 9),
		"\xff", "a\xc3", "\xc3(", "\xe2\x82", "\xed\xa0\x80" /* a surrogate */, "ok\xf0\x9f\x98", "\x80", "😀\xbf"} {
		want := utf8.ValidString(s)
		b := []byte(s)
		for size := 1; size <= len(b)+1; size++ {
			var u utf8Check
			ok := true
			for i := 0; i < len(b) && ok; i += size {
				ok = u.valid(b[i:min(i+size, len(b))])
			}
			if got := ok && u.done(); got != want {
				t.Errorf("%q in reads of %d: valid %v, want %v", s, size, got, want)
			}
		}
	}
}

func FuzzUTF8Check(f *testing.F) {
	f.Add([]byte("é€😀"), uint8(1))
	f.Add([]byte("a\xf0\x9f\x98"), uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, size uint8) {
		step := int(size%16) + 1
		var u utf8Check
		ok := true
		for i := 0; i < len(b) && ok; i += step {
			ok = u.valid(b[i:min(i+step, len(b))])
		}
		if got := ok && u.done(); got != utf8.Valid(b) {
			t.Fatalf("%q in reads of %d: %v, utf8.Valid says %v", b, step, got, !got)
		}
	})
}

// A text message that is not UTF-8 never reaches the backend, held whole
// or streamed: the client gets 1007, the backend 1001 (QA: ws raised an
// error on it and the sample app, without a handler, crashed); a close
// reason that is not UTF-8 is not passed on. UTF-8 split between reads
// passes intact.
func TestWebSocketInvalidUTF8NotRelayed(t *testing.T) {
	t.Parallel()
	for _, n := range []int{4, 200 << 10} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			up := newRelayUpstream()
			h := start(t, upstream(t, up.ServeHTTP).URL, nil)
			c, ctx := dialWS(t, h, "/ws/echo", nil)
			c.SetReadLimit(-1)
			good := []byte(strings.Repeat("é€😀", n/9+1))
			if err := c.Write(ctx, websocket.MessageText, good); err != nil {
				t.Fatal(err)
			}
			if _, back, err := c.Read(ctx); err != nil || !bytes.Equal(back, good) {
				t.Fatalf("UTF-8 echoed: %d of %d bytes, %v", len(back), len(good), err)
			}
			bad := append(bytes.Repeat([]byte("x"), n), 0xff, 0xfe, 0xc3, 0x28)
			if err := c.Write(ctx, websocket.MessageText, bad); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusInvalidFramePayloadData {
				t.Fatalf("after invalid UTF-8: %v, want close 1007", err)
			}
			if end := recv(t, up.ends, "upstream close"); !strings.HasPrefix(end, "1001") {
				t.Errorf("upstream ended with %q, want 1001 (and never the message)", end)
			}
			waitMetric(t, h, `chatguard_websocket_forced_disconnects_total{reason="malformed"}`, 1)
		})
	}
	t.Run("close reason", func(t *testing.T) {
		t.Parallel()
		up := newRelayUpstream()
		h := start(t, upstream(t, up.ServeHTTP).URL, nil)
		conn, br := rvDialRaw(t, h, "/ws/echo")
		if _, err := conn.Write(frame(true, 8, true, []byte{0x0f, 0xa0, 0xff, 0xff})); err != nil { // 4000, reason FF FF
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, _, err := rawFrame(br); err != nil {
				break
			}
		}
		if end := recv(t, up.ends, "upstream close"); end != "4000 " {
			t.Errorf("upstream ended with %q, want 4000 without the reason", end)
		}
	})
}
