package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// The client is the rightmost untrusted hop of a trusted peer's
// X-Forwarded-For, whether or not the balancer wrote ports into it.
func TestClientIPFromForwardedFor(t *testing.T) {
	t.Parallel()
	trust := newTrustedProxies([]string{"127.0.0.1/32", "10.0.0.0/8"})
	peer := netip.MustParseAddr("127.0.0.1")
	tests := []struct{ xff, want string }{
		{"203.0.113.7", "203.0.113.7"},
		{"203.0.113.7:5678", "203.0.113.7"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"[2001:db8::1]", "2001:db8::1"},
		{"2001:db8::1", "2001:db8::1"},
		{"198.51.100.1, 203.0.113.7:5678, 10.1.2.3:80", "203.0.113.7"},
		{"::ffff:203.0.113.7", "203.0.113.7"},
		{"garbage, 10.1.2.3", "10.1.2.3"}, // an unparsable hop stops the walk at the last trusted one
		{"203.0.113.7:99999", "127.0.0.1"},
		{"[203.0.113.7]", "127.0.0.1"},
		// A zone names an interface of whoever wrote it: dropped (QA: a
		// 6,000-character zone was the access line's remoteIp).
		{"fe80::1%eth0", "fe80::1"},
		{"2001:db8::1%" + strings.Repeat("z", 6000), "2001:db8::1"},
		{"[fe80::1%25eth0]:443", "fe80::1"},
	}
	for _, tt := range tests {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("X-Forwarded-For", tt.xff)
		if got := trust.clientIP(r, peer); got.String() != tt.want {
			t.Errorf("X-Forwarded-For %q: client %s, want %s", tt.xff, got, tt.want)
		}
	}
}
