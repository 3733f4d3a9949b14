package inject

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// injectedPods describes the pods of one injected workload, for matching Services.
type injectedPods struct {
	namespace string
	labels    map[string]string
	app       appPort
}

// selects reports whether a Service in namespace with selector picks these
// pods. An object without a namespace is taken to be in the same one as the
// other: manifests usually leave it to kubectl's -n.
func (p injectedPods) selects(namespace string, selector map[string]string) bool {
	if namespace != "" && p.namespace != "" && namespace != p.namespace {
		return false
	}
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if l, ok := p.labels[k]; !ok || l != v {
			return false
		}
	}
	return true
}

// pointService sets targetPort to chatguard's named port on every TCP port of
// svc that targets the app of a workload it selects, and records the
// original target ports in an annotation. It reports the ports it changed.
func pointService(svc map[string]any, pods []injectedPods) (changed []string, err error) {
	spec, err := child(svc, "spec", false)
	if err != nil || spec == nil {
		return nil, err
	}
	selector, err := stringMap(spec, "selector")
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	ns := namespaceOf(svc)
	var apps []appPort
	for _, p := range pods {
		if p.selects(ns, selector) {
			apps = append(apps, p.app)
		}
	}
	if len(apps) == 0 {
		return nil, nil
	}
	ports, err := list(spec, "ports")
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	original := map[string]any{}
	for i, v := range ports {
		port, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("spec.ports[%d]: want an object, have %s", i, typeName(v))
		}
		if proto := str(port, "protocol"); proto != "" && proto != "TCP" {
			continue
		}
		number, ok := port["port"].(int64)
		if !ok {
			return nil, fmt.Errorf("spec.ports[%d].port: want an integer", i)
		}
		target, hasTarget := port["targetPort"]
		if !hasTarget || target == nil {
			target = number // Kubernetes' default
		}
		if !targetsApp(target, apps) {
			continue
		}
		original[strconv.FormatInt(number, 10)] = port["targetPort"] // nil: there was none
		port["targetPort"] = publicPortName
		changed = append(changed, strconv.FormatInt(number, 10))
	}
	if len(original) == 0 {
		return nil, nil
	}
	meta, err := child(svc, "metadata", true)
	if err != nil {
		return nil, err
	}
	ann, err := child(meta, "annotations", true)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	if prev, ok := ann[AnnotationOriginalTargetPorts].(string); ok {
		var old map[string]any
		if err := json.Unmarshal([]byte(prev), &old); err == nil {
			for k, v := range old {
				if _, ok := original[k]; !ok {
					original[k] = v
				}
			}
		}
	}
	b, err := json.Marshal(original) // sorted keys: the same ports give the same bytes
	if err != nil {
		return nil, err
	}
	ann[AnnotationOriginalTargetPorts] = string(b)
	return changed, nil
}

func targetsApp(target any, apps []appPort) bool {
	for _, a := range apps {
		switch t := target.(type) {
		case int64:
			if int(t) == a.port {
				return true
			}
		case string:
			if t != publicPortName && a.name != "" && t == a.name {
				return true
			}
		}
	}
	return false
}

// restoreService puts back the target ports pointService changed.
func restoreService(svc map[string]any) error {
	meta, err := child(svc, "metadata", false)
	if err != nil || meta == nil {
		return err
	}
	ann, err := child(meta, "annotations", false)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	raw, ok := ann[AnnotationOriginalTargetPorts].(string)
	if !ok {
		return nil
	}
	var original map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &original); err != nil {
		return fmt.Errorf("annotation %s: %w", AnnotationOriginalTargetPorts, err)
	}
	spec, err := child(svc, "spec", false)
	if err != nil {
		return err
	}
	ports, err := list(spec, "ports")
	if err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	for _, v := range ports {
		port, ok := v.(map[string]any)
		if !ok || port["targetPort"] != publicPortName {
			continue
		}
		number, _ := port["port"].(int64)
		prev, ok := original[strconv.FormatInt(number, 10)]
		if !ok {
			continue
		}
		var target any
		if err := json.Unmarshal(prev, &target); err != nil {
			return fmt.Errorf("annotation %s: %w", AnnotationOriginalTargetPorts, err)
		}
		switch t := target.(type) {
		case nil:
			delete(port, "targetPort")
		case float64:
			port["targetPort"] = int64(t)
		case string:
			port["targetPort"] = t
		default:
			return fmt.Errorf("annotation %s: port %d: target %v is neither a number nor a name", AnnotationOriginalTargetPorts, number, prev)
		}
	}
	delete(ann, AnnotationOriginalTargetPorts)
	pruneEmpty(meta, "annotations")
	return nil
}

func namespaceOf(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	return str(meta, "namespace")
}

// checkNetworkPolicy warns about an ingress rule of policy that admits the
// app's port of a pod it selects but not chatguard's: the Services now send
// that traffic to chatguard, and the policy would drop it.
func checkNetworkPolicy(policy map[string]any, pods []injectedPods) []string {
	spec, err := child(policy, "spec", false)
	if err != nil || spec == nil {
		return nil
	}
	ps, err := child(spec, "podSelector", false)
	if err != nil {
		return nil
	}
	labels, err := stringMap(ps, "matchLabels")
	if err != nil {
		return nil
	}
	expressions, err := list(ps, "matchExpressions")
	if err != nil {
		return nil
	}
	ns := namespaceOf(policy)
	var apps []appPort
	for _, p := range pods {
		if ns != "" && p.namespace != "" && ns != p.namespace {
			continue
		}
		if matchesLabels(p.labels, labels) && matchesExpressions(p.labels, expressions) {
			apps = append(apps, p.app)
		}
	}
	if len(apps) == 0 {
		return nil
	}
	rules, err := list(spec, "ingress")
	if err != nil {
		return nil
	}
	var warnings []string
	for i, r := range rules {
		rule, _ := r.(map[string]any)
		ports, err := list(rule, "ports")
		if err != nil || len(ports) == 0 { // no ports: every port
			continue
		}
		admitsApp, admitsChatguard := false, false
		for _, v := range ports {
			port, _ := v.(map[string]any)
			if port == nil {
				continue
			}
			if proto := str(port, "protocol"); proto != "" && proto != "TCP" {
				continue
			}
			n, hasNumber := port["port"]
			if !hasNumber || n == nil {
				admitsChatguard = true // no port: every port of the protocol
				continue
			}
			admitsApp = admitsApp || targetsApp(n, apps)
			switch t := n.(type) {
			case int64:
				end, _ := port["endPort"].(int64)
				admitsChatguard = admitsChatguard || int(t) == publicPort || int(t) < publicPort && int(end) >= publicPort
			case string:
				admitsChatguard = admitsChatguard || t == publicPortName
			}
		}
		if admitsApp && !admitsChatguard {
			warnings = append(warnings, fmt.Sprintf("spec.ingress[%d] admits the app's port but not chatguard's (%d, %q), to which the Services now send that traffic: "+
				"add it to the rule, or the policy drops every request", i, publicPort, publicPortName))
		}
	}
	return warnings
}

// matchesLabels: every key of want has its value in labels (an empty want
// selects every pod).
func matchesLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if l, ok := labels[k]; !ok || l != v {
			return false
		}
	}
	return true
}

// matchesExpressions evaluates a label selector's matchExpressions (In,
// NotIn, Exists, DoesNotExist); one it cannot read matches nothing.
func matchesExpressions(labels map[string]string, exprs []any) bool {
	for _, e := range exprs {
		expr, _ := e.(map[string]any)
		if expr == nil {
			return false
		}
		key := str(expr, "key")
		values, _ := expr["values"].([]any)
		in := false
		v, has := labels[key]
		for _, x := range values {
			if s, _ := x.(string); has && s == v {
				in = true
			}
		}
		switch str(expr, "operator") {
		case "In":
			if !in {
				return false
			}
		case "NotIn":
			if in {
				return false
			}
		case "Exists":
			if !has {
				return false
			}
		case "DoesNotExist":
			if has {
				return false
			}
		default:
			return false
		}
	}
	return true
}
