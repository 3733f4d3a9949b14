package errors_test

import (
	"strings"
	"testing"

	apierrors "github.com/chatguard/chatguard/errors"
)

// Bodies as Zod 3, yup 1, JSON:API servers and RFC 7807/9457 problem
// details send them (QA: each came through as a bare VALIDATION_ERROR, its
// field messages lost).
const (
	// res.status(400).json({success: false, error: zodError}).
	bodyZodError = `{"success":false,"error":{"issues":[{"code":"invalid_type","expected":"string","received":"undefined","path":["conversationId"],"message":"Required"},{"code":"too_small","minimum":1,"type":"string","inclusive":true,"exact":false,"path":["items",0,"text"],"message":"String must contain at least 1 character(s)"}],"name":"ZodError"}}`
	// res.status(422).json({errors: zodError.errors}).
	bodyZodErrors = `{"errors":[{"code":"invalid_string","validation":"email","path":["email"],"message":"Invalid email"}]}`
	// zodError.flatten(), with a message.
	bodyZodFlatten = `{"message":"Invalid input","formErrors":["Passwords do not match"],"fieldErrors":{"email":["Invalid email"],"age":["Expected number, received string"]}}`
	// yup with abortEarly: false, and with the default (one error).
	bodyYupInner = `{"name":"ValidationError","value":{"email":"x"},"errors":["email must be a valid email","name is a required field"],"inner":[{"name":"ValidationError","value":"x","path":"email","type":"email","errors":["email must be a valid email"],"params":{},"inner":[],"message":"email must be a valid email"},{"name":"ValidationError","path":"name","type":"required","errors":["name is a required field"],"params":{},"inner":[],"message":"name is a required field"}],"message":"2 errors occurred"}`
	bodyYupOne   = `{"name":"ValidationError","value":{},"path":"name","type":"required","errors":["name is a required field"],"params":{"path":"name"},"inner":[],"message":"name is a required field"}`
	// JSON:API, one error of the whole document beside two of fields.
	bodyJSONAPI = `{"errors":[{"status":"422","title":"Invalid Attribute","detail":"must be a valid email","source":{"pointer":"/data/attributes/email"}},{"status":"422","detail":"too large","source":{"parameter":"page[size]"}},{"status":"422","title":"Conversation is closed"}]}`
	// RFC 7807's example, and RFC 9457's.
	bodyProblem7807 = `{"type":"https://example.net/validation-error","title":"Your request parameters didn't validate.","detail":"Age must be a positive integer","invalid-params":[{"name":"age","reason":"must be a positive integer"},{"name":"color","reason":"must be 'green', 'red' or 'blue'"}]}`
	bodyProblem9457 = `{"type":"https://example.net/validation-error","title":"Your request is not valid.","errors":[{"detail":"must be a positive integer","pointer":"#/age"},{"detail":"must be 'green', 'red' or 'blue'","pointer":"#/profile/color"}]}`
	// Zod 4: JSON.stringify(zodError), format(), treeifyError(), issues under details.
	bodyZod4Error  = `{"error":{"name":"ZodError","message":"[\n  {\n    \"expected\": \"string\",\n    \"code\": \"invalid_type\",\n    \"path\": [\n      \"email\"\n    ],\n    \"message\": \"Invalid input: expected string, received undefined\"\n  },\n  {\n    \"code\": \"too_small\",\n    \"minimum\": 8,\n    \"path\": [\n      \"items\", 1, \"name\"\n    ],\n    \"message\": \"Too small\"\n  }\n]"}}`
	bodyZodFormat  = `{"_errors":["Passwords do not match"],"email":{"_errors":["Invalid email"]},"address":{"_errors":[],"zip":{"_errors":["Required"]}}}`
	bodyZodTree    = `{"errors":["Passwords do not match"],"properties":{"email":{"errors":["Invalid email"]},"tags":{"errors":[],"items":[null,{"errors":["Too long"]}]}}}`
	bodyZodDetails = `{"message":"Validation failed","details":[{"code":"invalid_type","path":["age"],"message":"Expected number"}]}`
	// JSON:API errors without any pointer are not field errors.
	bodyJSONAPINoFields = `{"errors":[{"status":"422","title":"Conversation is closed"}]}`
)

func TestClassifySchemaLibraries(t *testing.T) {
	t.Parallel()
	tests := []validationCase{
		{"zod error", 400, bodyZodError, "zod", []field{
			f("conversationId", "Required", "null"),
			f("items.0.text", "String must contain at least 1 character(s)", "null"),
		}, ""},
		{"zod issues under errors, 422 kept", 422, bodyZodErrors, "zod", []field{f("email", "Invalid email", "null")}, ""},
		{"zod flatten", 400, bodyZodFlatten, "zod", []field{
			f("", "Passwords do not match", "null"),
			f("age", "Expected number, received string", "null"),
			f("email", "Invalid email", "null"),
		}, "Invalid input"},
		{"yup abortEarly false", 400, bodyYupInner, "yup", []field{
			f("email", "email must be a valid email", `"x"`),
			f("name", "name is a required field", "null"),
		}, ""},
		{"yup one error", 422, bodyYupOne, "yup", []field{f("name", "name is a required field", "null")}, "name is a required field"},
		{"json:api", 422, bodyJSONAPI, "json-api", []field{
			f("", "Conversation is closed", "null"),
			f("email", "must be a valid email", "null"),
			f("page[size]", "too large", "null"),
		}, ""},
		{"rfc 7807 invalid-params", 400, bodyProblem7807, "problem", []field{
			f("age", "must be a positive integer", "null"),
			f("color", "must be 'green', 'red' or 'blue'", "null"),
		}, "Age must be a positive integer"},
		{"zod 4 error", 400, bodyZod4Error, "zod", []field{
			f("email", "Invalid input: expected string, received undefined", "null"),
			f("items.1.name", "Too small", "null"),
		}, "The request data is invalid"},
		{"zod format", 400, bodyZodFormat, "zod", []field{
			f("", "Passwords do not match", "null"),
			f("address.zip", "Required", "null"),
			f("email", "Invalid email", "null"),
		}, ""},
		{"zod treeifyError", 422, bodyZodTree, "zod", []field{
			f("", "Passwords do not match", "null"),
			f("email", "Invalid email", "null"),
			f("tags.1", "Too long", "null"),
		}, ""},
		{"zod issues under details", 400, bodyZodDetails, "zod", []field{f("age", "Expected number", "null")}, "Validation failed"},
		{"rfc 9457 errors", 422, bodyProblem9457, "json-api", []field{
			f("age", "must be a positive integer", "null"),
			f("profile.color", "must be 'green', 'red' or 'blue'", "null"),
		}, ""},
	}
	runValidationCases(t, tests, true)
}

// The shapes count on a 400 or 422 only, and a JSON:API list that names no
// field is not a field list; a value that leaks internals does not pass.
func TestClassifySchemaShapesNotFields(t *testing.T) {
	t.Parallel()
	if res := classifyJSON(409, bodyZodErrors); res.Kind != "status" || res.Err.Details["fields"] != nil {
		t.Errorf("zod issues on a 409: kind %q details %v, want the status's without fields", res.Kind, res.Err.Details)
	}
	if res := classifyJSON(422, bodyJSONAPINoFields); res.Kind == "json-api" {
		t.Errorf("json:api without pointers read as fields: %v", res.Err.Details)
	}
	leak := `{"issues":[{"code":"custom","path":["email"],"message":"Error: ECONNREFUSED at /app/src/db.js:12:5"}],"name":"ZodError"}`
	res := classifyJSON(400, leak)
	for _, fl := range fieldsOf(t, res.Err) {
		if fl.Message != "Invalid value" {
			t.Errorf("field message %q reached the client", fl.Message)
		}
	}
}

// A yup error with one failure has that failure's message at the top, and
// it quotes the value: the password is filtered there as in the fields
// (QA: the envelope's message showed it).
func TestClassifySchemaMessageQuotesNoSecret(t *testing.T) {
	t.Parallel()
	body := `{"name":"ValidationError","value":{"password":"S3cretPass!","pin":"1"},"path":"password","type":"matches","errors":["password \"S3cretPass!\" must be digits"],"params":{"value":"S3cretPass!"},"inner":[{"name":"ValidationError","value":"S3cretPass!","path":"password","type":"matches","errors":["password \"S3cretPass!\" must be digits"],"inner":[],"message":"password \"S3cretPass!\" must be digits"}],"message":"password \"S3cretPass!\" must be digits"}`
	res := classifyJSON(400, body)
	out := string(res.Err.Marshal(testID, testNow))
	if strings.Contains(out, "S3cretPass!") {
		t.Fatalf("the password reached the envelope: %s", out)
	}
	if res.Err.Message != `password "[FILTERED]" must be digits` {
		t.Errorf("message %q", res.Err.Message)
	}
}

// A shorter secret inside a longer one never leaves part of the longer in
// clear, whatever order the body's map gives them; a value that is also a
// name in the body is no secret and leaves messages readable (review).
func TestClassifyMessageFilterLongestFirstNotNames(t *testing.T) {
	t.Parallel()
	body := `{"message":"password \"hunter2024\" must be digits","value":{"password":"hunter2024","ssn":"2024"}}`
	for range 50 {
		if got := classifyJSON(400, body).Err.Message; got != `password "[FILTERED]" must be digits` {
			t.Fatalf("message %q", got)
		}
	}
	named := `{"name":"ValidationError","errors":["email must be a valid email"],"path":"email","value":{"email":"bad","authMethod":"email"},"inner":[],"message":"email must be a valid email"}`
	if got := classifyJSON(422, named).Err.Message; got != "email must be a valid email" {
		t.Errorf("message %q, want it readable", got)
	}
}

// A secret field's message with no value beside it (Zod, an
// express-validator item without value) may still quote the value; Zod 4's
// input is read as the value; and a secret echoed as another field's value
// is filtered there too (QA: a card number kept under "card").
func TestClassifySecretQuotedWithoutValue(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct{ body, gone string }{
		"zod 4 input":                  {`{"name":"ZodError","issues":[{"code":"too_small","path":["password"],"message":"Password hunter2 is too short","input":"hunter2"}]}`, "hunter2"},
		"zod without input":            {`{"name":"ZodError","issues":[{"code":"custom","path":["password"],"message":"h4ckme99 is too common"}]}`, "h4ckme99"},
		"express-validator":            {`{"errors":[{"type":"field","path":"password","msg":"'letmein' is too weak","location":"body"}]}`, "letmein"},
		"number secret in its message": {`{"isJoi":true,"name":"ValidationError","details":[{"message":"4111111111111111 fails the Luhn check","path":["creditCardNumber"],"type":"any.custom","context":{"key":"creditCardNumber","value":4111111111111111}}]}`, "4111111111111111"},
		"number echoed elsewhere":      {`{"isJoi":true,"name":"ValidationError","_original":{"creditCardNumber":"4111111111111111","card":4111111111111111},"details":[{"message":"\"card\" must be a string","path":["card"],"type":"string.base","context":{"key":"card","value":4111111111111111}},{"message":"\"creditCardNumber\" is not allowed","path":["creditCardNumber"],"type":"object.unknown","context":{"key":"creditCardNumber","value":"4111111111111111"}}]}`, "4111111111111111"},
		"card number first":            {`{"name":"ZodError","issues":[{"code":"custom","path":["cardNumber"],"message":"4111111111111111 is not a valid card"}]}`, "4111111111111111"},
		"password last":                {`{"name":"ZodError","issues":[{"code":"custom","path":["password"],"message":"too common: hunter2"}]}`, "hunter2"},
		"value with a comma":           {`{"name":"ZodError","issues":[{"code":"custom","path":["password"],"message":"h4ckme99, is too common"}]}`, "h4ckme99"},
		"card with dashes":             {`{"name":"ZodError","issues":[{"code":"custom","path":["cardNumber"],"message":"4111-1111-1111-1111 is not a valid card"}]}`, "4111-1111-1111-1111"},
		"cvv of three":                 {`{"name":"ZodError","issues":[{"code":"custom","path":["cvv"],"message":"cvv 987 is invalid"}]}`, "cvv 987"},
		"word with a dash":             {`{"name":"ZodError","issues":[{"code":"custom","path":["password"],"message":"hunter-2024 is too common"}]}`, "hunter-2024"},
		"digits then letters":          {`{"name":"ZodError","issues":[{"code":"custom","path":["password"],"message":"2024pass is too common"}]}`, "2024pass"},
		"joi secret elsewhere":         {`{"isJoi":true,"name":"ValidationError","_original":{"creditCardNumber":"4111111111111111","card":"4111111111111111"},"details":[{"message":"\"creditCardNumber\" is not allowed","path":["creditCardNumber"],"type":"object.unknown","context":{"key":"creditCardNumber","value":"4111111111111111"}},{"message":"\"card\" must be a number","path":["card"],"type":"number.base","context":{"key":"card","value":"4111111111111111"}}]}`, "4111111111111111"},
	} {
		res := classifyJSON(400, c.body)
		out := string(res.Err.Marshal(testID, testNow))
		if strings.Contains(out, c.gone) {
			t.Errorf("%s: %q reached the envelope: %s", name, c.gone, out)
		}
		if res.Err.Code != apierrors.CodeValidation {
			t.Errorf("%s: code %s", name, res.Err.Code)
		}
	}
	// The rule a client broke stays readable (QA: a first version
	// filtered "8-64", "(UTF-8)", a date and the field's own name).
	for _, msg := range []string{
		"String must contain at least 8 character(s)",
		"Password must be 8-64 characters",
		"Must be at least 12 characters (UTF-8)",
		"Password expired on 2024-01-01",
		"must match pattern [A-Za-z0-9]+",
		"must not contain the word 'password'",
		"'password' is required",
		"UTF-8 only",
		"must be at least 8chars",
		"String must contain at most 1024 character(s)",
		"password must be at most 1024 characters",
		"must be less than or equal to 9999",
		"hash must be base64url or argon2id",
	} {
		res := classifyJSON(400, `{"name":"ZodError","issues":[{"code":"custom","path":["password"],"message":"`+msg+`"}]}`)
		if fs := fieldsOf(t, res.Err); len(fs) != 1 || fs[0].Message != msg {
			t.Errorf("readable message changed: %s", mustJSON(t, fs))
		}
	}
}
