package errors

// Validation failures as the other Node frameworks send them by default:
// NestJS's ValidationPipe (class-validator), Fastify's schema validation
// (ajv), and the field lists and field maps apps build by hand. They are
// recognised only on a 400 or 422: the same shapes on another status (a
// 409's {"errors": {"email": "taken"}}) keep that status and its code.

import (
	"encoding/json"
	"regexp"
	"strings"
)

// The kinds frameworkFields names (Result.Kind).
const (
	kindClassValidator = "class-validator"
	kindAjv            = "ajv"
	kindFields         = "fields"
)

// frameworkFields lists the fields of a validation failure c in one of the
// shapes above, with the rule's name.
func frameworkFields(c map[string]any) ([]any, string) {
	// NestJS ValidationPipe: {"statusCode":400,"message":["email must be an email",…],"error":"Bad Request"}.
	if msgs, ok := c["message"].([]any); ok && len(msgs) > 0 {
		if fields := classValidatorMessages(msgs); fields != nil {
			return fields, kindClassValidator
		}
		if fields := classValidatorErrors(msgs); fields != nil {
			return fields, kindClassValidator
		}
	}
	// Fastify: {"statusCode":400,"code":"FST_ERR_VALIDATION",…,"validation":[ajv errors]},
	// or ajv's errors as an app forwards them.
	for _, k := range []string{"validation", "errors"} {
		if arr, ok := c[k].([]any); ok {
			if fields := ajvFields(arr); fields != nil {
				return fields, kindAjv
			}
		}
	}
	if arr, ok := c["errors"].([]any); ok {
		// class-validator's ValidationError objects from an exceptionFactory.
		if fields := classValidatorErrors(arr); fields != nil {
			return fields, kindClassValidator
		}
		// {"errors":[{"field":"phone","message":"must be E.164"}]} (http-errors props, hand-made).
		if fields := namedFields(arr); fields != nil {
			return fields, kindFields
		}
	}
	// {"errors":{"email":"is invalid"}} or {"fields":{"email":["is invalid"]}}.
	for _, k := range []string{"errors", "fields"} {
		_, msg := c["message"]
		_, e := c["error"]
		if k == "fields" && !msg && !e {
			continue // a bare "fields" may be the submitted data echoed back, not messages
		}
		if m, ok := c[k].(map[string]any); ok {
			if fields := fieldMap(m); fields != nil {
				return fields, kindFields
			}
		}
	}
	return nil, ""
}

// fieldText is a message of the shapes here as a client may see it: these
// are hand-made as often as not, so held to the rule of the envelope's own
// message (no runtime or database text, no markup, no paths), else
// fieldMessage. Joi's and express-validator's messages are their
// libraries' and keep the looser rule of appendField.
func fieldText(v any) any {
	if s, ok := v.(string); ok && s != "" && !safeMessage(truncate(s, maxMessageRunes)) {
		return fieldMessage
	}
	return v
}

// classValidatorField is the property class-validator's default messages
// start with ("email must be an email", "address.city should not be
// empty", "each value in tags must be a string").
var classValidatorField = regexp.MustCompile(`^(?:each value in )?([A-Za-z_$][\w$]*(?:\.[\w$]+)*) (?:must|should|has|is|contains|does)\b`)

// classValidatorMessages recognises a list of class-validator messages. Every
// item is a string; the field is the property the message names, or "" for
// a custom message that names none.
func classValidatorMessages(msgs []any) []any {
	var fields []any
	for _, m := range msgs {
		s, ok := m.(string)
		if !ok {
			return nil
		}
		field := ""
		if sub := classValidatorField.FindStringSubmatch(s); sub != nil {
			field = sub[1]
		}
		fields = appendField(fields, field, fieldText(s), nil)
	}
	return fields
}

// classValidatorErrors recognises class-validator's ValidationError objects
// ({property, value, constraints: {isEmail: "…"}, children}): one field per
// constraint, nested properties by their dotted path.
func classValidatorErrors(arr []any) []any {
	var fields []any
	var walk func(arr []any, prefix string) bool
	walk = func(arr []any, prefix string) bool {
		for _, e := range arr {
			em, ok := e.(map[string]any)
			if !ok {
				return false
			}
			prop, ok := em["property"].(string)
			if !ok {
				return false
			}
			constraints, hasC := em["constraints"].(map[string]any)
			children, hasKids := em["children"].([]any)
			if !hasC && !hasKids {
				return false
			}
			for _, k := range sortedKeys(constraints) {
				fields = appendField(fields, prefix+prop, fieldText(constraints[k]), em["value"])
			}
			if hasKids && !walk(children, prefix+prop+".") {
				return false
			}
		}
		return true
	}
	if !walk(arr, "") {
		return nil
	}
	return fields
}

// ajvFields recognises ajv's errors: {instancePath (v8) or dataPath (v6),
// keyword, params, message}. The field is the path as dots ("/items/0/name"
// → "items.0.name"; v6's ".items[0].name" likewise), or the missing
// property of a "required" error at the top.
func ajvFields(arr []any) []any {
	return listFields(arr, func(em map[string]any) (string, any, any, bool) {
		_, hasKeyword := em["keyword"].(string)
		path, hasPath := em["instancePath"].(string)
		if !hasPath {
			path, hasPath = em["dataPath"].(string)
		}
		if !hasKeyword || !hasPath {
			return "", nil, nil, false
		}
		field := strings.Trim(strings.NewReplacer("/", ".", "[", ".", "]", "", "~1", "/", "~0", "~").Replace(path), ".")
		if params, ok := em["params"].(map[string]any); ok {
			if missing, ok := params["missingProperty"].(string); ok {
				field = strings.Trim(field+"."+strings.TrimPrefix(missing, "."), ".")
			}
		}
		return field, fieldText(em["message"]), nil, true
	})
}

// namedFields recognises hand-made field lists: every item an object with
// a field name (field, property, key or param) and a message
// (message or msg).
func namedFields(arr []any) []any {
	return listFields(arr, func(em map[string]any) (string, any, any, bool) {
		var field string
		for _, k := range []string{"field", "property", "key", "param"} {
			if field, _ = em[k].(string); field != "" {
				break
			}
		}
		msg, ok := em["message"].(string)
		if !ok {
			msg, ok = em["msg"].(string)
		}
		return field, fieldText(msg), em["value"], field != "" && ok
	})
}

// fieldMap recognises {"email": "is invalid"} and Rails' {"email": ["is
// invalid", "is taken"]}: every value a string or a list of strings.
func fieldMap(m map[string]any) []any {
	var fields []any
	for _, k := range sortedKeys(m) {
		switch v := m[k].(type) {
		case string:
			fields = appendField(fields, k, fieldText(v), nil)
		case []any:
			if len(v) == 0 {
				return nil
			}
			for _, s := range v {
				if _, ok := s.(string); !ok {
					return nil
				}
				fields = appendField(fields, k, fieldText(s), nil)
			}
		default:
			return nil
		}
	}
	return fields
}

// frameworkKind reports a kind frameworkFields names.
func frameworkKind(kind string) bool {
	switch kind {
	case kindClassValidator, kindAjv, kindFields, kindZod, kindYup, kindJSONAPI, kindProblem:
		return true
	}
	return false
}

// validationStatus reports whether status is one a validation failure is
// sent with.
func validationStatus(status int) bool { return status == 400 || status == 422 }

// appCodePattern is an app's own error code as a client may branch on it:
// "EMAIL_TAKEN", "FST_ERR_VALIDATION", "auth/user-not-found",
// "conversation.closed".
var appCodePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.:/-]{0,63}$`)

// driverCode recognises a database driver's code, which says which database
// the app runs and nothing a client can act on: MySQL's ER_…, SQLite's,
// Prisma's P2002, a PostgreSQL SQLSTATE (23505, 42P01).
var driverCode = regexp.MustCompile(`^(?:ER_|SQLITE_|P[0-9]{4}$|(?:[0-9][0-9A-Z]|[A-Z][0-9]|XX|HV)[0-9A-Z]{3}$)`)

// runtimeCode recognises Node's own codes (ERR_INVALID_ARG_TYPE,
// MODULE_NOT_FOUND) and an error class name given as a code.
var runtimeCode = regexp.MustCompile(`^(?:ERR_|MODULE_NOT_FOUND$)|(?:Error|Exception)$`)

// appCode is the app's own error code in a 4xx body (code, errorCode or
// error_code, at the top or under error): a name or a whole number, never
// a Node system error's (ECONNREFUSED) or a driver's; nil if none.
func appCode(doc any) any {
	for _, c := range candidates(doc) {
		for _, k := range []string{"code", "errorCode", "error_code"} {
			switch v := c[k].(type) {
			case string:
				if appCodePattern.MatchString(v) && !nodeSystemErrors[v] && !driverCode.MatchString(v) &&
					!runtimeCode.MatchString(v) && !leaksDatabase(v) {
					return v
				}
			case json.Number:
				if n, err := v.Int64(); err == nil && n > 0 && n < 1_000_000 && n != 11000 && n != 11001 { // not MongoDB's duplicate key
					return n
				}
			}
		}
	}
	return nil
}
