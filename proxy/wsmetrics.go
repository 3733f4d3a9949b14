package proxy

import (
	"fmt"
	"strconv"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// WebSocket kinds, the "kind" label.
const (
	kindSocketIO  = "socketio"
	kindWebSocket = "websocket"
)

// Directions, the "direction" label.
const (
	dirUp   = "client_to_upstream"
	dirDown = "upstream_to_client"
)

// wsMetrics are the WebSocket relay's metrics. Children used per frame are
// bound once, so the relay does no label hashing.
type wsMetrics struct {
	open         *prometheus.GaugeVec
	outcomes     *prometheus.CounterVec
	framesUp     prometheus.Counter
	framesDown   prometheus.Counter
	bytesUp      prometheus.Counter
	bytesDown    prometheus.Counter
	events       *prometheus.CounterVec
	rejections   *prometheus.CounterVec
	forced       *prometheus.CounterVec
	closeCodes   *prometheus.CounterVec
	orphans      *prometheus.CounterVec
	pollSessions prometheus.GaugeFunc
	readers      prometheus.GaugeFunc
	sleeping     prometheus.Gauge
	wakes        prometheus.Counter
	// recoveryRefused counts CONNECTs whose connection-state-recovery pid
	// was taken out: chatguard gave it to another user or namespace.
	recoveryRefused prometheus.Counter
}

// Outcomes of an upgrade request, the "outcome" label.
const (
	outcomeAccepted       = "accepted"
	outcomeUpstreamFailed = "upstream_failed"
	outcomeUpstreamRefuse = "upstream_refused"
	outcomeOrigin         = "origin_rejected"
	outcomeLimited        = "limit_rejected"
	outcomeDraining       = "draining"
	outcomeHandshake      = "handshake_failed"
)

func newWSMetrics(reg prometheus.Registerer, pollSessions, readers func() float64) (*wsMetrics, error) {
	frames := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatguard_websocket_frames_total",
		Help: "WebSocket data messages relayed, by direction.",
	}, []string{"direction"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatguard_websocket_bytes_total",
		Help: "WebSocket payload bytes relayed, by direction.",
	}, []string{"direction"})
	m := &wsMetrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chatguard_websocket_connections",
			Help: "Open relayed WebSocket connections, by kind (socketio, websocket).",
		}, []string{"kind"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_websocket_upgrades_total",
			Help: "WebSocket upgrade requests, by outcome (accepted, upstream_failed, upstream_refused, origin_rejected, limit_rejected, draining, handshake_failed).",
		}, []string{"outcome"}),
		framesUp: frames.WithLabelValues(dirUp), framesDown: frames.WithLabelValues(dirDown),
		bytesUp: bytes.WithLabelValues(dirUp), bytesDown: bytes.WithLabelValues(dirDown),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_socketio_events_total",
			Help: "Socket.IO events from clients, by event name (configured names; any other is \"other\").",
		}, []string{"event"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_socketio_event_rejections_total",
			Help: "Socket.IO events not forwarded, by event and reason (rate_limited, auth, namespaces).",
		}, []string{"event", "reason"}),
		forced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_websocket_forced_disconnects_total",
			Help: "Sockets chatguard disconnected, by reason (expired, capacity, emergency, admin, drain, idle, auth, socket_limit, malformed, write_stalled, read_stalled, ip_blocked, namespaces).",
		}, []string{"reason"}),
		closeCodes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_websocket_close_codes_total",
			Help: "WebSocket closes, by the side that closed first (client, upstream, chatguard) and close code (1000-1015, 3000-3999 as \"3xxx\", 4000-4999 as \"4xxx\", \"invalid\" for any other, \"none\" when the connection dropped).",
		}, []string{"side", "code"}),
		orphans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_socketio_orphans_total",
			Help: "Inconsistencies fixed by the periodic check: connectedUsers entries without a live socket (stale_entry), live sockets without an entry (unlisted_socket).",
		}, []string{"kind"}),
		pollSessions: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chatguard_socketio_polling_sessions",
			Help: "Engine.IO long-polling sessions chatguard is following.",
		}, pollSessions),
		readers: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chatguard_websocket_relay_readers",
			Help: "Directions of relayed WebSockets (two per socket) with a goroutine reading now; an idle direction waits for its socket in the readiness poller without one.",
		}, readers),
		sleeping: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatguard_websocket_sleeping",
			Help: "Relayed WebSockets asleep: idle for 2 s on both sides, they hold their sockets but no library connection (and no buffers).",
		}),
		wakes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatguard_websocket_wakes_total",
			Help: "Sleeping WebSockets woken: for a message or a ping either way, a message chatguard sends, or to be closed (drain, eviction).",
		}),
		recoveryRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatguard_socketio_recoveries_refused_total",
			Help: "Socket.IO CONNECTs that asked to recover a socket chatguard had admitted for another user or namespace: sent on without the recovery fields, so the backend connected a new socket on the new token.",
		}),
	}
	for _, c := range []prometheus.Collector{m.open, m.outcomes, frames, bytes, m.events, m.rejections, m.forced, m.closeCodes, m.orphans, m.pollSessions, m.readers, m.sleeping, m.wakes, m.recoveryRefused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("proxy: register websocket metrics: %w", err)
		}
	}
	// Children made up front: a rate() over a series that appears only at
	// the first incident misses that incident.
	for _, k := range []string{kindSocketIO, kindWebSocket} {
		m.open.WithLabelValues(k)
	}
	for _, o := range []string{outcomeAccepted, outcomeUpstreamFailed, outcomeUpstreamRefuse, outcomeOrigin, outcomeLimited, outcomeDraining, outcomeHandshake} {
		m.outcomes.WithLabelValues(o)
	}
	for _, r := range []string{"expired", "capacity", "emergency", "admin", "drain", "idle", "auth", "socket_limit", "write_stalled", "read_stalled", "malformed", "ip_blocked", "namespaces"} {
		m.forced.WithLabelValues(r)
	}
	for _, side := range []string{sideClient, sideUpstream, sideChatguard} {
		m.closeCodes.WithLabelValues(side, "1000")
	}
	m.events.WithLabelValues("other")
	m.rejections.WithLabelValues("other", "rate_limited")
	m.orphans.WithLabelValues("stale_entry")
	m.orphans.WithLabelValues("unlisted_socket")
	return m, nil
}

// closeCodeLabel bounds the code label: the registered codes, one bucket
// for applications' private codes, and "none" for a dropped connection.
func closeCodeLabel(c websocket.StatusCode) string {
	switch {
	case c < 0:
		return "none"
	case c >= 1000 && c <= 1015:
		return strconv.Itoa(int(c))
	case c >= 3000 && c <= 3999:
		return "3xxx"
	case c >= 4000 && c <= 4999:
		return "4xxx"
	}
	return "invalid"
}
