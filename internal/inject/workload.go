package inject

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// workloadKind says where a kind keeps its pod template.
type workloadKind struct {
	group    string   // API group ("" = core)
	template []string // path to the pod template; nil = the object is the pod
}

var workloadKinds = map[string]workloadKind{
	"Pod":         {group: ""},
	"Deployment":  {group: "apps", template: []string{"spec", "template"}},
	"StatefulSet": {group: "apps", template: []string{"spec", "template"}},
	"DaemonSet":   {group: "apps", template: []string{"spec", "template"}},
	"ReplicaSet":  {group: "apps", template: []string{"spec", "template"}},
	"Job":         {group: "batch", template: []string{"spec", "template"}},
	"CronJob":     {group: "batch", template: []string{"spec", "jobTemplate", "spec", "template"}},
}

// workloadKindOf reports where obj keeps its pod template, if it is a workload.
func workloadKindOf(obj map[string]any) (workloadKind, bool) {
	wk, ok := workloadKinds[str(obj, "kind")]
	if !ok {
		return wk, false
	}
	group, _, found := strings.Cut(str(obj, "apiVersion"), "/")
	if !found {
		group = "" // "v1": the core group
	}
	return wk, group == wk.group // a Deployment of another API group is someone else's
}

// podTemplate is a workload's pod template, or a Pod, opened for editing.
type podTemplate struct {
	obj    map[string]any // the workload
	parent map[string]any // the pod template: holds metadata and spec (obj, for a Pod)
	spec   map[string]any
	typed  corev1.PodSpec // spec, decoded for reading
}

func openPodTemplate(obj map[string]any, wk workloadKind) (*podTemplate, error) {
	pt := &podTemplate{obj: obj, parent: obj}
	var err error
	if wk.template != nil {
		if pt.parent, err = path(obj, false, wk.template...); err != nil {
			return nil, err
		}
		if pt.parent == nil {
			return nil, fmt.Errorf("no pod template at %s", strings.Join(wk.template, "."))
		}
	}
	if pt.spec, err = child(pt.parent, "spec", false); err != nil {
		return nil, err
	}
	if pt.spec == nil {
		return nil, fmt.Errorf("no pod spec")
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(pt.spec, &pt.typed); err != nil {
		return nil, fmt.Errorf("pod spec: %w", explain(pt.spec, err))
	}
	if len(pt.typed.Containers) == 0 {
		return nil, fmt.Errorf("pod spec has no containers")
	}
	for _, key := range []string{"containers", "initContainers", "volumes"} {
		l, _ := list(pt.spec, key) // decoded without error above
		for i, v := range l {
			if _, ok := v.(map[string]any); !ok {
				return nil, fmt.Errorf("pod spec: %s[%d]: want an object, have %s", key, i, typeName(v))
			}
		}
	}
	if _, err := pt.annotations(false); err != nil {
		return nil, err
	}
	if _, err := annotationsOf(obj, false); err != nil {
		return nil, err
	}
	return pt, nil
}

// explain replaces the converter's terse error ("cannot restore slice from
// string") with encoding/json's, which names the field, when it has one.
func explain(spec map[string]any, err error) error {
	j, jerr := json.Marshal(spec)
	if jerr != nil {
		return err
	}
	if jerr = json.Unmarshal(j, new(corev1.PodSpec)); jerr != nil {
		return jerr
	}
	return err
}

// annotations are the pod template's annotations; nil when there are none
// and create is false.
func (pt *podTemplate) annotations(create bool) (map[string]any, error) {
	a, err := annotationsOf(pt.parent, create)
	if err != nil {
		return nil, fmt.Errorf("pod template %w", err)
	}
	return a, nil
}

// annotationsOf returns obj's metadata.annotations.
func annotationsOf(obj map[string]any, create bool) (map[string]any, error) {
	a, err := path(obj, create, "metadata", "annotations")
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	return a, nil
}

// dropEmptyAnnotations removes obj's annotations, and then its metadata,
// when uninject left them empty.
func dropEmptyAnnotations(obj map[string]any) {
	if meta, ok := obj["metadata"].(map[string]any); ok {
		pruneEmpty(meta, "annotations")
		pruneEmpty(obj, "metadata")
	}
}

func (pt *podTemplate) injected() bool {
	a, _ := pt.annotations(false) // checked by openPodTemplate
	_, ok := a[AnnotationInjected]
	return ok
}

// appPort is the port chatguard forwards to, and the container that serves it.
type appPort struct {
	container int    // index in spec.containers
	port      int    // the upstream port
	name      string // its containerPort name, if declared
	declared  bool   // a container declares the port
	named     bool   // the default-container annotation names the app
}

// AnnotationDefaultContainer names a pod's main container (kubectl's own
// convention): the app, when the pod has several.
const AnnotationDefaultContainer = "kubectl.kubernetes.io/default-container"

// findApp picks the app: the upstream port is what an injected sidecar
// forwards to, else o.UpstreamPort, else the first containerPort of the app
// container (the one the pod's default-container annotation names, else
// the first), else 3000. When the first container (no annotation) declares
// no port but another declares 3000 (a log shipper listed before the app),
// the app is that one. The app container is the one declaring the upstream
// port, else that first (or named) one. No other container's port is ever
// taken for the app's: guessing wrong would send the traffic to a metrics
// exporter; inject warns instead (see appPort.guessed).
func (pt *podTemplate) findApp(o Options) appPort {
	cs := pt.typed.Containers
	first := -1
	named := false
	var defaultName string
	if ann, err := pt.annotations(false); err == nil {
		defaultName, _ = ann[AnnotationDefaultContainer].(string)
	}
	for i, c := range cs {
		if c.Name == containerName {
			continue
		}
		if first < 0 {
			first = i
		}
		if defaultName != "" && c.Name == defaultName {
			first, named = i, true
			break
		}
	}
	if first < 0 {
		first = 0
	}
	port := pt.sidecarUpstream() // an injected pod's upstream is what its sidecar forwards to
	if port == 0 {
		port = o.UpstreamPort
	}
	if port == 0 {
		port = DefaultUpstreamPort
		if ps := cs[first].Ports; len(ps) > 0 {
			port = int(ps[0].ContainerPort)
		}
	}
	if !named {
		for i, c := range cs {
			if c.Name == containerName {
				continue
			}
			for _, p := range c.Ports {
				if int(p.ContainerPort) == port {
					return appPort{container: i, port: port, name: p.Name, declared: true}
				}
			}
		}
	}
	app := appPort{container: first, port: port, named: named}
	for _, p := range cs[first].Ports {
		if int(p.ContainerPort) == port {
			app.name, app.declared = p.Name, true
		}
	}
	return app
}

// appContainers counts the containers other than chatguard.
func (pt *podTemplate) appContainers() (n int) {
	for _, c := range pt.typed.Containers {
		if c.Name != containerName {
			n++
		}
	}
	return n
}

// sidecarUpstream is the port an injected chatguard forwards to, or 0.
func (pt *podTemplate) sidecarUpstream() int {
	all := append(append([]corev1.Container{}, pt.typed.InitContainers...), pt.typed.Containers...)
	for _, c := range all {
		if c.Name != containerName {
			continue
		}
		for _, e := range c.Env {
			if e.Name != "CHATGUARD_UPSTREAM" {
				continue
			}
			if u, err := url.Parse(e.Value); err == nil {
				if p, err := strconv.Atoi(u.Port()); err == nil && p > 0 && p <= 65535 {
					return p
				}
			}
		}
	}
	return 0
}

// checkConflicts refuses a pod that already has something chatguard would
// add, under chatguard's names or on its ports.
func (pt *podTemplate) checkConflicts() error {
	all := append(append([]corev1.Container{}, pt.typed.InitContainers...), pt.typed.Containers...)
	names := make([]string, 0, len(all)+len(pt.typed.EphemeralContainers))
	for _, c := range all {
		names = append(names, c.Name)
	}
	for _, c := range pt.typed.EphemeralContainers {
		names = append(names, c.Name)
	}
	if slices.Contains(names, containerName) {
		return fmt.Errorf("a container is already named %q, but the pod template lacks the %s annotation", containerName, AnnotationInjected)
	}
	if pt.typed.HostNetwork {
		return fmt.Errorf("hostNetwork: chatguard would listen on the node's own ports %d and %d (admin), shared by every such pod on the node; run the pod without hostNetwork, or chatguard as a gateway in front of it",
			publicPort, adminPort)
	}
	for _, c := range all {
		for _, p := range c.Ports {
			if isChatguardPort(int(p.ContainerPort)) || p.Name == publicPortName || p.Name == adminPortName {
				return fmt.Errorf("container %q declares port %d %q, which chatguard needs (%d %q, %d %q)",
					c.Name, p.ContainerPort, p.Name, publicPort, publicPortName, adminPort, adminPortName)
			}
		}
	}
	for _, v := range pt.typed.Volumes {
		if v.Name == dataVolume || v.Name == configVolume {
			return fmt.Errorf("a volume is already named %q", v.Name)
		}
	}
	return nil
}

// labels are the pod template's labels.
func (pt *podTemplate) labels() (map[string]string, error) {
	meta, err := child(pt.parent, "metadata", false)
	if err != nil {
		return nil, fmt.Errorf("pod template: %w", err)
	}
	l, err := stringMap(meta, "labels")
	if err != nil {
		return nil, fmt.Errorf("pod template metadata: %w", err)
	}
	return l, nil
}
