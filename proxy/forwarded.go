package proxy

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"

	"github.com/chatguard/chatguard/internal/config"
)

// trustedProxies decides whose X-Forwarded-* headers are believed.
type trustedProxies []netip.Prefix

func newTrustedProxies(list []string) trustedProxies {
	var t trustedProxies
	for _, s := range list {
		if p, err := config.ParsePrefix(s); err == nil {
			t = append(t, p)
		}
	}
	return t
}

func (t trustedProxies) contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerAddr is the TCP peer of r.
func peerAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// clientIP walks X-Forwarded-For from the right, skipping trusted proxies, as
// nginx's real_ip_recursive does: the first untrusted address is the client.
// An untrusted peer's X-Forwarded-For is ignored; an unparsable hop stops the
// walk at the last trusted address.
func (t trustedProxies) clientIP(r *http.Request, peer netip.Addr) netip.Addr {
	if len(t) == 0 || !t.contains(peer) {
		return peer
	}
	client := peer
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := parseHop(strings.TrimSpace(parts[j]))
			if err != nil {
				return client
			}
			client = a.Unmap()
			if !t.contains(client) {
				return client
			}
		}
	}
	return client
}

// setForwarded writes X-Forwarded-For/-Proto/-Host and X-Real-IP on the
// outbound request. A trusted peer's chain is extended; anybody else's is
// replaced by what chatguard saw itself.
func (t trustedProxies) setForwarded(pr *httputil.ProxyRequest, peer, client netip.Addr) {
	in, out := pr.In, pr.Out.Header
	trusted := t.contains(peer)
	peerIP := peer.String()
	xff := peerIP
	if trusted {
		if prior := strings.Join(in.Header.Values("X-Forwarded-For"), ", "); prior != "" {
			xff = prior + ", " + xff
		}
	}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	host := in.Host
	if trusted {
		if p := strings.ToLower(strings.TrimSpace(firstOf(in.Header.Get("X-Forwarded-Proto")))); p == "http" || p == "https" {
			proto = p
		}
		if h := strings.TrimSpace(firstOf(in.Header.Get("X-Forwarded-Host"))); h != "" && validHost(h) {
			host = h
		}
	}
	if trusted {
		// ReverseProxy takes Forwarded out before Rewrite, as it does the
		// X-Forwarded-* it rebuilds above: a trusted proxy's is kept, with
		// chatguard's hop appended as to X-Forwarded-For (RFC 7239 5.2;
		// QA: it was dropped, against "a trusted proxy's pass").
		if fw := in.Header.Values("Forwarded"); len(fw) > 0 {
			p := peer.Unmap()
			hop := "for=" + p.String()
			if p.Is6() { // an IPv6 node is quoted, in brackets
				hop = `for="[` + p.String() + `]"`
			}
			scheme := "http"
			if in.TLS != nil {
				scheme = "https"
			}
			out["Forwarded"] = []string{strings.Join(fw, ", ") + ", " + hop + ";proto=" + scheme}
		}
	} else {
		// The rest of the family too (X-Forwarded-Port, -Prefix, -Ssl…),
		// and the client-address headers Node's request-ip reads before
		// X-Forwarded-For: from an untrusted peer they are its own say
		// (QA: X-Forwarded-Prefix: /admin reached the app).
		for k := range out {
			if clientSaysHeader(k) {
				delete(out, k)
			}
		}
	}
	realIP := peerIP
	if client != peer {
		realIP = client.String()
	}
	// One backing array for the four values, each header its own
	// one-element slice of it (what Header.Set would make, four times).
	vals := [...]string{xff, proto, realIP, host}
	out["X-Forwarded-For"] = vals[0:1:1]
	out["X-Forwarded-Proto"] = vals[1:2:2]
	out["X-Real-Ip"] = vals[2:3:3]
	if host != "" {
		out["X-Forwarded-Host"] = vals[3:4:4]
	} else { // HTTP/1.0 without Host: no host to name, and an empty header is not one
		delete(out, "X-Forwarded-Host")
	}
}

// clientSaysHeader: a header that only a proxy in front of chatguard may
// set, naming the client, its address, scheme, port or path prefix.
func clientSaysHeader(k string) bool {
	if strings.HasPrefix(k, "X-Forwarded") {
		return true
	}
	switch k {
	case "Forwarded", "Forwarded-For", "X-Client-Ip", "Do-Connecting-Ip", "X-Cluster-Client-Ip", "True-Client-Ip", "Cf-Connecting-Ip",
		"Fastly-Client-Ip", "X-Original-Forwarded-For", "Cf-Pseudo-Ipv4", "X-Appengine-User-Ip",
		"Front-End-Https", "X-Url-Scheme",
		// What other frameworks and gateways read a client's address from
		// (QA: these reached the app from any client).
		"Client-Ip", "X-Remote-Ip", "X-Remote-Addr", "X-Originating-Ip", "Proxy-Client-Ip",
		"Wl-Proxy-Client-Ip", "X-Proxyuser-Ip", "X-Envoy-External-Address", "X-Azure-Clientip",
		"X-Azure-Socketip", "Cf-Connecting-Ipv6", "Akamai-Client-Ip":
		return true
	}
	return false
}

func firstOf(list string) string {
	first, _, _ := strings.Cut(list, ",")
	return first
}

// validHost: h is a host with an optional port, nothing else: letters,
// digits, - . _ ~, and : [ ] for ports and IPv6 (QA: a trusted proxy's
// "chat.example.com@evil.com", "evil.com?" or "evil.com#" passed, and a
// redirect rewritten to the client's address sent the client there).
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~:[]", c) >= 0) {
			return false
		}
	}
	return true
}

// parseHop reads one X-Forwarded-For entry: an address, or an address with a
// port ("1.2.3.4:5678", "[2001:db8::1]:443"), which some load balancers
// (Azure Application Gateway) append. Refusing those would stop the walk at
// the balancer, and every client would share its address.
//
// An IPv6 zone ("fe80::1%eth0") names an interface of the host that wrote
// it, nothing of the client's: it is dropped (QA: a 6,000-character zone
// made the access line's remoteIp no address).
func parseHop(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err == nil {
		return a.WithZone(""), nil
	}
	if ap, perr := netip.ParseAddrPort(s); perr == nil {
		return ap.Addr().WithZone(""), nil
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, perr := netip.ParseAddr(s[1 : len(s)-1]); perr == nil && a.Is6() {
			return a.WithZone(""), nil
		}
	}
	return netip.Addr{}, err
}
