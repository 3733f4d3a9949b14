package errors

// Validation failures from the schema libraries and error formats of newer
// Node apps: Zod (an error's issues, or its flatten()), yup, JSON:API error
// objects and RFC 9457 problem details. Like the shapes in frameworks.go
// they count only on a 400 or 422 and keep the app's status and message
// (QA: a ZodError came through as a bare VALIDATION_ERROR, its fields lost).

import (
	"encoding/json"
	"strconv"
	"strings"
)

// The kinds schemaFields names (Result.Kind).
const (
	kindZod     = "zod"
	kindYup     = "yup"
	kindJSONAPI = "json-api"
	kindProblem = "problem"
)

// schemaFields lists the fields of a validation failure c in one of the
// shapes above, with the shape's kind.
func schemaFields(c map[string]any) ([]any, string) {
	// Zod 4's ZodError as JSON.stringify writes it: {"name": "ZodError",
	// "message": "<its issues as JSON>"} (QA: npm installs Zod 4 now).
	if name, _ := c["name"].(string); name == "ZodError" {
		if msg, ok := c["message"].(string); ok && strings.HasPrefix(strings.TrimSpace(msg), "[") {
			var arr []any
			dec := json.NewDecoder(strings.NewReader(msg))
			dec.UseNumber()
			if dec.Decode(&arr) == nil {
				if fields := zodIssues(arr); fields != nil {
					return fields, kindZod
				}
			}
		}
	}
	// Zod 3's ZodError ({"issues": […], "name": "ZodError"}), or the
	// issues under errors (zodError.errors) or details.
	for _, k := range []string{"issues", "errors", "details"} {
		if arr, ok := c[k].([]any); ok {
			if fields := zodIssues(arr); fields != nil {
				return fields, kindZod
			}
		}
	}
	// zodError.flatten(): {"formErrors": […], "fieldErrors": {"email": […]}}.
	if m, ok := c["fieldErrors"].(map[string]any); ok {
		fields := appendMessages(fieldMap(m), "", c["formErrors"])
		if fields != nil {
			return fields, kindZod
		}
	}
	// zodError.format(): {"_errors": […], "email": {"_errors": […]}}, and
	// Zod 4's z.treeifyError(): {"errors": […], "properties": {"email":
	// {"errors": […]}}, "items": […]}.
	if _, ok := c["_errors"].([]any); ok {
		if fields := zodFormat(nil, c, "", 0); fields != nil {
			return fields, kindZod
		}
	}
	if _, ok := c["properties"].(map[string]any); ok {
		if _, ok := c["errors"].([]any); ok {
			if fields := zodTree(nil, c, "", 0); fields != nil {
				return fields, kindZod
			}
		}
	}
	if fields := yupFields(c); fields != nil {
		return fields, kindYup
	}
	if arr, ok := c["errors"].([]any); ok {
		if fields := pointerFields(arr); fields != nil {
			return fields, kindJSONAPI
		}
	}
	// RFC 7807's example extension: "invalid-params": [{"name", "reason"}].
	if arr, ok := c["invalid-params"].([]any); ok {
		fields := listFields(arr, func(em map[string]any) (string, any, any, bool) {
			name, _ := em["name"].(string)
			reason, ok := em["reason"].(string)
			return name, fieldText(reason), nil, name != "" && ok
		})
		if fields != nil {
			return fields, kindProblem
		}
	}
	return nil, ""
}

// zodIssues recognises Zod's issues: {code, path: […], message}, every item.
// Joi's items have a type where Zod's have a code.
func zodIssues(arr []any) []any {
	return listFields(arr, func(em map[string]any) (string, any, any, bool) {
		_, hasCode := em["code"].(string)
		path, hasPath := em["path"].([]any)
		msg, hasMsg := em["message"].(string)
		// Zod 4 with reportInput gives the value as input.
		return joiPath(path), fieldText(msg), em["input"], hasCode && hasPath && hasMsg
	})
}

// maxSchemaDepth bounds the nesting zodFormat and zodTree follow.
const maxSchemaDepth = 32

// zodFormat lists the messages of a format() node: its own _errors under
// path, then each property's node under path.property.
func zodFormat(fields []any, node map[string]any, path string, depth int) []any {
	if depth > maxSchemaDepth {
		return fields
	}
	fields = appendMessages(fields, path, node["_errors"])
	for _, k := range sortedKeys(node) {
		if child, ok := node[k].(map[string]any); ok && k != "_errors" {
			if _, ok := child["_errors"].([]any); ok {
				fields = zodFormat(fields, child, joinPath(path, k), depth+1)
			}
		}
	}
	return fields
}

// zodTree lists the messages of a treeifyError() node: its errors under
// path, its properties' and items' nodes under path.name and path.index.
func zodTree(fields []any, node map[string]any, path string, depth int) []any {
	if depth > maxSchemaDepth {
		return fields
	}
	fields = appendMessages(fields, path, node["errors"])
	props, _ := node["properties"].(map[string]any)
	for _, k := range sortedKeys(props) {
		if child, ok := props[k].(map[string]any); ok {
			fields = zodTree(fields, child, joinPath(path, k), depth+1)
		}
	}
	items, _ := node["items"].([]any)
	for i, it := range items {
		if child, ok := it.(map[string]any); ok {
			fields = zodTree(fields, child, joinPath(path, strconv.Itoa(i)), depth+1)
		}
	}
	return fields
}

// appendMessages appends a field at path for each string of list (a JSON
// array of messages; anything else adds nothing).
func appendMessages(fields []any, path string, list any) []any {
	msgs, _ := list.([]any)
	for _, m := range msgs {
		if msg, ok := m.(string); ok {
			fields = appendField(fields, path, fieldText(msg), nil)
		}
	}
	return fields
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// yupFields recognises yup's ValidationError: {"name": "ValidationError",
// "errors": ["…"], "path", "inner": [{path, message}]} — one field per inner
// error when abortEarly is false, else the error's own path and message.
func yupFields(c map[string]any) []any {
	if name, _ := c["name"].(string); name != "ValidationError" {
		return nil
	}
	if _, ok := c["errors"].([]any); !ok {
		return nil
	}
	if inner, ok := c["inner"].([]any); ok && len(inner) > 0 {
		return listFields(inner, func(em map[string]any) (string, any, any, bool) {
			path, _ := em["path"].(string)
			msg, ok := em["message"].(string)
			return path, fieldText(msg), em["value"], ok
		})
	}
	path, _ := c["path"].(string)
	msg, ok := c["message"].(string)
	if !ok || path == "" {
		return nil
	}
	return appendField(nil, path, fieldText(msg), nil)
}

// pointerFields recognises error objects that name their field by a JSON
// Pointer: JSON:API's {"detail" or "title", "source": {"pointer":
// "/data/attributes/email"} or {"parameter": "page"}}, and RFC 9457's
// {"detail", "pointer": "#/age"}. Every item needs a message; an item
// without a pointer (an error of the whole request) has the field "", and
// at least one item must have one.
func pointerFields(arr []any) []any {
	pointed := false
	fields := listFields(arr, func(em map[string]any) (string, any, any, bool) {
		msg, ok := em["detail"].(string)
		if !ok {
			msg, ok = em["title"].(string)
		}
		ptr, hasPtr := em["pointer"].(string)
		if src, isMap := em["source"].(map[string]any); isMap && !hasPtr {
			if ptr, hasPtr = src["pointer"].(string); !hasPtr {
				ptr, hasPtr = src["parameter"].(string)
			}
		}
		pointed = pointed || hasPtr
		return pointerField(ptr), fieldText(msg), nil, ok
	})
	if !pointed {
		return nil
	}
	return fields
}

// pointerField is a JSON Pointer as a dotted field name:
// "/data/attributes/address/city" → "address.city", "#/age" → "age".
func pointerField(ptr string) string {
	ptr = strings.TrimPrefix(ptr, "#")
	for _, p := range []string{"/data/attributes/", "/data/relationships/"} {
		if rest, ok := strings.CutPrefix(ptr, p); ok {
			ptr = rest
			break
		}
	}
	parts := strings.Split(strings.Trim(ptr, "/"), "/")
	for i, p := range parts {
		parts[i] = strings.NewReplacer("~1", "/", "~0", "~").Replace(p)
	}
	return strings.Join(parts, ".")
}
