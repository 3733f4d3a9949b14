// Package metrics builds the program's own Prometheus registry (never the
// global one) with the Go and process collectors and chatguard_build_info.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/chatguard/chatguard/internal/buildinfo"
)

// NewRegistry returns a registry holding the Go runtime, process and build-info collectors.
func NewRegistry(info buildinfo.Info) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "chatguard_build_info",
		Help: "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{
			"version": info.Version, "revision": info.Revision, "goversion": info.GoVersion,
		},
	})
	bi.Set(1)
	reg.MustRegister(bi)
	return reg
}
