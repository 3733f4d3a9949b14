package inject

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// inject adds the sidecar to an opened pod template. A template that is
// already injected is left exactly as it is (with a warning when it is in
// the other form than an explicit o.Mode, which would otherwise pass for
// done); one
// marked injected whose chatguard container is gone (edited away, renamed)
// is an error, not a pod that silently never gets chatguard.
func (pt *podTemplate) inject(o Options) (warnings []string, err error) {
	if pt.injected() {
		if !pt.hasSidecar() {
			return nil, fmt.Errorf("the pod is annotated %s but has no %q container: run uninject on it first, or remove the annotation", AnnotationInjected, containerName)
		}
		if has := pt.sidecarMode(); o.modeAsked && has != o.Mode {
			return []string{fmt.Sprintf("chatguard is already injected as a %s sidecar, left as it is: to make it %s, uninject first, then inject with --mode %s", has, o.Mode, o.Mode)}, nil
		}
		return nil, nil
	}
	if err := pt.checkConflicts(); err != nil {
		return nil, err
	}
	ann, err := pt.annotations(true)
	if err != nil {
		return nil, err
	}
	var w []string
	o.replicas, w = pt.replicas(ann)
	warnings = append(warnings, w...)
	app := pt.findApp(o)
	if err := pt.addSidecar(o, app); err != nil {
		return nil, err
	}
	if !app.declared && !app.named && o.UpstreamPort == 0 && pt.appContainers() > 1 {
		warnings = append(warnings, fmt.Sprintf("several containers, and the first declares no containerPort: chatguard forwards to %d and the drain hook goes on container %q; "+
			"if the app is another one, annotate the pod %s: <app container> (or pass --upstream-port)",
			app.port, pt.typed.Containers[app.container].Name, AnnotationDefaultContainer))
	}
	w, err = pt.addDrainHook(app, ann)
	if err != nil {
		return nil, err
	}
	warnings = append(warnings, w...)
	if g := pt.typed.TerminationGracePeriodSeconds; g == nil || *g < minGracePeriod {
		ann[AnnotationOriginalGracePeriod] = graceUnset
		if g != nil {
			ann[AnnotationOriginalGracePeriod] = strconv.FormatInt(*g, 10)
		}
		pt.spec["terminationGracePeriodSeconds"] = int64(minGracePeriod)
	}
	warnings = append(warnings, addScrapeAnnotations(ann)...)
	if o.Mode == ModeClassic && pt.typed.RestartPolicy != "" && pt.typed.RestartPolicy != corev1.RestartPolicyAlways {
		warnings = append(warnings, fmt.Sprintf("restartPolicy %s with a classic sidecar: the pod keeps running after the app exits (use --mode=native)", pt.typed.RestartPolicy))
	}
	ann[AnnotationInjected] = injectedValue
	owner, err := annotationsOf(pt.obj, true)
	if err != nil {
		return nil, err
	}
	owner[AnnotationInjected] = injectedValue
	return warnings, nil
}

// addSidecar adds the container and its volumes.
func (pt *podTemplate) addSidecar(o Options, app appPort) error {
	c := toMap(new(sidecar(o, app.port)))
	key := "containers"
	if o.Mode == ModeNative {
		key = "initContainers"
	}
	l, err := list(pt.spec, key)
	if err != nil {
		return fmt.Errorf("pod spec: %w", err)
	}
	if o.Mode == ModeNative {
		l = append([]any{c}, l...) // first, so it is up before any other init container
	} else {
		l = append(l, c) // last, so the app stays the pod's default container
	}
	pt.spec[key] = l
	vs, err := list(pt.spec, "volumes")
	if err != nil {
		return fmt.Errorf("pod spec: %w", err)
	}
	for _, v := range volumes() {
		vs = append(vs, toMap(&v))
	}
	pt.spec["volumes"] = vs
	return nil
}

// addDrainHook gives the app container the preStop hook that drains chatguard
// first, unless it has a preStop hook of its own.
func (pt *podTemplate) addDrainHook(app appPort, ann map[string]any) ([]string, error) {
	name := pt.typed.Containers[app.container].Name
	if lc := pt.typed.Containers[app.container].Lifecycle; lc != nil && lc.PreStop != nil {
		return []string{fmt.Sprintf("container %q has a preStop hook of its own, left as it is: "+
			"make it POST http://127.0.0.1:%d/drain and wait for the answer, so that chatguard drains before the app stops", name, adminPort)}, nil
	}
	cs, err := list(pt.spec, "containers")
	if err != nil {
		return nil, fmt.Errorf("pod spec: %w", err)
	}
	c, _ := cs[app.container].(map[string]any) // FromUnstructured accepted it: an object
	lc, err := child(c, "lifecycle", true)
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", name, err)
	}
	lc["preStop"] = toMap(drainHook(nodeFor(pt.typed.Containers[app.container])))
	ann[AnnotationDrainHook] = name
	return nil, nil
}

// addScrapeAnnotations adds the prometheus.io annotations, unless the pod
// already has some: they name one port per pod, and that one is the owner's.
func addScrapeAnnotations(ann map[string]any) []string {
	for k := range ann {
		if strings.HasPrefix(k, "prometheus.io/") {
			return []string{"the pod template has prometheus.io annotations already, left as they are: " +
				"scrape chatguard's port " + adminPortName + " with the PodMonitor instead"}
		}
	}
	keys := make([]string, 0, len(scrapeAnnotations))
	for k, v := range scrapeAnnotations {
		ann[k] = v
		keys = append(keys, k)
	}
	slices.Sort(keys)
	ann[AnnotationAddedAnnotations] = strings.Join(keys, ",")
	return nil
}

// replicas is the number of pods sharing the rate limits, for
// CHATGUARD_REPLICAS: while Redis is down each enforces its share of every
// limit, so with 1 (the default) each of N pods would admit the whole
// limit, N times it in all. The pod template's chatguard.io/replicas, else
// the workload's spec.replicas (1 when unset, as Kubernetes reads it). A
// value that is not a number of pods is a warning, never an error: the
// webhook would admit the pod without chatguard at all.
func (pt *podTemplate) replicas(ann map[string]any) (int, []string) {
	var warnings []string
	if v, ok := ann[AnnotationReplicas]; ok {
		s, _ := v.(string)
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err == nil && n >= 1 && n <= maxReplicas {
			return n, nil
		}
		warnings = append(warnings, fmt.Sprintf("annotation %s: %q is not a number of pods (1-%d, quoted): ignored", AnnotationReplicas, fmt.Sprint(v), maxReplicas))
	}
	switch str(pt.obj, "kind") {
	case "Deployment", "StatefulSet", "ReplicaSet":
		spec, _ := pt.obj["spec"].(map[string]any)
		if _, set := spec["replicas"]; !set {
			// Left out, as Kubernetes advises when an autoscaler owns the
			// count: the webhook warned here and the command did not (QA).
			return 1, append(warnings, fmt.Sprintf("no spec.replicas (an autoscaler's count?): CHATGUARD_REPLICAS is 1 and each pod enforces the whole of every limit while Redis is down; "+
				"annotate the pod template %s with the most pods there will be", AnnotationReplicas))
		}
		n := 1
		switch v := spec["replicas"].(type) {
		case int64:
			n = int(min(v, maxReplicas+1))
		case float64:
			n = int(min(v, maxReplicas+1))
		}
		if n <= 1 {
			return 1, warnings
		}
		if n > maxReplicas {
			n = maxReplicas
		}
		return n, append(warnings, fmt.Sprintf("CHATGUARD_REPLICAS=%d, from spec.replicas (while Redis is down each pod enforces 1/%d of every limit): "+
			"if an autoscaler or kubectl scale changes the count, annotate the pod template %s with the most pods there will be (and inject again: uninject first)", n, n, AnnotationReplicas))
	case "DaemonSet":
		return 1, append(warnings, fmt.Sprintf("a DaemonSet runs a pod per node, each enforcing the whole of every limit while Redis is down: "+
			"annotate the pod template %s with the number of nodes", AnnotationReplicas))
	case "Pod":
		// The webhook's case: a pod of a ReplicaSet or StatefulSet has no
		// count of its own to read.
		meta, _ := pt.obj["metadata"].(map[string]any)
		owners, _ := meta["ownerReferences"].([]any)
		for _, o := range owners {
			if om, _ := o.(map[string]any); om != nil {
				if k := str(om, "kind"); k == "ReplicaSet" || k == "StatefulSet" {
					return 1, append(warnings, fmt.Sprintf("a pod of %s %s: without the annotation %s on its template, CHATGUARD_REPLICAS is 1 and each pod enforces the whole of every limit while Redis is down",
						k, str(om, "name"), AnnotationReplicas))
				}
			}
		}
	}
	return 1, warnings
}

// maxReplicas is the most CHATGUARD_REPLICAS config validation accepts.
const maxReplicas = 10000

// sidecarMode is the form of the pod's chatguard container: native when it
// is an init container.
func (pt *podTemplate) sidecarMode() Mode {
	for _, c := range pt.typed.InitContainers {
		if c.Name == containerName {
			return ModeNative
		}
	}
	return ModeClassic
}

// hasSidecar reports whether the pod has chatguard's container, as a
// native sidecar (an init container) or a classic one.
func (pt *podTemplate) hasSidecar() bool {
	for _, c := range pt.typed.InitContainers {
		if c.Name == containerName {
			return true
		}
	}
	for _, c := range pt.typed.Containers {
		if c.Name == containerName {
			return true
		}
	}
	return false
}
