package inject

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// uninject removes what inject added, as its annotations record it. A
// template without the injection marker is left exactly as it is.
func (pt *podTemplate) uninject() (warnings []string, err error) {
	if !pt.injected() {
		return nil, nil
	}
	ann, err := pt.annotations(false)
	if err != nil {
		return nil, err
	}
	for _, key := range []string{"initContainers", "containers"} {
		l, err := list(pt.spec, key)
		if err != nil {
			return nil, fmt.Errorf("pod spec: %w", err)
		}
		l, _ = withoutNamed(l, containerName)
		setList(pt.spec, key, l)
	}
	vs, err := list(pt.spec, "volumes")
	if err != nil {
		return nil, fmt.Errorf("pod spec: %w", err)
	}
	vs, _ = withoutNamed(vs, dataVolume, configVolume)
	setList(pt.spec, "volumes", vs)

	if names, ok := ann[AnnotationDrainHook].(string); ok {
		warnings = append(warnings, pt.removeDrainHooks(strings.Split(names, ","))...)
	}
	if g, ok := ann[AnnotationOriginalGracePeriod].(string); ok {
		if g == graceUnset {
			delete(pt.spec, "terminationGracePeriodSeconds")
		} else if n, err := strconv.ParseInt(g, 10, 64); err == nil {
			pt.spec["terminationGracePeriodSeconds"] = n
		} else {
			return nil, fmt.Errorf("annotation %s: %q is not a number", AnnotationOriginalGracePeriod, g)
		}
	}
	if added, ok := ann[AnnotationAddedAnnotations].(string); ok {
		for _, k := range strings.Split(added, ",") {
			delete(ann, k)
		}
	}
	for _, k := range []string{AnnotationInjected, AnnotationDrainHook, AnnotationOriginalGracePeriod, AnnotationAddedAnnotations} {
		delete(ann, k)
	}
	if owner, _ := annotationsOf(pt.obj, false); owner != nil { // checked by openPodTemplate
		delete(owner, AnnotationInjected)
	}
	dropEmptyAnnotations(pt.parent)
	dropEmptyAnnotations(pt.obj)
	return warnings, nil
}

// removeDrainHooks takes out the preStop hooks chatguard added, if they are
// still the ones it added.
func (pt *podTemplate) removeDrainHooks(names []string) (warnings []string) {
	cs, _ := list(pt.spec, "containers") // read without error by the caller
	for _, name := range names {
		i := named(cs, name)
		if i < 0 {
			continue
		}
		// Any form inject writes: the image or command may have changed since.
		ours := []any{toMap(drainHook("node")), toMap(drainHook("/nodejs/bin/node"))}
		if i < len(pt.typed.Containers) && pt.typed.Containers[i].Name == name {
			ours = append(ours, toMap(drainHook(nodeFor(pt.typed.Containers[i]))))
		}
		c, _ := cs[i].(map[string]any)
		lc, _ := c["lifecycle"].(map[string]any)
		if lc == nil || lc["preStop"] == nil {
			continue
		}
		if !slices.ContainsFunc(ours, func(h any) bool { return reflect.DeepEqual(lc["preStop"], h) }) {
			warnings = append(warnings, fmt.Sprintf("container %q: its preStop hook changed since chatguard added it, left as it is", name))
			continue
		}
		delete(lc, "preStop")
		pruneEmpty(c, "lifecycle")
	}
	return warnings
}
