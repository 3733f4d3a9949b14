package inject

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// inject adds the sidecar to an opened pod template. A template that is
// already injected is left exactly as it is.
func (pt *podTemplate) inject(o Options) (warnings []string, err error) {
	if pt.injected() {
		return nil, nil
	}
	if err := pt.checkConflicts(); err != nil {
		return nil, err
	}
	ann, err := pt.annotations(true)
	if err != nil {
		return nil, err
	}
	app := pt.findApp(o)
	if err := pt.addSidecar(o, app); err != nil {
		return nil, err
	}
	if !app.declared && !app.named && o.UpstreamPort == 0 && pt.appContainers() > 1 {
		warnings = append(warnings, fmt.Sprintf("several containers, and the first declares no containerPort: chatguard forwards to %d and the drain hook goes on container %q; "+
			"if the app is another one, annotate the pod %s: <app container> (or pass --upstream-port)",
			app.port, pt.typed.Containers[app.container].Name, AnnotationDefaultContainer))
	}
	w, err := pt.addDrainHook(app, ann)
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
	lc["preStop"] = toMap(drainHook())
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
