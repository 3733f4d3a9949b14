package config

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

var durationType = reflect.TypeFor[time.Duration]()

// bareDurations fixes what yaml.v3 gets wrong about durations written as
// numbers. yaml.v3 refuses every !!int for a time.Duration, 0 included, yet
// the default file documents "0 = never" and "0 = no expiry" and the
// environment takes a bare 0: so a plain 0 at a duration's place is set
// to 0 in c (which the decoder left untouched) and its decoding error
// dropped. Any other number stays an error, with a hint about the unit
// added, since 30 could mean seconds, minutes or nanoseconds.
//
// root is data parsed as a node tree, c the configuration data was
// decoded into, problems the decoder's errors ("line N: cannot unmarshal
// !!int `0` into time.Duration"); it returns the problems left.
func bareDurations(root *yaml.Node, c *Config, problems []string) []string {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return problems
	}
	walkDurations(root.Content[0], reflect.ValueOf(c), func(n *yaml.Node, v reflect.Value) {
		if n.Tag != "!!int" && n.Tag != "!!float" {
			return // a string: ParseDuration's own message says what is wrong
		}
		// The decoder's own words for this node (it shortens long values).
		prefix := fmt.Sprintf("line %d: cannot unmarshal %s `", n.Line, n.Tag)
		i := slices.IndexFunc(problems, func(p string) bool {
			return strings.HasPrefix(p, prefix) && strings.HasSuffix(p, "` into time.Duration")
		})
		if i < 0 {
			return
		}
		if n.Tag == "!!int" && n.Value == "0" {
			v.SetInt(0)
			problems = append(problems[:i], problems[i+1:]...)
			return
		}
		problems[i] += fmt.Sprintf(": a duration needs a unit (%[1]ss, %[1]sm, %[1]sh); only 0 may go without one", n.Value)
	})
	return problems
}

// walkDurations calls visit for every scalar of n that decodes into a
// time.Duration of v, with that field. It follows what the decoder filled:
// a struct's fields by their yaml names, a slice's elements by index, a
// non-nil pointer's target; aliases and maps (no map holds a duration) are
// left alone.
func walkDurations(n *yaml.Node, v reflect.Value, visit func(*yaml.Node, reflect.Value)) {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	switch {
	case v.Type() == durationType:
		if n.Kind == yaml.ScalarNode && v.CanSet() {
			visit(n, v)
		}
	case v.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if f, ok := fieldByYAMLName(v, n.Content[i].Value); ok {
				walkDurations(n.Content[i+1], f, visit)
			}
		}
	case v.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		// A decoding error may have dropped an element, shifting the rest;
		// that error is reported anyway, so a misplaced 0 does no harm.
		for i, item := range n.Content {
			if i < v.Len() {
				walkDurations(item, v.Index(i), visit)
			}
		}
	}
}

// fractionalInts reports a number with a fraction (2.9, .5, .inf) written
// for a whole-number setting: the decoder truncates it silently (a rate of
// 2.9 became 2, one of 0.5 a puzzling "got 0"), where the environment and
// the flags refuse it (QA). The problem is worded as the decoder's own, so
// that nameProblems names the setting.
func fractionalInts(root *yaml.Node, c *Config) []string {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil
	}
	var out []string
	var walk func(n *yaml.Node, t reflect.Type)
	walk = func(n *yaml.Node, t reflect.Type) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case t == durationType:
		case isIntKind(t.Kind()):
			if n.Kind == yaml.ScalarNode && n.Tag == "!!float" {
				if f, err := strconv.ParseFloat(n.Value, 64); err != nil || math.IsInf(f, 0) || math.IsNaN(f) || f != math.Trunc(f) {
					out = append(out, fmt.Sprintf("line %d: cannot unmarshal !!float `%s` into %s", n.Line, n.Value, t))
				}
			}
		case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if f, ok := fieldTypeByYAMLName(t, n.Content[i].Value); ok {
					walk(n.Content[i+1], f)
				}
			}
		case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
			for _, item := range n.Content {
				walk(item, t.Elem())
			}
		case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
			for i := 1; i < len(n.Content); i += 2 {
				walk(n.Content[i], t.Elem())
			}
		}
	}
	walk(root.Content[0], reflect.TypeOf(c))
	return out
}

func isIntKind(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// fieldTypeByYAMLName is the type of the field of struct type t whose yaml
// tag names key.
func fieldTypeByYAMLName(t reflect.Type, key string) (reflect.Type, bool) {
	if i, ok := yamlFieldIndex(t, key); ok {
		return t.Field(i).Type, true
	}
	return nil, false
}

// fieldByYAMLName is the field of struct v whose yaml tag names key.
func fieldByYAMLName(v reflect.Value, key string) (reflect.Value, bool) {
	if i, ok := yamlFieldIndex(v.Type(), key); ok {
		return v.Field(i), true
	}
	return reflect.Value{}, false
}

// yamlFieldIndex is the index of the field of struct type t whose yaml tag
// names key.
func yamlFieldIndex(t reflect.Type, key string) (int, bool) {
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" && name == key {
			return i, true
		}
	}
	return 0, false
}

// nullRoutes reports a routes (or websocket.events) key with nothing after
// it. It decodes as no routes at all, silently: and it is what a file cut
// off right after that line looks like, so every route would lose its auth
// and limits at once (every event its limit). routes: [] remains the way to
// ask for none.
func nullRoutes(root *yaml.Node) []string {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil
	}
	var out []string
	for _, path := range [][]string{{"routes"}, {"websocket", "events"}} {
		if k := nullAt(root.Content[0], path); k != nil {
			name := strings.Join(path, ".")
			last := path[len(path)-1]
			out = append(out, fmt.Sprintf("line %d: %s has no value; list the %s, or write %s: [] for none", k.Line, name, last, last))
		}
	}
	return out
}

// nullSections reports the file's last key when it has nothing after it
// and its setting is a section or a list (rate_limit:, a route's limit:):
// it decodes as the defaults, or as no limit at all, silently, and that is
// what a file cut off after that line looks like (QA: a login route went
// unlimited for the seconds an in-place write took). Such a key with more
// settings after it is no cut (a section whose lines are commented out)
// and stays valid. routes and websocket.events are nullRoutes'.
func nullSections(root *yaml.Node) []string {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil
	}
	var out []string
	var walk func(n *yaml.Node, t reflect.Type, path string, last bool)
	walk = func(n *yaml.Node, t reflect.Type, path string, last bool) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
			for i, item := range n.Content {
				walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), last && i == len(n.Content)-1)
			}
		case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				f, ok := fieldByYAMLName(reflect.New(t).Elem(), k.Value)
				if !ok {
					continue // an unknown key: nameProblems says so
				}
				name := join(path, k.Value)
				ft := f.Type()
				for ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				section := ft.Kind() == reflect.Struct || ft.Kind() == reflect.Map || ft.Kind() == reflect.Slice
				lastKey := last && i+2 == len(n.Content)
				if v.Kind == yaml.ScalarNode && v.Tag == "!!null" && section {
					if name == "routes" || name == "websocket.events" || !lastKey {
						continue
					}
					what := "give it its settings"
					if ft.Kind() == reflect.Slice {
						what = "list them, or write [] for none"
					}
					out = append(out, fmt.Sprintf("line %d: %s has no value (a file cut off after this line?); %s, or remove the key for the default", k.Line, name, what))
					continue
				}
				walk(v, f.Type(), name, lastKey)
			}
		}
	}
	walk(root.Content[0], reflect.TypeOf(Config{}), "", true)
	return out
}

// hasPath reports whether the document root sets the key at path.
func hasPath(root *yaml.Node, path []string) bool {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for _, key := range path {
		if n.Kind != yaml.MappingNode {
			return false
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return false
		}
		n = next
	}
	return true
}

// nullAt is the key node of path in mapping n when its value is null.
func nullAt(n *yaml.Node, path []string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value != path[0] {
			continue
		}
		if len(path) == 1 {
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				return k
			}
			return nil
		}
		return nullAt(v, path[1:])
	}
	return nil
}

// IsBlank reports whether data is a YAML file without a single setting:
// empty, or only whitespace, comments, a document marker or a null. Load
// reads such a file as the defaults (an empty ConfigMap key is a way to ask
// for them); a reload refuses it. Data that does not parse is not blank:
// Load reports what is wrong with it.
func IsBlank(data []byte) bool {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return false
	}
	if len(root.Content) == 0 {
		return true // no document at all
	}
	n := root.Content[0]
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// nameProblems says which setting each of the decoder's problems is about,
// in the words the environment's and flags' problems use: "line 5:
// proxy.max_idle_conns: `lots` is not a whole number", not "line 5: cannot
// unmarshal !!str `lots` into int"; and an unknown key by its path, not as
// "field bogus_key not found in type config.Config".
func nameProblems(root *yaml.Node, problems []string) []string {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return problems
	}
	type scalarAt struct{ path, value string }
	keys := map[int][]string{}     // line → paths of the keys written there, in order
	values := map[int][]scalarAt{} // line → the scalar values written there
	lists := map[int]string{}      // line → path of the (innermost) list or object starting there
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
			lists[n.Line] = path
		}
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				keys[k.Line] = append(keys[k.Line], p)
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, item := range n.Content {
				walk(item, fmt.Sprintf("%s[%d]", path, i))
			}
		case yaml.ScalarNode:
			values[n.Line] = append(values[n.Line], scalarAt{path, n.Value})
		}
	}
	walk(root.Content[0], "")
	out := make([]string, 0, len(problems))
	for _, p := range problems {
		var line int
		var rest string
		if n, err := fmt.Sscanf(p, "line %d:", &line); n != 1 || err != nil {
			out = append(out, p)
			continue
		}
		_, rest, _ = strings.Cut(p, ": ")
		// The value the decoder quotes (shortened to 7 characters and
		// "..." when long) tells which scalar of the line it is.
		at := func(quoted string) string {
			found := ""
			for _, s := range values[line] {
				if s.value == quoted || strings.HasSuffix(quoted, "...") && strings.HasPrefix(s.value, strings.TrimSuffix(quoted, "...")) {
					if found != "" {
						return "" // two alike: do not guess
					}
					found = s.path
				}
			}
			return found
		}
		if m := unmarshalProblem.FindStringSubmatch(rest); m != nil && at(m[2]) != "" {
			tag, value, goType := m[1], m[2], m[3]
			what, ok := goTypeWords[goType]
			if !ok {
				what = "not " + wantedWords(goType)
			}
			hint := ""
			if _, after, ok := strings.Cut(rest, "` into time.Duration"); ok && after != "" {
				what, hint = "not a duration", after // bareDurations' unit hint
			}
			if tag == "!!str" && goType == "time.Duration" && hint == "" && quotedScalar(value, "float64") {
				what, hint = "not a duration", fmt.Sprintf(": a duration needs a unit (%[1]ss, %[1]sm, %[1]sh)", value)
			}
			if tag == "!!str" && quotedScalar(value, goType) {
				// "`2` is not a number" would puzzle: the quotes made it text.
				out = append(out, fmt.Sprintf("line %d: %s: \"%s\" is quoted, so text, and %s: write %s without quotes", line, at(value), value, what, value))
				continue
			}
			out = append(out, fmt.Sprintf("line %d: %s: `%s` is %s%s", line, at(value), value, what, hint))
			continue
		}
		if m := unmarshalNode.FindStringSubmatch(rest); m != nil && lists[line] != "" {
			// A list or an object where a value goes (or the reverse):
			// "cannot unmarshal !!seq into string" named no setting.
			got := map[string]string{"seq": "a list", "map": "an object"}[m[1]]
			out = append(out, fmt.Sprintf("line %d: %s: %s where %s goes", line, lists[line], got, wantedWords(m[2])))
			continue
		}
		if m := unknownField.FindStringSubmatch(rest); m != nil && len(keys[line]) > 0 {
			// The key of that name on the line: in a flow mapping
			// ("server: {drain_delai: 1s}") the first key is its
			// parent, which the problem named before (QA).
			path := keys[line][0]
			for _, k := range keys[line] {
				if k == m[1] || strings.HasSuffix(k, "."+m[1]) {
					path = k
					break
				}
			}
			if near := nearestKey(m[2], m[1]); near != "" {
				// As flags and variables get (QA: route:, per:,
				// roles_claim got only the README's table).
				out = append(out, fmt.Sprintf("line %d: %s: not a chatguard setting (did you mean %s?)", line, path, near))
				continue
			}
			out = append(out, fmt.Sprintf("line %d: %s: not a chatguard setting (see the configuration table in the README)", line, path))
			continue
		}
		out = append(out, p)
	}
	return out
}

// quotedScalar reports whether value, which the file quoted, would have
// been a good goType without its quotes.
func quotedScalar(value, goType string) bool {
	if strings.HasSuffix(value, "...") { // the decoder shortened it
		return false
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(value), &n); err != nil || len(n.Content) != 1 || n.Content[0].Kind != yaml.ScalarNode {
		return false
	}
	switch tag := n.Content[0].Tag; goType {
	case "int", "int64":
		return tag == "!!int"
	case "float64":
		return tag == "!!int" || tag == "!!float"
	case "bool":
		return tag == "!!bool"
	}
	return false
}

// wantedWords says what a Go type of the configuration takes.
func wantedWords(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["):
		return "an object"
	}
	switch goType {
	case "string", "config.Secret":
		return "a string"
	case "int", "int64":
		return "a whole number"
	case "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "time.Duration":
		return "a duration (30s, 5m, 1h)"
	}
	return "an object" // a section (config.Proxy, config.RouteLimit…)
}

var (
	unmarshalNode    = regexp.MustCompile(`^cannot unmarshal !!(seq|map) into (\S+)`)
	unmarshalProblem = regexp.MustCompile("^cannot unmarshal (![!a-z]+) `(.*)` into ([][.A-Za-z0-9]+)")
	unknownField     = regexp.MustCompile(`^field (\S+) not found in type (\S+)`)
	goTypeWords      = map[string]string{
		"int": "not a whole number", "int64": "not a whole number", "float64": "not a number",
		"bool": "not true or false", "string": "not a string", "time.Duration": "not a duration (30s, 5m, 1h)",
		"[]string": "not a list", "config.Secret": "not a string",
	}
)

// lineOf is the line in root of the setting a problem names: key is a
// validation key ("websocket.auth", "routes[0].methods[1]"); the line is
// its key's for a mapping entry, its item's for a list element. 0 = not
// in the file (a default, or a key not written that way).
func lineOf(root *yaml.Node, key string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	line := 0
	for _, part := range strings.Split(key, ".") {
		name, rest, _ := strings.Cut(part, "[")
		if name != "" {
			if n.Kind != yaml.MappingNode {
				return 0
			}
			var k, v *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == name {
					k, v = n.Content[i], n.Content[i+1]
				}
			}
			if v == nil {
				return 0
			}
			n, line = v, k.Line
		}
		for rest != "" {
			idx, after, ok := strings.Cut(rest, "]")
			i, err := strconv.Atoi(idx)
			if !ok || err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
				return 0
			}
			n, line = n.Content[i], n.Content[i].Line
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return line
}
