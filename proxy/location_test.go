package proxy

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// An app's redirect to its own address reaches the client as the address
// the client used, as nginx's proxy_redirect default makes it; any other
// Location passes as it came.
func TestRedirectToUpstreamRewritten(t *testing.T) {
	t.Parallel()
	var self string // the app's own http://host:port
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if loc := q.Get("loc"); loc != "" {
			w.Header().Set("Location", strings.ReplaceAll(loc, "SELF", self))
		}
		if ref := q.Get("refresh"); ref != "" {
			w.Header().Set("Refresh", strings.ReplaceAll(ref, "SELF", self))
		}
		w.WriteHeader(http.StatusFound)
	}))
	defer app.Close()
	self = app.URL
	h := start(t, app.URL, func(c *config.Config) { c.Proxy.TrustedProxies = []string{"127.0.0.2/32"} })
	front := h.url // http://127.0.0.1:port, the Host the client sends
	tests := []struct {
		name, loc, refresh, want, wantRefresh string
		header                                []string
	}{
		{name: "own address", loc: "SELF/login?next=%2Fhome#top", want: front + "/login?next=%2Fhome#top"},
		{name: "own address, no path", loc: "SELF", want: front + "/"},
		{name: "scheme and host in another case", loc: strings.ToUpper(self) + "/x", want: front + "/x"},
		{name: "relative", loc: "/login", want: "/login"},
		{name: "elsewhere", loc: "https://accounts.example.com/o/oauth2?redirect_uri=SELF/cb", want: "https://accounts.example.com/o/oauth2?redirect_uri=" + self + "/cb"},
		// An app that trusts a TLS proxy's X-Forwarded-Proto writes https
		// before its own address (QA).
		{name: "own address over https", loc: strings.Replace(self, "http://", "https://", 1) + "/x", want: front + "/x"},
		{name: "with userinfo", loc: strings.Replace(self, "http://", "http://u:p@", 1) + "/x", want: strings.Replace(self, "http://", "http://u:p@", 1) + "/x"},
		{name: "refresh", loc: "/a", refresh: "5; URL='SELF/next'", want: "/a", wantRefresh: "5; URL='" + front + "/next'"},
		{name: "refresh elsewhere", loc: "/a", refresh: "0; url=https://example.com/", want: "/a", wantRefresh: "0; url=https://example.com/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := url.Values{"loc": {tt.loc}}
			if tt.refresh != "" {
				q.Set("refresh", tt.refresh)
			}
			req, _ := http.NewRequest(http.MethodGet, h.url+"/r?"+q.Encode(), nil)
			resp, err := h.client.Transport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("Location"); got != tt.want {
				t.Errorf("Location %q, want %q", got, tt.want)
			}
			if got := resp.Header.Get("Refresh"); got != tt.wantRefresh {
				t.Errorf("Refresh %q, want %q", got, tt.wantRefresh)
			}
		})
	}
	// Behind a trusted proxy: the scheme and host it says the client used.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	tr := &http.Transport{DialContext: d.DialContext}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, h.url+"/r?"+url.Values{"loc": {"SELF/login"}}.Encode(), nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Host", "chat.example.com")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Location"); got != "https://chat.example.com/login" {
		t.Errorf("behind a trusted proxy: Location %q", got)
	}
	// A forwarded host that is no host is not believed: the redirect
	// names the Host the request came with (QA: "…@evil.com" sent the
	// client to evil.com).
	for _, fh := range []string{"chat.example.com@evil.com", "evil.com?", "evil.com#", "evil.com/x"} {
		req, _ := http.NewRequest(http.MethodGet, h.url+"/r?"+url.Values{"loc": {"SELF/login"}}.Encode(), nil)
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", fh)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got, want := resp.Header.Get("Location"), "https://"+strings.TrimPrefix(h.url, "http://")+"/login"; got != want {
			t.Errorf("X-Forwarded-Host %q: Location %q, want %q", fh, got, want)
		}
	}
	// A Host header Go lets through that is no host: no rewrite.
	req, _ = http.NewRequest(http.MethodGet, h.url+"/r?"+url.Values{"loc": {"SELF/login"}}.Encode(), nil)
	req.Host = "a;b,c"
	resp, err = h.client.Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Location"); got != self+"/login" {
		t.Errorf("Host a;b,c: Location %q, want it unchanged", got)
	}
}

// A path prefix in the upstream's URL is part of the app's address; the
// scheme and host are the ones a trusted proxy says the client used.
func TestRedirectRewriteUpstreamPathAndForwarded(t *testing.T) {
	t.Parallel()
	r := newLocationRewriter(&url.URL{Scheme: "http", Host: "chat-backend:80", Path: "/base/"})
	front := "https://chat.example.com"
	for loc, want := range map[string]string{
		"http://chat-backend/base/login": front + "/login",
		"http://CHAT-BACKEND:80/base":    front + "/",
		"http://chat-backend/base?x=1":   front + "/?x=1",
		"http://chat-backend/basement":   "",
		"http://chat-backend/other":      "",
		"http://chat-backend:8080/base/": "",
		"https://chat-backend/base/":     front + "/", // an app trusting the TLS proxy's proto (review)
		"https://chat-backend:443/base/": "",
		"//chat-backend/base/":           "",
	} {
		resp := &http.Response{Header: http.Header{"Location": {loc}}}
		out := &http.Request{Header: http.Header{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"chat.example.com"}}}
		r.rewrite(resp, out)
		got := resp.Header.Get("Location")
		if want == "" {
			want = loc
		}
		if got != want {
			t.Errorf("%s → %s, want %s", loc, got, want)
		}
	}
	v6 := newLocationRewriter(&url.URL{Scheme: "http", Host: "[::1]:3000"})
	if got, ok := v6.replace("http://[::1]:3000/x", front); !ok || got != front+"/x" {
		t.Errorf("IPv6 upstream: %q %v", got, ok)
	}
	if _, ok := v6.replace("http://[::1]/x", front); ok {
		t.Error("IPv6 upstream on port 80 matched port 3000")
	}
}

// FuzzLocationRewrite: any Location or Refresh an app sends is either left
// alone or starts with the client's address afterwards, and never panics.
func FuzzLocationRewrite(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:3000/x", "HTTP://127.0.0.1:3000", "http://127.0.0.1:3000/base?x", "/rel", "http://u@127.0.0.1:3000/", "http://[::1]:3000/x", "5; url='http://127.0.0.1:3000/base/n'"} {
		f.Add(s)
	}
	r := newLocationRewriter(&url.URL{Scheme: "http", Host: "127.0.0.1:3000", Path: "/base"})
	const front = "https://chat.example.com"
	f.Fuzz(func(t *testing.T, loc string) {
		if got, ok := r.replace(loc, front); ok {
			if !strings.HasPrefix(got, front+"/") {
				t.Fatalf("%q → %q", loc, got)
			}
			if l := strings.ToLower(loc); !strings.HasPrefix(l, "http://") && !strings.HasPrefix(l, "https://") {
				t.Fatalf("%q rewritten without the upstream's scheme", loc)
			}
		}
		resp := &http.Response{Header: http.Header{"Location": {loc}, "Refresh": {loc}}}
		r.rewrite(resp, &http.Request{Header: http.Header{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"chat.example.com"}}})
	})
}
