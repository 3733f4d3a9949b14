package inject

import (
	"errors"
	"fmt"
	"strings"
)

// Result is the output of Transform.
type Result struct {
	// Manifests are the documents of every source, in order, as YAML
	// separated by --- lines. Lists stay Lists; empty documents are dropped.
	Manifests []byte
	// Warnings say what was left alone and why, one line each, prefixed
	// with the document they are about.
	Warnings []string
}

// Transform injects the sidecar into every workload of the sources (or takes
// it out, with o.Uninject) and points the Services of the same input at it.
// Objects that are not workloads or Services pass unchanged. On error,
// which lists every problem found, there is no result.
func Transform(srcs []Source, o Options) (*Result, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	var docs []document
	for _, src := range srcs {
		d, err := parse(src)
		if err != nil {
			return nil, fmt.Errorf("inject: %w", err)
		}
		docs = append(docs, d...)
	}
	var objs []object
	var errs []error
	for _, d := range docs {
		if d.obj != nil {
			objs, errs = flatten(objs, errs, d.where, d.obj)
		}
	}
	t := transformer{opts: o}
	for _, ob := range objs {
		if err := t.workload(ob); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ob.where, err))
		}
	}
	for _, ob := range objs {
		if err := t.service(ob); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ob.where, err))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("inject: %w", errors.Join(errs...))
	}
	if t.workloads == 0 && t.optedOut == 0 && !o.Uninject {
		t.warnings = append(t.warnings, "no workload in the input (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod): nothing was changed")
	}
	out, err := encode(docs)
	if err != nil {
		return nil, fmt.Errorf("inject: %w", err)
	}
	return &Result{Manifests: out, Warnings: t.warnings}, nil
}

// object is one Kubernetes object of the input, a document or a List item.
type object struct {
	where string // "deploy.yaml: document 2 (Deployment web)"
	m     map[string]any
}

// flatten appends obj, or the items of a List, to objs after checking that
// each has an apiVersion and a kind.
func flatten(objs []object, errs []error, where string, obj map[string]any) ([]object, []error) {
	kind, apiVersion := str(obj, "kind"), str(obj, "apiVersion")
	name := nameOf(obj)
	if kind == "" || apiVersion == "" {
		return objs, append(errs, fmt.Errorf("%s: not a Kubernetes object: apiVersion and kind must be strings", where))
	}
	if name != "" {
		where = fmt.Sprintf("%s (%s %s)", where, kind, name)
	} else {
		where = fmt.Sprintf("%s (%s)", where, kind)
	}
	if err := checkMetadata(obj); err != nil {
		return objs, append(errs, fmt.Errorf("%s: %w", where, err))
	}
	if kind != "List" || apiVersion != "v1" {
		return append(objs, object{where: where, m: obj}), errs
	}
	items, err := list(obj, "items")
	if err != nil {
		return objs, append(errs, fmt.Errorf("%s: %w", where, err))
	}
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("%s item %d: want a Kubernetes object, have %s", where, i+1, typeName(it)))
			continue
		}
		objs, errs = flatten(objs, errs, fmt.Sprintf("%s item %d", where, i+1), m)
	}
	return objs, errs
}

// checkMetadata refuses metadata that no API server would accept in the
// parts the transform reads, so that injecting and uninjecting fail alike.
func checkMetadata(obj map[string]any) error {
	meta, err := child(obj, "metadata", false)
	if err != nil {
		return err
	}
	for _, key := range []string{"labels", "annotations"} {
		if _, err := stringMap(meta, key); err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
	}
	return nil
}

func nameOf(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	if n := str(meta, "name"); n != "" {
		return n
	}
	return str(meta, "generateName")
}

// transformer carries what one Transform learns from the workloads to the Services.
type transformer struct {
	opts      Options
	workloads int // workloads injected (or uninjected)
	optedOut  int // workloads annotated chatguard.io/inject: disabled
	pods      []injectedPods
	warnings  []string
}

func (t *transformer) workload(ob object) error {
	wk, ok := workloadKindOf(ob.m)
	if !ok {
		if tmpl, err := path(ob.m, false, "spec", "template", "spec"); err == nil && tmpl != nil {
			// An Argo Rollout, an extensions/v1beta1 Deployment: a pod
			// template this does not know how to roll out.
			t.warnings = append(t.warnings, fmt.Sprintf("%s: %s %s has a pod template, but is not a workload kind inject knows: left as it is",
				ob.where, str(ob.m, "apiVersion"), str(ob.m, "kind")))
		}
		return nil
	}
	pt, err := openPodTemplate(ob.m, wk)
	if err != nil {
		return err
	}
	if ann, err := pt.annotations(false); err == nil && str(ann, AnnotationInject) == "disabled" && !t.opts.Uninject {
		t.warnings = append(t.warnings, fmt.Sprintf("%s: %s: disabled: left as it is", ob.where, AnnotationInject))
		t.optedOut++
		return nil
	}
	t.workloads++
	var warnings []string
	if t.opts.Uninject {
		warnings, err = pt.uninject()
	} else {
		warnings, err = pt.inject(t.opts)
	}
	if err != nil {
		return err
	}
	for _, w := range warnings {
		t.warnings = append(t.warnings, ob.where+": "+w)
	}
	if t.opts.Uninject {
		return nil
	}
	labels, err := pt.labels()
	if err != nil {
		return err
	}
	t.pods = append(t.pods, injectedPods{namespace: namespaceOf(ob.m), labels: labels, app: pt.findApp(t.opts)})
	return nil
}

func (t *transformer) service(ob object) error {
	if str(ob.m, "kind") == "NetworkPolicy" && str(ob.m, "apiVersion") == "networking.k8s.io/v1" && !t.opts.Uninject {
		for _, w := range checkNetworkPolicy(ob.m, t.pods) {
			t.warnings = append(t.warnings, ob.where+": "+w)
		}
		return nil
	}
	if str(ob.m, "kind") != "Service" || str(ob.m, "apiVersion") != "v1" {
		return nil
	}
	if t.opts.Uninject {
		// Back to the app's port, which old and new pods both have.
		return restoreService(ob.m)
	}
	if t.opts.KeepServices {
		return nil
	}
	changed, err := pointService(ob.m, t.pods)
	if len(changed) > 0 {
		// The endpoints controller leaves out a pod that has no port of
		// the target's name: applied with its workloads, the Service
		// dropped every running pod until the new ones were ready (QA).
		t.warnings = append(t.warnings, fmt.Sprintf("%s: port %s now goes to chatguard's port %q, which pods started before the injection do not have: "+
			"applied while such pods run, this Service sends them nothing until they are replaced; for an app that is running, "+
			"apply the workloads first (chatguard inject --services=false), wait for kubectl rollout status, then this Service",
			ob.where, strings.Join(changed, ", "), publicPortName))
	}
	return err
}
