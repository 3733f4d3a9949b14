package sessions

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// StatsBlock is the seed's memoryManager block of /api/internal/stats.
func (m *Manager) StatsBlock() map[string]any {
	stats := m.Stats()
	maps := make(map[string]any, len(stats))
	var entries int
	var bytes int64
	for _, s := range stats {
		entries += s.Size
		bytes += s.Bytes
		ev := make(map[string]uint64, numReasons)
		for _, r := range Reasons() {
			ev[r.String()] = s.Evictions[r]
		}
		maps[s.Name] = map[string]any{
			"size":        s.Size,
			"maxEntries":  s.Capacity,
			"ttlSeconds":  s.TTL.Seconds(),
			"hits":        s.Hits,
			"misses":      s.Misses,
			"hitRate":     fmt.Sprintf("%.1f%%", 100*s.HitRate()),
			"evictions":   ev,
			"memoryUsage": s.Bytes,
		}
	}
	return map[string]any{
		"global": map[string]any{
			"totalMaps":     len(stats),
			"totalEntries":  entries,
			"memoryUsage":   bytes,
			"cleanupCycles": m.CleanupCycles(),
		},
		"maps": maps,
	}
}

// Collector exports every table's figures at scrape time, so that the
// tables' hot paths never touch a metric.
func (m *Manager) Collector() prometheus.Collector { return collector{m} }

var (
	descEntries   = prometheus.NewDesc("chatguard_table_entries", "Entries in a managed table.", []string{"table"}, nil)
	descCapacity  = prometheus.NewDesc("chatguard_table_capacity", "Maximum entries of a managed table.", []string{"table"}, nil)
	descBytes     = prometheus.NewDesc("chatguard_table_bytes", "Estimated memory a managed table holds.", []string{"table"}, nil)
	descHits      = prometheus.NewDesc("chatguard_table_hits_total", "Lookups that found a live entry.", []string{"table"}, nil)
	descMisses    = prometheus.NewDesc("chatguard_table_misses_total", "Lookups that found nothing (or an expired entry).", []string{"table"}, nil)
	descEvictions = prometheus.NewDesc("chatguard_table_evictions_total", "Entries that left a table, by reason (expired, capacity, manual, emergency, shutdown).", []string{"table", "reason"}, nil)
	descCycles    = prometheus.NewDesc("chatguard_cleanup_cycles_total", "Global sweeps of expired entries.", nil, nil)
)

type collector struct{ m *Manager }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEntries, descCapacity, descBytes, descHits, descMisses, descEvictions, descCycles} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.m.Stats() {
		ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(s.Size), s.Name)
		ch <- prometheus.MustNewConstMetric(descCapacity, prometheus.GaugeValue, float64(s.Capacity), s.Name)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(s.Bytes), s.Name)
		ch <- prometheus.MustNewConstMetric(descHits, prometheus.CounterValue, float64(s.Hits), s.Name)
		ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(s.Misses), s.Name)
		for _, r := range Reasons() {
			ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(s.Evictions[r]), s.Name, r.String())
		}
	}
	ch <- prometheus.MustNewConstMetric(descCycles, prometheus.CounterValue, float64(c.m.CleanupCycles()))
}
