package monitoring_test

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

const (
	readmeFile    = "../../README.md"
	runbookPrefix = "https://github.com/chatguard/chatguard/blob/main/README.md#"
)

var severities = []string{"warning", "critical"}

// loadRules decodes rules.yaml strictly: it is a PrometheusRule's spec.
func loadRules(t *testing.T) monitoringv1.PrometheusRuleSpec {
	t.Helper()
	var spec monitoringv1.PrometheusRuleSpec
	decodeStrict(t, rulesFile, &spec)
	if len(spec.Groups) == 0 {
		t.Fatalf("%s: no groups", rulesFile)
	}
	return spec
}

// Every alert has a severity, a summary, a description and a runbook that
// exists: a heading of the README's Runbooks section.
func TestAlertsAreLabelledAndDocumented(t *testing.T) {
	t.Parallel()
	anchors := runbookAnchors(t)
	seen := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			name := fmt.Sprintf("%s (%s)", r.Alert, r.Labels["severity"])
			if sev := r.Labels["severity"]; !slices.Contains(severities, sev) {
				t.Errorf("%s: severity %q, want one of %v", r.Alert, sev, severities)
			}
			if seen[name] {
				t.Errorf("%s: twice", name)
			}
			seen[name] = true
			for _, k := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[k]) == "" {
					t.Errorf("%s: no %s annotation", name, k)
				}
			}
			url := r.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(url, runbookPrefix)
			if !ok {
				t.Errorf("%s: runbook_url %q is not in %s", name, url, runbookPrefix)
				continue
			}
			if !anchors[anchor] {
				t.Errorf("%s: runbook_url anchor #%s is no heading of the README's Runbooks section (it has %v)", name, anchor, slices.Sorted(maps.Keys(anchors)))
			}
			if r.Expr.String() == "" {
				t.Errorf("%s: no expr", name)
			}
		}
	}
	if len(seen) == 0 {
		t.Fatal("no alerts")
	}
}

// runbookAnchors returns the GitHub anchors of the README's "Runbooks"
// section and the headings under it.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	used := map[string]int{}
	inRunbooks, fence := false, ""
	sc := bufio.NewScanner(bytes.NewReader(read(t, readmeFile)))
	for sc.Scan() {
		line := sc.Text()
		if trimmed := strings.TrimLeft(line, " "); strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			switch {
			case fence == "":
				fence = trimmed[:3]
			case strings.HasPrefix(trimmed, fence):
				fence = ""
			}
			continue
		}
		if fence != "" {
			continue
		}
		m := headingRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		level, slug := len(m[1]), githubSlug(m[2])
		if n := used[slug]; n > 0 {
			used[slug]++
			slug = fmt.Sprintf("%s-%d", slug, n)
		} else {
			used[slug] = 1
		}
		if level <= 2 {
			inRunbooks = strings.EqualFold(strings.TrimSpace(m[2]), "Runbooks")
		}
		if inRunbooks {
			out[slug] = true
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no Runbooks section", readmeFile)
	}
	return out
}

var (
	headingRE = regexp.MustCompile(`^(#{1,6})\s+(.+?)\s*#*\s*$`)
	linkRE    = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
)

// githubSlug is the anchor GitHub gives a heading: its text, lower case,
// without punctuation other than '-' and '_', spaces as '-'.
func githubSlug(heading string) string {
	text := linkRE.ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestGitHubSlug(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Runbooks": "runbooks",
		"Memory: bounded tables and the watchdog":    "memory-bounded-tables-and-the-watchdog",
		"Upstream errors (502/504 spike)":            "upstream-errors-502504-spike",
		"chatguard down or not ready":                "chatguard-down-or-not-ready",
		"Rate-limit abuse and blocked IPs":           "rate-limit-abuse-and-blocked-ips",
		"`GET /metrics` and [the stats](#admin)":     "get-metrics-and-the-stats",
		"WebSockets and Socket.IO":                   "websockets-and-socketio",
		"Configuration precedence — flags > env":     "configuration-precedence--flags--env",
		"Too many connected users (40,000 / 50,000)": "too-many-connected-users-40000--50000",
	} {
		if got := githubSlug(in); got != want {
			t.Errorf("githubSlug(%q) = %q, want %q", in, got, want)
		}
	}
}

// promtool's unit-test file, as much of it as the checks below read.
type ruleTests struct {
	RuleFiles          []string `json:"rule_files"`
	EvaluationInterval string   `json:"evaluation_interval"`
	Tests              []struct {
		Interval    string `json:"interval"`
		InputSeries []struct {
			Series string `json:"series"`
			Values string `json:"values"`
		} `json:"input_series"`
		AlertRuleTests []struct {
			EvalTime  string `json:"eval_time"`
			Alertname string `json:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `json:"exp_labels"`
				ExpAnnotations map[string]string `json:"exp_annotations"`
			} `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// Every alert is tested firing at each of its severities, and not firing.
// (promtool checks that the expectations hold; this checks they exist.)
func TestEveryAlertIsUnitTested(t *testing.T) {
	t.Parallel()
	var rt ruleTests
	decodeStrict(t, ruleTestsFile, &rt)
	if len(rt.RuleFiles) != 1 || rt.RuleFiles[0] != rulesFile {
		t.Errorf("%s tests %v, want [%s]", ruleTestsFile, rt.RuleFiles, rulesFile)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTests {
			if len(a.ExpAlerts) == 0 {
				quiet[a.Alertname] = true
			}
			for _, e := range a.ExpAlerts {
				fires[a.Alertname+" "+e.ExpLabels["severity"]] = true
			}
		}
	}
	alerts := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			if !fires[r.Alert+" "+r.Labels["severity"]] {
				t.Errorf("%s: no test where it fires with severity %s", r.Alert, r.Labels["severity"])
			}
		}
	}
	for a := range alerts {
		if !quiet[a] {
			t.Errorf("%s: no test where it does not fire", a)
		}
	}
	for a := range quiet {
		if !alerts[a] {
			t.Errorf("%s tests %s, which %s does not define", ruleTestsFile, a, rulesFile)
		}
	}
}
