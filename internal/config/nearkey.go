package config

import (
	"reflect"
	"strings"
)

// yamlTypes are the configuration's struct types by the name the YAML
// decoder gives them in its problems ("config.Route").
var yamlTypes = func() map[string]reflect.Type {
	out := map[string]reflect.Type{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || out[t.String()] != nil {
			return
		}
		out[t.String()] = t
		for i := 0; i < t.NumField(); i++ {
			walk(t.Field(i).Type)
		}
	}
	walk(reflect.TypeOf(Config{}))
	return out
}()

// nearestKey is the key of the YAML type typeName that field most likely
// meant (a few edits for its length, a part cut off or run on: per for
// period, roles_claim for role_claim), or "".
func nearestKey(typeName, field string) string {
	t := yamlTypes[typeName]
	if t == nil {
		return ""
	}
	f := strings.ToLower(field)
	best, bestDist := "", -1
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		d := editDistance(f, strings.ToLower(name))
		short := min(len(f), len(name))
		runOn := short >= 3 && (strings.HasPrefix(name, f) || strings.HasPrefix(f, name))
		if d > max(1, len(f)/3) && !runOn {
			continue
		}
		if bestDist < 0 || d < bestDist {
			best, bestDist = name, d
		}
	}
	return best
}
