package proxy

// An app that writes its own address into a redirect
// (http://127.0.0.1:3000/login, from a BASE_URL setting or from Host when
// proxy.preserve_host is off) sends its clients to a port only its pod can
// reach. As nginx's proxy_redirect default does, the upstream's URL at the
// start of Location and of Refresh's url= becomes the address the client
// used: the scheme and host chatguard sends upstream as X-Forwarded-Proto
// and X-Forwarded-Host.

import (
	"net/http"
	"net/url"
	"strings"
)

// locationRewriter rewrites redirects that name target.
type locationRewriter struct {
	scheme string // target's
	host   string // target's, lowercased with its scheme's default port
	prefix string // target's path without its trailing slash
}

func newLocationRewriter(target *url.URL) locationRewriter {
	return locationRewriter{
		scheme: strings.ToLower(target.Scheme),
		host:   hostWithPort(target.Scheme, target.Host),
		prefix: strings.TrimSuffix(target.EscapedPath(), "/"),
	}
}

// hostWithPort is host lowercased, with the scheme's default port when it
// names none.
func hostWithPort(scheme, host string) string {
	host = strings.ToLower(host)
	if i := strings.LastIndexByte(host, ':'); i < 0 || strings.HasSuffix(host, "]") {
		switch strings.ToLower(scheme) {
		case "https", "wss":
			return host + ":443"
		default:
			return host + ":80"
		}
	}
	return host
}

// rewrite rewrites resp's Location and Refresh; out is the request sent
// upstream, which carries the client's scheme and host.
func (l locationRewriter) rewrite(resp *http.Response, out *http.Request) {
	loc := resp.Header.Get("Location")
	refresh := resp.Header.Get("Refresh")
	if loc == "" && refresh == "" {
		return
	}
	proto, host := out.Header.Get("X-Forwarded-Proto"), out.Header.Get("X-Forwarded-Host")
	if proto == "" || !validHost(host) {
		// No host, or a Host header Go let through that is no host
		// ("a;b,c"): nothing a redirect should be made to name.
		return
	}
	front := proto + "://" + host
	if loc != "" {
		if s, ok := l.replace(loc, front); ok {
			resp.Header.Set("Location", s)
		}
	}
	if refresh != "" {
		// "5; url=http://127.0.0.1:3000/next", url= in any case, maybe quoted.
		i := indexURLParam(refresh)
		if i < 0 {
			return
		}
		u := refresh[i+4:]
		quote := ""
		if u != "" && (u[0] == '\'' || u[0] == '"') {
			quote, u = u[:1], u[1:]
		}
		if s, ok := l.replace(u, front); ok {
			resp.Header.Set("Refresh", refresh[:i+4]+quote+s)
		}
	}
}

// replace is s with the upstream's URL at its start replaced by front.
func (l locationRewriter) replace(s, front string) (string, bool) {
	// http or https alike: an app behind a TLS proxy that it trusts
	// (Express's trust proxy) writes https:// before its own address
	// (QA); the address is the app's either way.
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || !strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https") {
		return "", false
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority := rest[:end]
	if strings.ContainsRune(authority, '@') || hostWithPort(l.scheme, authority) != l.host {
		return "", false
	}
	rest = rest[end:]
	if l.prefix != "" {
		after, ok := strings.CutPrefix(rest, l.prefix)
		if !ok || after != "" && !strings.ContainsRune("/?#", rune(after[0])) {
			return "", false // not under the upstream's path: not the app's own URL
		}
		rest = after
	}
	if rest == "" || rest[0] != '/' {
		rest = "/" + rest
	}
	return front + rest, true
}

// indexURLParam is the index of the first "url=", in any case, in s; -1 if
// none. (Lowercasing s first would move the index past a letter whose
// lower case is shorter: the fuzzer's "Ⱥ".)
func indexURLParam(s string) int {
	for i := 0; i+4 <= len(s); i++ {
		if strings.EqualFold(s[i:i+4], "url=") {
			return i
		}
	}
	return -1
}
