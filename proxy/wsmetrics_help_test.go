package proxy

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Every reason, outcome and side a WebSocket metric is primed with is named
// in its HELP, which is what an SRE reads in /metrics: ip_blocked was
// missing from the forced disconnects' list.
func TestWebSocketMetricHelpNamesItsLabelValues(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := newWSMetrics(reg, func() float64 { return 0 }, func() float64 { return 0 }); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range fams {
		switch f.GetName() {
		case "chatguard_websocket_forced_disconnects_total", "chatguard_websocket_upgrades_total", "chatguard_websocket_close_codes_total":
		default:
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				checked++
				if !strings.Contains(f.GetHelp(), l.GetValue()) {
					t.Errorf("%s: HELP %q does not name %s=%q", f.GetName(), f.GetHelp(), l.GetName(), l.GetValue())
				}
			}
		}
	}
	if checked < 15 {
		t.Fatalf("checked %d label values; the metrics were renamed?", checked)
	}
	if h := closeCodeHelp(fams); !strings.Contains(h, "3xxx") || !strings.Contains(h, "invalid") {
		t.Errorf("close codes' HELP %q does not name 3xxx and invalid", h)
	}
}

func closeCodeHelp(fams []*dto.MetricFamily) string {
	for _, f := range fams {
		if f.GetName() == "chatguard_websocket_close_codes_total" {
			return f.GetHelp()
		}
	}
	return ""
}
