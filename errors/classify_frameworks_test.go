package errors_test

import (
	"testing"

	apierrors "github.com/chatguard/chatguard/errors"
)

// Bodies as NestJS 10, Fastify 4/5, Koa, Hapi and hand-made Express
// handlers send them (QA: each came through as a bare VALIDATION_ERROR,
// its field messages and its code lost).
const (
	// NestJS ValidationPipe (class-validator's default messages).
	bodyNestValidation = `{"message":["email must be an email","password must be longer than or equal to 8 characters","each value in tags must be a string","address.city should not be empty"],"error":"Bad Request","statusCode":400}`
	// A custom message that names no property.
	bodyNestCustom = `{"message":["Please pick a conversation"],"error":"Bad Request","statusCode":400}`
	// class-validator ValidationError objects from an exceptionFactory.
	bodyClassValidatorErrors = `{"statusCode":422,"errors":[{"property":"email","value":"bad","constraints":{"isEmail":"email must be an email"},"children":[]},{"property":"address","children":[{"property":"city","value":"","constraints":{"isNotEmpty":"city should not be empty"},"children":[]}]}]}`
	// Fastify with an error handler that forwards error.validation (ajv v8).
	bodyFastifyValidation = `{"statusCode":400,"code":"FST_ERR_VALIDATION","error":"Bad Request","message":"body/age must be >= 18","validation":[{"instancePath":"/age","schemaPath":"#/properties/age/minimum","keyword":"minimum","params":{"comparison":">=","limit":18},"message":"must be >= 18"},{"instancePath":"","schemaPath":"#/required","keyword":"required","params":{"missingProperty":"email"},"message":"must have required property 'email'"},{"instancePath":"/items/0/name","keyword":"type","params":{"type":"string"},"message":"must be string"}]}`
	// ajv v6 (dataPath).
	bodyAjv6 = `{"errors":[{"keyword":"format","dataPath":".email","schemaPath":"#/properties/email/format","params":{"format":"email"},"message":"should match format \"email\""}]}`
	// Fastify's default handler: no list, its message and code.
	bodyFastifyDefault = `{"statusCode":400,"code":"FST_ERR_VALIDATION","error":"Bad Request","message":"body/age must be >= 18"}`
	// http-errors with props, a hand-made list.
	bodyFieldList = `{"message":"Phone number is not valid","errors":[{"field":"phone","message":"must be E.164","value":"555"}]}`
	// Koa / hand-made field maps; Rails' lists of messages.
	bodyFieldMap   = `{"error":"Bad input","fields":{"email":"invalid","name":"is required"}}`
	bodyRailsStyle = `{"errors":{"email":["is invalid","is taken"]}}`
	// A conflict with a field map: not a validation failure.
	bodyConflictMap = `{"errors":{"email":"is already taken"},"code":"EMAIL_TAKEN"}`
)

func TestClassifyFrameworkValidation(t *testing.T) {
	t.Parallel()
	tests := []validationCase{
		{"nest ValidationPipe", 400, bodyNestValidation, "class-validator", []field{
			f("email", "email must be an email", "null"),
			f("password", "password must be longer than or equal to 8 characters", "null"),
			f("tags", "each value in tags must be a string", "null"),
			f("address.city", "address.city should not be empty", "null"),
		}, ""},
		{"nest custom message", 400, bodyNestCustom, "class-validator", []field{f("", "Please pick a conversation", "null")}, ""},
		{"class-validator objects", 422, bodyClassValidatorErrors, "class-validator", []field{
			f("email", "email must be an email", `"bad"`),
			f("address.city", "city should not be empty", `""`),
		}, ""},
		{"fastify ajv v8", 400, bodyFastifyValidation, "ajv", []field{
			f("age", "must be >= 18", "null"),
			f("email", "must have required property 'email'", "null"),
			f("items.0.name", "must be string", "null"),
		}, ""},
		{"ajv v6", 400, bodyAjv6, "ajv", []field{f("email", `should match format "email"`, "null")}, ""},
		{"field list", 400, bodyFieldList, "fields", []field{f("phone", "must be E.164", `"555"`)}, "Phone number is not valid"},
		{"field list on a 422", 422, bodyFieldList, "fields", []field{f("phone", "must be E.164", `"555"`)}, "Phone number is not valid"},
		{"fastify message kept", 400, bodyFastifyValidation, "ajv", []field{
			f("age", "must be >= 18", "null"),
			f("email", "must have required property 'email'", "null"),
			f("items.0.name", "must be string", "null"),
		}, "body/age must be >= 18"},
		{"field map", 400, bodyFieldMap, "fields", []field{f("email", "invalid", "null"), f("name", "is required", "null")}, "Bad input"},
		{"rails style", 422, bodyRailsStyle, "fields", []field{f("email", "is invalid", "null"), f("email", "is taken", "null")}, ""},
	}
	runValidationCases(t, tests, false)
}

// The same shapes on another status keep it, and its code: a 409's field
// map is a conflict, not invalid input. The app's code is kept.
func TestClassifyFieldMapOnConflict(t *testing.T) {
	t.Parallel()
	res := classifyJSON(409, bodyConflictMap)
	if res.Kind != "status" || res.Err.Status != 409 || res.Err.Details["fields"] != nil {
		t.Fatalf("kind %q status %d details %v, want the status's, without fields", res.Kind, res.Err.Status, res.Err.Details)
	}
	if got := res.Err.Details["upstreamCode"]; got != "EMAIL_TAKEN" {
		t.Errorf("upstreamCode = %v, want EMAIL_TAKEN", got)
	}
}

// A 4xx's own code is kept in details.upstreamCode, beside the catalogue's:
// clients branch on it. Never a Node system error's or a database driver's,
// and never a 5xx's in production.
func TestClassifyKeepsAppCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		dev    bool
		want   any // nil = none
	}{
		{"fastify default", 400, bodyFastifyDefault, false, "FST_ERR_VALIDATION"},
		{"nest conflict", 409, `{"statusCode":409,"message":"Email taken","code":"EMAIL_TAKEN"}`, false, "EMAIL_TAKEN"},
		{"under error", 400, `{"error":{"message":"Title is required","code":"TITLE_REQUIRED"}}`, false, "TITLE_REQUIRED"},
		{"errorCode", 402, `{"message":"Quota used up","errorCode":"QUOTA"}`, false, "QUOTA"},
		{"numeric", 403, `{"message":"Account locked","code":1042}`, false, int64(1042)},
		{"slash and dots", 404, `{"message":"No such conversation","code":"conversation/not.found"}`, false, "conversation/not.found"},
		{"node system error", 400, `{"message":"Bad upload","code":"ENOENT"}`, false, nil},
		{"mysql", 409, `{"message":"Duplicate","code":"ER_DUP_ENTRY"}`, false, nil},
		{"sqlstate", 409, `{"message":"Duplicate","code":"23505"}`, false, nil},
		{"sqlstate with a letter", 400, `{"message":"Bad column","code":"42P01"}`, false, nil},
		{"prisma", 409, `{"message":"Duplicate","code":"P2002"}`, false, nil},
		{"mongo duplicate key", 409, `{"message":"Duplicate","code":11000}`, false, nil},
		{"not a name", 400, `{"message":"Bad","code":"has spaces in it"}`, false, nil},
		{"5xx in production", 500, `{"message":"boom","code":"PAYMENT_BACKEND_DOWN"}`, false, nil},
		{"5xx in development", 500, `{"message":"boom","code":"PAYMENT_BACKEND_DOWN"}`, true, "PAYMENT_BACKEND_DOWN"},
		{"validation list", 400, bodyFastifyValidation, false, "FST_ERR_VALIDATION"},
		{"node internal", 400, `{"message":"Bad","code":"ERR_INVALID_ARG_TYPE"}`, false, nil},
		{"module not found", 400, `{"message":"Bad","code":"MODULE_NOT_FOUND"}`, false, nil},
		{"class name", 409, `{"message":"Taken","code":"SequelizeUniqueConstraintError"}`, false, nil},
		{"sqlstate XX", 400, `{"message":"Bad","code":"XX000"}`, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := apierrors.ClassifyUpstream(apierrors.Reply{Status: tt.status, ContentType: jsonCT, Body: []byte(tt.body)},
				testID, apierrors.ClassifyOptions{Development: tt.dev})
			if got := res.Err.Details["upstreamCode"]; got != tt.want {
				t.Errorf("upstreamCode = %#v, want %#v (details %v)", got, tt.want, res.Err.Details)
			}
		})
	}
}

// Messages a 4xx carries are kept when they compare (ajv's "must be >= 18")
// or name a route under a directory's name; markup and runtime text are not.
func TestClassifyMessagesFromFrameworks(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, body, want string }{
		{"comparison", bodyFastifyDefault, "body/age must be >= 18"},
		{"less than", `{"message":"limit must be <= 100"}`, "limit must be <= 100"},
		{"nest 404", `{"message":"Cannot GET /api/home/feed","error":"Not Found","statusCode":404}`, "Cannot GET /api/home/feed"},
		{"fastify 404", `{"message":"Route GET:/app/settings not found","error":"Not Found","statusCode":404}`, "Route GET:/app/settings not found"},
		{"interpolated undefined", `{"message":"Conversation undefined not found"}`, "Conversation undefined not found"},
		{"tag", `{"message":"<script>x</script> not found"}`, ""},
		{"entity", `{"message":"a &amp; b"}`, ""},
		{"a file", `{"message":"Missing /opt/chat/config/app.json"}`, ""},
		{"runtime", `{"message":"Cannot read properties of undefined (reading 'id')"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := classifyJSON(404, tt.body)
			want := tt.want
			if want == "" {
				want = apierrors.CodeNotFound.Message()
			}
			if res.Err.Message != want {
				t.Errorf("Message = %q, want %q", res.Err.Message, want)
			}
		})
	}
}

// A 401 the app answered without a recognised error object says which
// token failure it is by its Bearer challenge (RFC 6750) or its message.
func TestClassifyTokenFailureBy401(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, challenge, body string
		want                  apierrors.Code
	}{
		{"bearer invalid_token", `Bearer realm="api", error="invalid_token", error_description="The signature is invalid"`, ``, apierrors.CodeTokenInvalid},
		{"bearer expired", `Bearer error="invalid_token", error_description="The access token expired"`, ``, apierrors.CodeTokenExpired},
		{"bearer without error", `Bearer realm="api"`, `{"message":"Unauthorized"}`, apierrors.CodeAuthRequired},
		{"message expired", ``, `{"message":"Token expired"}`, apierrors.CodeTokenExpired},
		{"message jwt expired", ``, `{"statusCode":401,"message":"jwt expired"}`, apierrors.CodeTokenExpired},
		{"message malformed", ``, `{"message":"jwt malformed"}`, apierrors.CodeTokenInvalid},
		{"message invalid token", ``, `{"message":"Invalid token"}`, apierrors.CodeTokenInvalid},
		{"message other", ``, `{"message":"Please log in"}`, apierrors.CodeAuthRequired},
		{"message not valid", ``, `{"message":"token is not valid"}`, apierrors.CodeTokenInvalid},
		{"session is not a token", ``, `{"message":"Session expired, please log in again"}`, apierrors.CodeAuthRequired},
		{"password is not a token", ``, `{"message":"Invalid password"}`, apierrors.CodeAuthRequired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := apierrors.ClassifyUpstream(apierrors.Reply{Status: 401, ContentType: jsonCT, Body: []byte(tt.body), WWWAuthenticate: tt.challenge},
				testID, apierrors.ClassifyOptions{})
			if res.Code != tt.want || res.Err.Status != 401 {
				t.Errorf("code %s status %d, want %s 401", res.Code, res.Err.Status, tt.want)
			}
			// Without a message of the app's, the code's own message: an
			// expired token told by its challenge said "Authentication is
			// required" (QA).
			if tt.body == "" && res.Err.Message != tt.want.Message() {
				t.Errorf("message %q, want %q", res.Err.Message, tt.want.Message())
			}
		})
	}
}

// Node's own 431 (no body) says what chatguard's own 431 says.
func TestClassify431(t *testing.T) {
	t.Parallel()
	res := apierrors.ClassifyUpstream(apierrors.Reply{Status: 431}, testID, apierrors.ClassifyOptions{})
	if res.Err.Status != 431 || res.Err.Message != apierrors.HeadersTooLarge {
		t.Errorf("status %d message %q", res.Err.Status, res.Err.Message)
	}
}

// Hand-made field messages are held to the envelope message's rule: a
// runtime's or a database's text, markup or a path becomes "Invalid value"
// (review: they reached details.fields).
func TestClassifyFrameworkFieldsNoInternals(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"errors":{"db":"SQL error near 'users'"}}`,
		`{"errors":[{"field":"user","message":"NullPointerException in UserService.find"}]}`,
		`{"message":["Cannot read properties of undefined (reading 'id')"],"statusCode":400}`,
		`{"errors":{"file":"Cannot find module '/app/config'"}}`,
		`{"errors":{"name":"<b>bad</b>"}}`,
	} {
		res := classifyJSON(400, body)
		for _, fl := range fieldsOf(t, res.Err) {
			if fl.Message != "Invalid value" {
				t.Errorf("%s: field %q message %q, want \"Invalid value\"", body, fl.Field, fl.Message)
			}
		}
	}
	// A bare "fields" map (no message, no error beside it) may be the data
	// echoed back: not taken for messages.
	if res := classifyJSON(422, `{"fields":{"name":"Alice"}}`); res.Err.Details["fields"] != nil {
		t.Errorf("an echoed fields map became messages: %v", res.Err.Details)
	}
	if res := classifyJSON(404, `{"message":"Cannot find module '/app/config'"}`); res.Err.Message != apierrors.CodeNotFound.Message() {
		t.Errorf("message %q kept", res.Err.Message)
	}
}
