package proxy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	apierrors "github.com/chatguard/chatguard/errors"
)

// Envelope sources, the "source" label of chatguard_envelopes_total.
const (
	sourceProxy       = "proxy"       // chatguard's own failure or decision
	sourceUpstream    = "upstream"    // an upstream error reply, rewritten
	sourcePassthrough = "passthrough" // an upstream envelope, passed on
)

var statusClasses = []string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// serverMetrics are the proxy's metrics. Each routing makes its routes'
// children up front (see newRouting) so that the request path does no label
// hashing.
type serverMetrics struct {
	requests  *prometheus.CounterVec
	durations *prometheus.HistogramVec
	inFlight  prometheus.Gauge
	conns     prometheus.Gauge
	upgraded  prometheus.Gauge
	ready     prometheus.GaugeFunc

	upstreamErrors  *prometheus.CounterVec
	upstreamRetries prometheus.Counter
	envelopes       *prometheus.CounterVec
	acceptErrors    *prometheus.CounterVec
}

// newServerMetrics registers the server's metrics; ready tells
// chatguard_ready's value at each scrape.
func newServerMetrics(reg prometheus.Registerer, ready func() bool) (*serverMetrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatguard_http_requests_total",
		Help: "Requests answered on the public listener, by route and status class.",
	}, []string{"route", "status_class"})
	durations := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "chatguard_http_request_duration_seconds",
		Help:    "Time from receiving a request to the end of its response, by route.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"route"})
	m := &serverMetrics{
		requests:  requests,
		durations: durations,
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatguard_http_requests_in_flight",
			Help: "Requests being served on the public listener (upgraded connections not included).",
		}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatguard_http_connections",
			Help: "Open client connections on the public listener that net/http serves (idle keep-alive and not yet sent a request included; upgraded WebSockets are chatguard_upgraded_connections).",
		}),
		upgraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatguard_upgraded_connections",
			Help: "Open connections that switched protocols (WebSocket) through the proxy.",
		}),
		// Read at the scrape, as /readyz answers: a gauge set on start and
		// drain stayed 1 while /readyz said the upstream was down, so the
		// not-ready alert never fired for a sidecar's dead app (QA).
		ready: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chatguard_ready",
			Help: "1 while /readyz answers 200; 0 while starting, draining, or (with proxy.ready_on_upstream) while the upstream does not accept connections.",
		}, func() float64 {
			if ready() {
				return 1
			}
			return 0
		}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_upstream_errors_total",
			Help: "Failures to get an answer from the upstream, by envelope code and reason (refused, reset, timeout, dns, eof, body_too_large, client_closed (code none), bad_response, bad_request, tls, other).",
		}, []string{"code", "reason"}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_accept_errors_total",
			Help: "Failed accept attempts by listener (out of file descriptors, EMFILE/ENFILE, above all; retried every 5 ms to 1 s while it lasts): meanwhile clients and probes wait or time out.",
		}, []string{"listener"}),
		upstreamRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatguard_upstream_retries_total",
			Help: "Idempotent requests sent again on a new upstream connection because a reused one, idle for 1 s or more or reset, closed before any answer.",
		}),
		envelopes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_envelopes_total",
			Help: "Error envelopes sent, by code and source (proxy, upstream, passthrough).",
		}, []string{"code", "source"}),
	}
	// Make every catalogue code visible at zero, so that rate() and alerts
	// work before the first error.
	for _, c := range apierrors.Codes() {
		m.envelopes.WithLabelValues(string(c), sourceProxy)
		m.envelopes.WithLabelValues(string(c), sourceUpstream)
		m.envelopes.WithLabelValues(string(c), sourcePassthrough)
	}
	m.envelopes.WithLabelValues("OTHER", sourcePassthrough) // an app's own codes
	// The failures the alert rules divide by the requests exist at 0 from
	// the start: a ratio of 0, not "no data", until the first one.
	for _, reason := range []string{"refused", "reset", "dns", "eof", "tls", "bad_response", "other"} {
		m.upstreamErrors.WithLabelValues(string(apierrors.CodeUpstreamUnavailable), reason)
	}
	m.upstreamErrors.WithLabelValues(string(apierrors.CodeUpstreamTimeout), "timeout")
	m.acceptErrors.WithLabelValues("public")
	m.acceptErrors.WithLabelValues("admin")
	for _, c := range []prometheus.Collector{requests, durations, m.inFlight, m.conns, m.upgraded, m.ready, m.upstreamErrors, m.upstreamRetries, m.envelopes, m.acceptErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("proxy: register metrics: %w", err)
		}
	}
	return m, nil
}

func (rt *routing) observe(route, status int, seconds float64) {
	class := status/100 - 1
	if class < 0 || class >= len(statusClasses) {
		class = 4
	}
	rt.requests[route][class].Inc()
	rt.durations[route].Observe(seconds)
}

// envelopeCode bounds the code label to the catalogue: an upstream envelope
// may carry any string.
func envelopeCode(c apierrors.Code) string {
	if c.Known() {
		return string(c)
	}
	return "OTHER"
}

// upstreamError counts a failure to get the upstream's answer. A client that
// left has no envelope, so its code is "none" rather than the placeholder
// the classifier gives it (QA: clients leaving showed as 503s by code).
func (m *serverMetrics) upstreamError(code apierrors.Code, reason string) {
	if reason == reasonClientClosed {
		code = "none"
	}
	m.upstreamErrors.WithLabelValues(string(code), reason).Inc()
}

// reasonClientClosed is the reason of a request whose client went away first.
const reasonClientClosed = "client_closed"
