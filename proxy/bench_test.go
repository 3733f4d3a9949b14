package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chatguard/chatguard/internal/buildinfo"
	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/metrics"
)

// BenchmarkServeHTTP measures the proxy's own work per request — middleware,
// access line, metrics, reverse proxy — against a real loopback upstream,
// calling the handler directly (no client connection), with the access log
// on (written to io.Discard) and off.
func BenchmarkServeHTTP(b *testing.B) {
	up := upstreamB(b)
	for _, level := range []string{"info", "warn"} {
		b.Run("log="+level, func(b *testing.B) {
			cfg := config.Defaults()
			cfg.Upstream = up
			reg := metrics.NewRegistry(buildinfo.Get())
			lg, err := logging.New(logging.Options{Level: level, Out: io.Discard, Registerer: reg})
			if err != nil {
				b.Fatal(err)
			}
			defer lg.Close()
			srv, err := New(Options{Config: cfg, Logger: lg.Logger, Registry: reg})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.idle.CloseIdleConnections()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodGet, "http://chat.example/api/messages?page=2", nil)
					req.RemoteAddr = "10.1.2.3:4567"
					req.RequestURI = "/api/messages?page=2"
					clear(w.h)
					srv.ServeHTTP(w, req)
				}
			})
		})
	}
}

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }

func upstreamB(b *testing.B) string {
	b.Helper()
	body := []byte(`{"messages":[{"id":"m1","text":"hello","from":"ana@example.com"}],"page":2,"more":false}`)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	b.Cleanup(s.Close)
	return s.URL
}
