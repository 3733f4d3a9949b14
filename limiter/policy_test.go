package limiter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/config"
)

func TestKeyFor(t *testing.T) {
	t.Parallel()
	v4 := netip.MustParseAddr("203.0.113.7")
	v6 := netip.MustParseAddr("2001:db8:1:2:aaaa::1")
	body := func(f map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := f[k]; return v, ok }
	}
	login := NewPolicy("auth_login", config.RouteLimit{Rate: 3, Period: time.Minute, Key: []string{"ip", "body:email"}}, 1)
	user := NewPolicy("messages", config.RouteLimit{Rate: 3, Period: time.Minute, Key: []string{"user"}}, 1)
	hdr := NewPolicy("webhook", config.RouteLimit{Rate: 3, Period: time.Minute, Key: []string{"header:X-Twilio-Account"}}, 1)
	apiKey := NewPolicy("api", config.RouteLimit{Rate: 3, Period: time.Minute, Key: []string{"header:X-Api-Key"}}, 1)
	bearer := NewPolicy("api", config.RouteLimit{Rate: 3, Period: time.Minute, Key: []string{"header:Authorization"}}, 1)
	refreshLike := NewPolicy("acct", config.RouteLimit{Rate: 3, Period: time.Minute, Key: []string{"body:account"}}, 1)
	refresh := NewPolicy("refresh", config.RouteLimit{Rate: 3, Period: time.Minute, Key: []string{"body:refresh_token"}}, 1)
	sha := func(v string) string {
		sum := sha256.Sum256([]byte(v))
		return "sha256:" + hex.EncodeToString(sum[:16])
	}
	tests := []struct {
		name string
		p    *Policy
		r    Request
		want string
	}{
		{"ip and email", login, Request{IP: v4, BodyField: body(map[string]string{"email": " Ana@Example.com "})}, "auth_login|ip=203.0.113.7|body:email=ana@example.com"},
		// What JavaScript's trim() takes, U+FEFF too (QA: each number of
		// BOMs had a bucket of its own, against an app that trims).
		{"email with BOMs", login, Request{IP: v4, BodyField: body(map[string]string{"email": "\ufeff\ufeffana@example.com\ufeff"})}, "auth_login|ip=203.0.113.7|body:email=ana@example.com"},
		{"email with Unicode spaces", login, Request{IP: v4, BodyField: body(map[string]string{"email": "\u3000\u00a0ana@example.com\u2028\u205f\t"})}, "auth_login|ip=203.0.113.7|body:email=ana@example.com"},
		{"no email falls back to ip", login, Request{IP: v4, BodyField: body(nil)}, "auth_login|ip=203.0.113.7"},
		{"no body falls back to ip", login, Request{IP: v4}, "auth_login|ip=203.0.113.7"},
		{"ipv6 per /64", login, Request{IP: v6}, "auth_login|ip=2001:db8:1:2::/64"},
		{"ipv4-mapped", login, Request{IP: netip.MustParseAddr("::ffff:203.0.113.7")}, "auth_login|ip=203.0.113.7"},
		{"user", user, Request{IP: v4, User: "Ana@Example.com"}, "messages|user=ana@example.com"},
		{"user that is not an email keeps its case (sub is case-sensitive)", user, Request{IP: v4, User: "Carol"}, "messages|user=Carol"},
		{"anonymous falls back to ip", user, Request{IP: v4}, "messages|ip=203.0.113.7"},
		{"header", hdr, Request{IP: v4, Header: func(string) string { return "AC123" }}, "webhook|header:x-twilio-account=AC123"},
		{"missing header", hdr, Request{IP: v4, Header: func(string) string { return "" }}, "webhook|ip=203.0.113.7"},
		// Credentials are never in a key in clear (keys are in Redis: QA
		// read sk_live_… and a session cookie with SCAN): a header or
		// field whose name holds them, or a value shaped like one.
		{"api key header", apiKey, Request{IP: v4, Header: func(string) string { return "hdrKeySECRETvalue123" }}, "api|header:x-api-key=" + sha("hdrKeySECRETvalue123")},
		{"authorization header", bearer, Request{IP: v4, Header: func(string) string { return "Bearer sk_live_abcdefghijklmnop1234" }}, "api|header:authorization=" + sha("Bearer sk_live_abcdefghijklmnop1234")},
		{"refresh_token field", refresh, Request{IP: v4, BodyField: body(map[string]string{"refresh_token": "rtsecretvalue999"})}, "refresh|body:refresh_token=" + sha("rtsecretvalue999")},
		{"credential-shaped value of a plain body field", refreshLike, Request{IP: v4, BodyField: body(map[string]string{"account": "AKIAIOSFODNN7EXAMPLE"})}, "acct|body:account=" + sha("akiaiosfodnn7example")},
		{"credential-shaped value of a plain header", hdr, Request{IP: v4, Header: func(string) string { return "Bearer abcdefghijklmnop" }}, "webhook|header:x-twilio-account=" + sha("Bearer abcdefghijklmnop")},
	}
	for _, tc := range tests {
		if got := tc.p.KeyFor(tc.r); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestPolicyRolesAndMultiplier(t *testing.T) {
	t.Parallel()
	p := NewPolicy("messages", config.RouteLimit{Rate: 30, Period: time.Minute, Key: []string{"user"}, Roles: map[string]int{"agent": 60, "admin": 100}}, 2)
	for role, want := range map[string]int{"basic": 60, "agent": 120, "admin": 200, Anonymous: 60} {
		if got := p.LimitFor(role).Rate; got != want {
			t.Errorf("%s: %d, want %d", role, got, want)
		}
	}
	// Scaled below 1 per period: 1 per a longer one, so that the rate is
	// the one asked for (rounded up to 1 per period, every multiplier
	// under 1/(2 × rate) gave 1/rate).
	tiny := NewPolicy("x", config.RouteLimit{Rate: 1, Period: time.Minute, Burst: 1, Key: []string{"ip"}}, 0.01)
	if tiny.Limit.Rate != 1 || tiny.Limit.Burst != 1 || tiny.Limit.Period != 100*time.Minute {
		t.Errorf("1/min ×0.01: %+v, want 1 per 100 min", tiny.Limit)
	}
	for m, want := range map[float64]Limit{
		0.1:  {Rate: 1, Period: 50 * time.Minute},
		0.2:  {Rate: 1, Period: 25 * time.Minute},
		0.5:  {Rate: 2, Period: 15 * time.Minute}, // 1.5 rounded
		0.34: {Rate: 1, Period: 15 * time.Minute},
		10:   {Rate: 30, Period: 15 * time.Minute},
	} {
		login := NewPolicy("login", config.RouteLimit{Rate: 3, Period: 15 * time.Minute, Key: []string{"ip"}}, m)
		if login.Limit != want {
			t.Errorf("3 per 15 min ×%g: %+v, want %+v", m, login.Limit, want)
		}
	}
	if !strings.Contains(p.Limit.String(), "60 per 1m0s") {
		t.Errorf("String %q", p.Limit)
	}
}

func TestRejectedIn24Hours(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	l, err := New(Options{Store: newStore(t, clock), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	p := NewPolicy("p", config.RouteLimit{Rate: 1, Period: time.Hour, Key: []string{"ip"}}, 1)
	r := Request{IP: netip.MustParseAddr("10.0.0.1")}
	for i := 0; i < 4; i++ {
		if _, err := l.Decide(context.Background(), p, r); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.StatsBlock()["rejectedRequests24h"]; got != int64(3) {
		t.Fatalf("rejected %v", got)
	}
	now = now.Add(25 * time.Hour)
	if got := l.StatsBlock()["rejectedRequests24h"]; got != int64(0) {
		t.Fatalf("a day later: %v", got)
	}
}

func discardLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// FuzzKeyFor: any key spec and any client-supplied values give a bounded
// key that starts with the policy's name, without panicking.
func FuzzKeyFor(f *testing.F) {
	f.Add("ip,body:email", "ana@example.com", "X-Key", "10.0.0.1")
	f.Add("user,header:X-Account", "", "", "2001:db8::1")
	f.Add("body:", "\x00\xff", "\n", "garbage")
	f.Fuzz(func(t *testing.T, spec, body, header, ip string) {
		p := NewPolicy("r", config.RouteLimit{Rate: 1, Period: time.Minute, Key: strings.Split(spec, ",")}, 1)
		addr, _ := netip.ParseAddr(ip)
		k := p.KeyFor(Request{IP: addr, User: body, Header: func(string) string { return header },
			BodyField: func(string) (string, bool) { return body, true }})
		if !strings.HasPrefix(k, "r|") || len(k) > 2+len(p.Key)*(maxPartBytes+len(spec)+16)+64 {
			t.Fatalf("key %q for spec %q", k, spec)
		}
	})
}

// waitingStore answers only when its caller gives up.
type waitingStore struct{}

func (waitingStore) Allow(ctx context.Context, _ string, _ Limit) (Result, error) {
	<-ctx.Done()
	return Result{}, ctx.Err()
}

// A caller that leaves while the store decides (a client that hung up)
// is not a store failure: chatguard_ratelimit_store_errors_total counted
// it, and the proxy logged "store failed; request let through".
func TestDecideCallerGoneIsNoStoreError(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l, err := New(Options{Store: waitingStore{}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	p := NewPolicy("p", config.RouteLimit{Rate: 1, Period: time.Hour, Key: []string{"ip"}}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Decide(ctx, p, Request{IP: netip.MustParseAddr("10.0.0.1")}); err == nil {
		t.Fatal("no error from a store that gave none")
	}
	if n := testutil.ToFloat64(l.errors); n != 0 {
		t.Fatalf("store errors %v after the caller left", n)
	}
	// A store that fails with the caller still there is counted.
	broken := &failingStore{s: newStore(t, time.Now)}
	broken.fail.Store(true)
	l.store = broken
	if _, err := l.Decide(context.Background(), p, Request{IP: netip.MustParseAddr("10.0.0.1")}); err == nil {
		t.Fatal("no error from a failing store")
	}
	if n := testutil.ToFloat64(l.errors); n != 1 {
		t.Fatalf("store errors %v, want 1", n)
	}
}
