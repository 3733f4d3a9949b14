// Package monitoring_test checks deploy/monitoring offline: every object
// decodes strictly into its Prometheus Operator or k8s.io/api type, the
// generated files equal their sources (prometheusrule.yaml is rules.yaml,
// the dashboard ConfigMap is the dashboard JSON), the monitors scrape the
// port the manifests under deploy/kubernetes declare, every alert is
// labelled, documented and unit-tested, and the dashboard is well formed.
// promtool itself runs from `make test-monitoring`; the drift test in
// cmd/chatguard checks the metric names against the binary.
package monitoring_test

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite prometheusrule.yaml and grafana/dashboard-configmap.yaml from their sources")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The contract's names (/tmp/deploy-contract.md, DESIGN.md).
const (
	adminPortName   = "chatguard-admin"
	adminPort       = 9090
	containerName   = "chatguard"
	metricsPath     = "/metrics"
	gatewayJob      = "chatguard-gateway"
	sidecarJob      = "chatguard-sidecar"
	releaseLabel    = "release"
	kubernetesDir   = "../kubernetes"
	rulesFile       = "rules.yaml"
	ruleCRDFile     = "prometheusrule.yaml"
	ruleTestsFile   = "prometheusrule.test.yaml"
	dashboardFile   = "grafana/chatguard-dashboard.json"
	configMapFile   = "grafana/dashboard-configmap.yaml"
	dashboardKey    = "chatguard-dashboard.json"
	configMapMarker = "  " + dashboardKey + ": |"
)

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeStrict decodes one YAML document, refusing unknown and duplicate fields.
func decodeStrict(t *testing.T, path string, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(read(t, path), into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// checkGenerated compares path with its generated form: the file up to and
// including the line marker, then body indented by indent (empty lines stay
// empty). With -update it writes that form instead.
func checkGenerated(t *testing.T, path, marker, indent string, body []byte) {
	t.Helper()
	old := read(t, path)
	i := bytes.Index(old, []byte("\n"+marker+"\n"))
	if i < 0 {
		t.Fatalf("%s: no line %q", path, marker)
	}
	var want bytes.Buffer
	want.Write(old[:i+len(marker)+2])
	for _, line := range bytes.SplitAfter(body, []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			want.WriteString(indent)
		}
		want.Write(line)
	}
	if bytes.Equal(old, want.Bytes()) {
		return
	}
	if *update {
		if err := os.WriteFile(path, want.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", path)
		return
	}
	t.Errorf("%s is not its source, regenerated: run go test ./deploy/monitoring/ -run '%s' -update", path, t.Name())
}

// rulesBody is rules.yaml without its leading comment block (which speaks
// of rules.yaml itself).
func rulesBody(t *testing.T) []byte {
	b := read(t, rulesFile)
	for len(b) > 0 && (b[0] == '#' || b[0] == '\n') {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			return nil
		}
		b = b[nl+1:]
	}
	return b
}

// The PrometheusRule is generated from rules.yaml, and both decode into the
// same spec.
func TestPrometheusRuleIsRulesYAML(t *testing.T) {
	t.Parallel()
	checkGenerated(t, ruleCRDFile, "spec:", "  ", rulesBody(t))

	var pr monitoringv1.PrometheusRule
	decodeStrict(t, ruleCRDFile, &pr)
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != monitoringv1.PrometheusRuleKind {
		t.Errorf("%s: %s %s", ruleCRDFile, pr.APIVersion, pr.Kind)
	}
	if pr.Labels[releaseLabel] == "" {
		t.Errorf("%s: no %s label: kube-prometheus-stack's ruleSelector would not pick it up", ruleCRDFile, releaseLabel)
	}
	spec := loadRules(t)
	a, _ := yaml.Marshal(pr.Spec)
	b, _ := yaml.Marshal(spec)
	if !bytes.Equal(a, b) {
		t.Errorf("%s's spec and %s decode differently", ruleCRDFile, rulesFile)
	}
}

// checkMonitorKind: a Prometheus Operator object of kind want, with the
// release label its Prometheus selects.
func checkMonitorKind(t *testing.T, file, apiVersion, kind, want string, labels map[string]string) {
	t.Helper()
	if apiVersion != "monitoring.coreos.com/v1" || kind != want {
		t.Errorf("%s: %s %s", file, apiVersion, kind)
	}
	if labels[releaseLabel] == "" {
		t.Errorf("%s: no %s label", file, releaseLabel)
	}
}

func TestServiceMonitor(t *testing.T) {
	t.Parallel()
	var sm monitoringv1.ServiceMonitor
	decodeStrict(t, "servicemonitor.yaml", &sm)
	checkMonitorKind(t, "servicemonitor.yaml", sm.APIVersion, sm.Kind, monitoringv1.ServiceMonitorsKind, sm.Labels)
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("servicemonitor.yaml: %d endpoints, want 1", len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != adminPortName || ep.Path != metricsPath {
		t.Errorf("servicemonitor.yaml scrapes port %q path %q, want %q %q", ep.Port, ep.Path, adminPortName, metricsPath)
	}
	checkJob(t, "servicemonitor.yaml", ep.RelabelConfigs, gatewayJob)

	// The Services it selects (deploy/kubernetes/gateway) carry the admin
	// port, and their pods declare it.
	sel := selector(t, sm.Spec.Selector)
	objs := manifests(t, filepath.Join(kubernetesDir, "gateway"))
	var matched int
	for _, svc := range objs.services {
		if !sel.Matches(labels.Set(svc.Labels)) || !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
			continue
		}
		matched++
		i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == adminPortName })
		if i < 0 {
			t.Errorf("Service %s is selected but has no port %s", svc.Name, adminPortName)
			continue
		}
		if tp := svc.Spec.Ports[i].TargetPort; tp.String() != adminPortName && tp.IntValue() != adminPort {
			t.Errorf("Service %s: port %s targets %s", svc.Name, adminPortName, tp.String())
		}
		backed := false
		for _, d := range objs.deployments {
			if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
				backed = true
				checkAdminPort(t, d)
			}
		}
		if !backed {
			t.Errorf("Service %s selects no Deployment's pods", svc.Name)
		}
	}
	if matched == 0 {
		t.Errorf("servicemonitor.yaml selects no Service in %s/gateway", kubernetesDir)
	}
}

func TestPodMonitor(t *testing.T) {
	t.Parallel()
	var pm monitoringv1.PodMonitor
	decodeStrict(t, "podmonitor.yaml", &pm)
	checkMonitorKind(t, "podmonitor.yaml", pm.APIVersion, pm.Kind, monitoringv1.PodMonitorsKind, pm.Labels)
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("podmonitor.yaml: %d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ep.Port == nil || *ep.Port != adminPortName || ep.Path != metricsPath {
		t.Errorf("podmonitor.yaml scrapes port %v path %q, want %q %q", ep.Port, ep.Path, adminPortName, metricsPath)
	}
	checkJob(t, "podmonitor.yaml", ep.RelabelConfigs, sidecarJob)

	sel := selector(t, pm.Spec.Selector)
	selects := func(d *appsv1.Deployment) bool {
		return sel.Matches(labels.Set(d.Spec.Template.Labels)) && slices.Contains(pm.Spec.NamespaceSelector.MatchNames, d.Namespace)
	}
	// Both sidecar forms are scraped...
	side := manifests(t, filepath.Join(kubernetesDir, "sidecar"))
	if len(side.deployments) == 0 {
		t.Fatalf("no Deployment in %s/sidecar", kubernetesDir)
	}
	for _, d := range side.deployments {
		if !selects(d) {
			t.Errorf("podmonitor.yaml does not select Deployment %s's pods", d.Name)
		}
		checkAdminPort(t, d)
	}
	// ...and the gateway's pods are not: the ServiceMonitor has them, and
	// twice scraped is every series twice.
	for _, d := range manifests(t, filepath.Join(kubernetesDir, "gateway")).deployments {
		if selects(d) && chatguardContainer(d) != nil {
			t.Errorf("podmonitor.yaml also selects the gateway Deployment %s", d.Name)
		}
	}
}

// The jobs the monitors set are the ones the rules select.
func checkJob(t *testing.T, file string, relabel []monitoringv1.RelabelConfig, job string) {
	t.Helper()
	i := slices.IndexFunc(relabel, func(r monitoringv1.RelabelConfig) bool { return r.TargetLabel == "job" })
	if i < 0 || relabel[i].Replacement == nil || *relabel[i].Replacement != job {
		t.Errorf("%s: no relabeling that sets job to %s", file, job)
	}
	if !bytes.Contains(read(t, rulesFile), []byte(job)) {
		t.Errorf("%s does not select job %s (set by %s)", rulesFile, job, file)
	}
}

// checkAdminPort: the pod's chatguard container declares the admin port, and
// the prometheus.io annotations (annotations.md) agree with it.
func checkAdminPort(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	c := chatguardContainer(d)
	if c == nil {
		t.Errorf("Deployment %s: no container %s", d.Name, containerName)
		return
	}
	i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == adminPortName })
	if i < 0 || c.Ports[i].ContainerPort != adminPort {
		t.Errorf("Deployment %s: container %s lacks port %s (%d)", d.Name, containerName, adminPortName, adminPort)
	}
	for k, v := range scrapeAnnotations {
		if got := d.Spec.Template.Annotations[k]; got != v {
			t.Errorf("Deployment %s: pod annotation %s = %q, want %q", d.Name, k, got, v)
		}
	}
}

// The pod annotations for annotation-based scraping (annotations.md).
var scrapeAnnotations = map[string]string{
	"prometheus.io/scrape": "true",
	"prometheus.io/port":   strconv.Itoa(adminPort),
	"prometheus.io/path":   metricsPath,
}

func TestAnnotationsDoc(t *testing.T) {
	t.Parallel()
	notes := string(read(t, "annotations.md"))
	for k, v := range scrapeAnnotations {
		if line := fmt.Sprintf("%s: %s", k, v); !strings.Contains(notes, line) && !strings.Contains(notes, fmt.Sprintf("%s: %q", k, v)) {
			t.Errorf("annotations.md does not show %s", line)
		}
	}
}

func chatguardContainer(d *appsv1.Deployment) *corev1.Container {
	spec := &d.Spec.Template.Spec
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			if cs[i].Name == containerName {
				return &cs[i]
			}
		}
	}
	return nil
}

func selector(t *testing.T, s metav1.LabelSelector) labels.Selector {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(&s)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() {
		t.Fatal("an empty selector selects everything")
	}
	return sel
}

type objects struct {
	services    []*corev1.Service
	deployments []*appsv1.Deployment
}

// manifests reads the Services and Deployments of one manifest directory
// (deploy/kubernetes/kubernetes_test.go checks those files in full).
func manifests(t *testing.T, dir string) objects {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	var out objects
	for _, f := range files {
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(read(t, f))))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			switch tm.APIVersion + " " + tm.Kind {
			case "v1 Service":
				svc := new(corev1.Service)
				if err := yaml.UnmarshalStrict(doc, svc); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				out.services = append(out.services, svc)
			case "apps/v1 Deployment":
				d := new(appsv1.Deployment)
				if err := yaml.UnmarshalStrict(doc, d); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				out.deployments = append(out.deployments, d)
			}
		}
	}
	return out
}

// kustomization.yaml lists exactly the Kubernetes objects of this directory.
func TestKustomization(t *testing.T) {
	t.Parallel()
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	decodeStrict(t, "kustomization.yaml", &k)
	if k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: kind %q", k.Kind)
	}
	var want []string
	for _, pattern := range []string{"*.yaml", "grafana/*.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			switch f {
			case "kustomization.yaml", rulesFile, ruleTestsFile: // not Kubernetes objects
			default:
				want = append(want, f)
			}
		}
	}
	slices.Sort(want)
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml lists %v, the directory has %v", got, want)
	}
}
