package config

import (
	"reflect"
	"strings"
)

// Diff lists the YAML keys (dotted, as in the file: "auth.audience",
// "rate_limit.abuse_warning") whose values differ between a and b. Structs
// are compared field by field; lists and maps (routes, events, trusted
// proxies) count as one value each.
func Diff(a, b *Config) []string {
	var out []string
	diffValue(reflect.ValueOf(*a), reflect.ValueOf(*b), "", &out)
	return out
}

func diffValue(a, b reflect.Value, prefix string, out *[]string) {
	if a.Kind() != reflect.Struct {
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, prefix)
		}
		return
	}
	for i := 0; i < a.NumField(); i++ {
		f := a.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		diffValue(a.Field(i), b.Field(i), key, out)
	}
}
