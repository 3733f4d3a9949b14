package main

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// reloadMetrics say whether the running configuration is the file's: a
// refused reload leaves the old one running while the file (a ConfigMap)
// holds one that serve would refuse at the next restart, as Traefik's and
// ingress-nginx's last-reload-successful gauges say.
type reloadMetrics struct {
	ok      prometheus.Gauge
	lastOK  prometheus.Gauge
	reloads *prometheus.CounterVec
}

func newReloadMetrics(reg prometheus.Registerer, now time.Time) (*reloadMetrics, error) {
	m := &reloadMetrics{
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatguard_config_last_reload_successful",
			Help: "1 when the last configuration reload (SIGHUP, a change of the file or of the JWT key file) was applied, or none was tried; 0 when it was refused and an older configuration runs.",
		}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatguard_config_last_reload_success_timestamp_seconds",
			Help: "Unix time the running configuration was loaded (start, or the last applied reload).",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatguard_config_reloads_total",
			Help: "Configuration reloads tried, by result (success, failure).",
		}, []string{"result"}),
	}
	m.ok.Set(1)
	m.lastOK.Set(float64(now.UnixNano()) / 1e9)
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	for _, c := range []prometheus.Collector{m.ok, m.lastOK, m.reloads} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register reload metrics: %w", err)
		}
	}
	return m, nil
}

// record counts a reload's result.
func (m *reloadMetrics) record(applied bool, now time.Time) {
	if m == nil {
		return
	}
	if applied {
		m.ok.Set(1)
		m.lastOK.Set(float64(now.UnixNano()) / 1e9)
		m.reloads.WithLabelValues("success").Inc()
		return
	}
	m.ok.Set(0)
	m.reloads.WithLabelValues("failure").Inc()
}
