package inject

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
)

// The helpers below edit decoded JSON in place: objects are map[string]any,
// arrays []any, numbers int64 or float64.

// child returns m[key] as an object. A missing key gives nil, or a new empty
// object stored under key when create is true.
func child(m map[string]any, key string, create bool) (map[string]any, error) {
	v, ok := m[key]
	if !ok || v == nil {
		if !create {
			return nil, nil
		}
		c := map[string]any{}
		m[key] = c
		return c, nil
	}
	c, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: want an object, have %s", key, typeName(v))
	}
	return c, nil
}

// path follows keys from m, creating objects when create is true.
func path(m map[string]any, create bool, keys ...string) (map[string]any, error) {
	for i, k := range keys {
		c, err := child(m, k, create)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", strings.Join(keys[:i], "."), err)
		}
		if c == nil {
			return nil, nil
		}
		m = c
	}
	return m, nil
}

// list returns m[key] as an array; missing means empty.
func list(m map[string]any, key string) ([]any, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return nil, nil
	}
	l, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: want an array, have %s", key, typeName(v))
	}
	return l, nil
}

// setList stores l under key, or removes key when l is empty.
func setList(m map[string]any, key string, l []any) {
	if len(l) == 0 {
		delete(m, key)
		return
	}
	m[key] = l
}

// str returns m[key] when it is a string.
func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

// stringMap reads an object of strings (labels, selectors).
func stringMap(m map[string]any, key string) (map[string]string, error) {
	c, err := child(m, key, false)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(c))
	for k, v := range c {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%s.%s: want a string, have %s", key, k, typeName(v))
		}
		out[k] = s
	}
	return out, nil
}

// named returns the index of the object in l whose name is name, or -1.
func named(l []any, name string) int {
	for i, v := range l {
		if m, ok := v.(map[string]any); ok && str(m, "name") == name {
			return i
		}
	}
	return -1
}

// withoutNamed returns l without the objects called name, and whether any was removed.
func withoutNamed(l []any, names ...string) ([]any, bool) {
	out := make([]any, 0, len(l))
	for _, v := range l {
		if m, ok := v.(map[string]any); ok && slices.Contains(names, str(m, "name")) {
			continue
		}
		out = append(out, v)
	}
	return out, len(out) != len(l)
}

// pruneEmpty removes m[key] when it is an empty object.
func pruneEmpty(m map[string]any, key string) {
	if c, ok := m[key].(map[string]any); ok && len(c) == 0 {
		delete(m, key)
	}
}

// toMap converts a typed value (a corev1 container, volume, hook) to its
// unstructured form.
func toMap(v any) map[string]any {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(v)
	if err != nil {
		panic(fmt.Sprintf("inject: converting %T: %v", v, err)) // built here from valid values
	}
	return m
}

func typeName(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64, float64:
		return "a number"
	default:
		return fmt.Sprintf("%T", v)
	}
}
