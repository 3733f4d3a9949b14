package errors_test

import (
	"strings"
	"testing"

	apierrors "github.com/chatguard/chatguard/errors"
)

// The QA report's bodies: a 4xx that is not an envelope, carrying a database
// driver's text, an error class name or a stack frame.
const (
	leakDup         = `E11000 duplicate key error collection: chat.users index: email_1 dup key: { email: "ada@example.com" }`
	leakMongoJSON   = `{"message":"MongoServerError: E11000 duplicate key error collection: chat.users index: email_1 dup key: { email: \"ada@example.com\" }"}`
	leakMySQLJSON   = `{"message":"ER_DUP_ENTRY: Duplicate entry 'ada@example.com' for key 'users.email'"}`
	leakPgJSON      = `{"error":"relation \"users\" does not exist"}`
	leakSeqJSON     = `{"message":"SequelizeUniqueConstraintError: Validation error"}`
	leakEVStackJSON = `{"errors":[{"msg":"Error: boom\n    at /srv/app/x.js:1:1","path":"email","location":"body","value":"q"}]}`
)

// leaksEverywhere must not appear anywhere in an envelope built from the
// bodies above, in production.
var leaksEverywhere = []string{"E11000", "ada@example.com", "/srv/app", "Error:"}

// A wrapped 4xx (not an envelope) keeps its status and the status's code, but
// a message that shows a database's own text, an error class name, a stack
// frame or a path is replaced by the catalogue message; a validation field's
// such message by "Invalid value".
func TestClassifyWrapped4xxDatabaseTextIsReplaced(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		status    int
		ct        string
		body      string
		kind      string
		code      apierrors.Code
		leaks     []string // in addition to leaksEverywhere
		fieldMsgs []string // express-validator: the fields' messages sent
	}{
		{name: "409 JSON MongoServerError E11000", status: 409, ct: jsonCT, body: leakMongoJSON,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"MongoServerError", "email_1", "chat.users"}},
		{name: "409 text/plain E11000", status: 409, ct: "text/plain; charset=utf-8", body: leakDup,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"email_1", "chat.users"}},
		{name: "400 JSON MySQL ER_DUP_ENTRY", status: 400, ct: jsonCT, body: leakMySQLJSON,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"ER_DUP_ENTRY", "users.email"}},
		{name: "404 JSON PostgreSQL relation does not exist", status: 404, ct: jsonCT, body: leakPgJSON,
			kind: "status", code: apierrors.CodeNotFound, leaks: []string{"relation", "users"}},
		{name: "400 JSON SequelizeUniqueConstraintError", status: 400, ct: jsonCT, body: leakSeqJSON,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"Sequelize", "ConstraintError"}},
		{name: "400 express-validator message with a stack frame", status: 400, ct: jsonCT, body: leakEVStackJSON,
			kind: "express-validator", code: apierrors.CodeValidation, leaks: []string{"boom", "x.js"}, fieldMsgs: []string{"Invalid value"}},

		// The other drivers and shapes the rule names.
		{name: "409 MySQL code in text/plain", status: 409, ct: "text/plain", body: "ER_NO_REFERENCED_ROW_2: Cannot add or update a child row",
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"ER_NO_REFERENCED_ROW_2"}},
		{name: "400 PostgreSQL column", status: 400, ct: jsonCT, body: `{"message":"column \"emial\" does not exist"}`,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"emial"}},
		{name: "409 PostgreSQL unique violation", status: 409, ct: jsonCT, body: `{"message":"duplicate key value violates unique constraint \"users_email_key\""}`,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"users_email_key"}},
		{name: "400 PostgreSQL SQLSTATE", status: 400, ct: jsonCT, body: `{"message":"SQLSTATE[23000]: Integrity constraint violation"}`,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"SQLSTATE"}},
		{name: "400 PostgreSQL invalid input syntax", status: 400, ct: jsonCT, body: `{"message":"invalid input syntax for type uuid: \"abc\""}`,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"uuid"}},
		{name: "409 Prisma P2002", status: 409, ct: jsonCT, body: `{"message":"P2002: Unique constraint failed on the fields: (` + "`email`" + `)"}`,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"P2002", "Unique constraint"}},
		{name: "404 Prisma code alone", status: 404, ct: jsonCT, body: `{"error":"P2025"}`,
			kind: "status", code: apierrors.CodeNotFound, leaks: []string{"P2025"}},
		{name: "400 TypeORM QueryFailedError", status: 400, ct: jsonCT, body: `{"message":"QueryFailedError: ER_BAD_NULL_ERROR"}`,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"QueryFailedError", "ER_BAD_NULL_ERROR"}},
		{name: "400 SQLite", status: 400, ct: jsonCT, body: `{"message":"SQLITE_CONSTRAINT: UNIQUE constraint failed: users.email"}`,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"SQLITE_CONSTRAINT", "users.email"}},
		{name: "422 any error class prefix", status: 422, ct: jsonCT, body: `{"message":"CastError: Cast to ObjectId failed for value \"x\""}`,
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"CastError", "ObjectId"}},
		{name: "400 bare Error prefix", status: 400, ct: "text/plain", body: "Error: boom",
			kind: "status", code: apierrors.CodeValidation, leaks: []string{"boom"}},
		{name: "404 /tmp path", status: 404, ct: jsonCT, body: `{"message":"no upload in /tmp/uploads/1.png"}`,
			kind: "status", code: apierrors.CodeNotFound, leaks: []string{"/tmp/uploads"}},
		{name: "404 Windows path", status: 404, ct: jsonCT, body: `{"message":"missing D:\\srv\\chat\\config.json"}`,
			kind: "status", code: apierrors.CodeNotFound, leaks: []string{"config.json"}},
		{name: "joi field message with a database text", status: 400, ct: jsonCT,
			body: `{"isJoi":true,"name":"ValidationError","details":[{"message":"` + strings.ReplaceAll(leakDup, `"`, `\"`) + `","path":["email"],"context":{"key":"email"}},{"message":"\"name\" is required","path":["name"],"context":{"key":"name"}}]}`,
			kind: "joi", code: apierrors.CodeValidation, leaks: []string{"email_1"}, fieldMsgs: []string{"Invalid value", `"name" is required`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := apierrors.ClassifyUpstream(apierrors.Reply{Status: tt.status, ContentType: tt.ct, Body: []byte(tt.body)}, testID, apierrors.ClassifyOptions{})
			if res.PassThrough || res.Err == nil {
				t.Fatalf("PassThrough=%v Err=%v", res.PassThrough, res.Err)
			}
			e := res.Err
			if res.Kind != tt.kind || e.Code != tt.code || res.Code != tt.code {
				t.Errorf("Kind=%q Code=%q, want %q %q", res.Kind, e.Code, tt.kind, tt.code)
			}
			if e.HTTPStatus() != tt.status {
				t.Errorf("status %d, want the upstream's %d", e.HTTPStatus(), tt.status)
			}
			if e.Message != e.Code.Message() {
				t.Errorf("Message = %q, want the catalogue's %q", e.Message, e.Code.Message())
			}
			if tt.fieldMsgs != nil {
				fs := fieldsOf(t, e)
				if len(fs) != len(tt.fieldMsgs) {
					t.Fatalf("fields %s, want %d", mustJSON(t, fs), len(tt.fieldMsgs))
				}
				for i, want := range tt.fieldMsgs {
					if fs[i].Message != want {
						t.Errorf("field %q message %q, want %q", fs[i].Field, fs[i].Message, want)
					}
				}
			} else if e.Details != nil {
				t.Errorf("details in production: %v", e.Details)
			}
			out := string(e.Marshal(testID, testNow))
			for _, l := range append(append([]string(nil), leaksEverywhere...), tt.leaks...) {
				if strings.Contains(out, l) {
					t.Errorf("envelope holds %q: %s", l, out)
				}
			}
		})
	}
}

// Ordinary 4xx messages, wrapped or in validation fields, are kept: the rule
// replaces only what shows internals.
func TestClassifyWrapped4xxOrdinaryMessagesKept(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   int
		ct       string
		body     string
		code     apierrors.Code
		message  string
		fieldMsg string // express-validator: the field's message
	}{
		{name: "email is required", status: 400, ct: jsonCT, body: `{"message":"email is required"}`,
			code: apierrors.CodeValidation, message: "email is required"},
		{name: "Conversation not found", status: 404, ct: jsonCT, body: `{"error":"Conversation not found"}`,
			code: apierrors.CodeNotFound, message: "Conversation not found"},
		{name: "text/plain conflict", status: 409, ct: "text/plain", body: "Email already registered",
			code: apierrors.CodeValidation, message: "Email already registered"},
		{name: "a route, not a file", status: 404, ct: jsonCT, body: `{"message":"Route /api/v1/conversations/42 not found"}`,
			code: apierrors.CodeNotFound, message: "Route /api/v1/conversations/42 not found"},
		{name: "a product code, not Prisma's", status: 404, ct: jsonCT, body: `{"message":"Plan P2002 is not available"}`,
			code: apierrors.CodeNotFound, message: "Plan P2002 is not available"},
		{name: "the word error", status: 400, ct: jsonCT, body: `{"message":"Error saving the profile picture"}`,
			code: apierrors.CodeValidation, message: "Error saving the profile picture"},
		// An app's own words, not a class name or a driver's code (review).
		{name: "Validation Error:", status: 400, ct: jsonCT, body: `{"message":"Validation Error: email is required"}`,
			code: apierrors.CodeValidation, message: "Validation Error: email is required"},
		{name: "Payment Error:", status: 402, ct: jsonCT, body: `{"message":"Payment Error: card declined"}`,
			code: apierrors.CodeForStatus(402), message: "Payment Error: card declined"},
		{name: "an app code starting ER_", status: 400, ct: jsonCT, body: `{"message":"Coupon code ER_2024 is not valid"}`,
			code: apierrors.CodeValidation, message: "Coupon code ER_2024 is not valid"},
		{name: "a /Users/ route", status: 404, ct: jsonCT, body: `{"message":"Route /Users/42 not found"}`,
			code: apierrors.CodeNotFound, message: "Route /Users/42 not found"},
		{name: "express-validator field", status: 400, ct: jsonCT, body: `{"errors":[{"msg":"email is required","path":"email","location":"body","value":""}]}`,
			code: apierrors.CodeValidation, message: apierrors.CodeValidation.Message(), fieldMsg: "email is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := apierrors.ClassifyUpstream(apierrors.Reply{Status: tt.status, ContentType: tt.ct, Body: []byte(tt.body)}, testID, apierrors.ClassifyOptions{})
			if res.Err == nil {
				t.Fatalf("no Err: %+v", res)
			}
			if res.Err.Code != tt.code || res.Err.Message != tt.message || res.Err.HTTPStatus() != tt.status {
				t.Errorf("got %s %q %d, want %s %q %d", res.Err.Code, res.Err.Message, res.Err.HTTPStatus(), tt.code, tt.message, tt.status)
			}
			if tt.fieldMsg != "" {
				if fs := fieldsOf(t, res.Err); len(fs) != 1 || fs[0].Message != tt.fieldMsg {
					t.Errorf("fields %s, want one with message %q", mustJSON(t, fs), tt.fieldMsg)
				}
			}
		})
	}
}

// Development mode still shows the upstream's status and a short, redacted
// snippet of its body (stack frames cut); only the message is replaced.
func TestClassifyWrapped4xxDatabaseTextDevelopmentSnippet(t *testing.T) {
	t.Parallel()
	res := classifyDev(409, jsonCT, leakMongoJSON)
	if res.Err == nil || res.Err.Message != res.Err.Code.Message() {
		t.Fatalf("Err %+v", res.Err)
	}
	if got := res.Err.Details["upstreamStatus"]; got != 409 {
		t.Errorf("upstreamStatus %v", got)
	}
	if s, _ := res.Err.Details["upstreamBody"].(string); !strings.Contains(s, "E11000 duplicate key") {
		t.Errorf("upstreamBody %q lost the upstream's text", s)
	}
	res = classifyDev(400, jsonCT, leakEVStackJSON)
	s, _ := res.Err.Details["upstreamBody"].(string)
	if !strings.Contains(s, "Error: boom") || strings.Contains(s, "/srv/app") {
		t.Errorf("upstreamBody %q: want the message with its stack frame cut", s)
	}
}

// The same database text inside an upstream envelope is replaced too, for
// the drivers the rule now names (Prisma, TypeORM, PostgreSQL columns).
func TestClassifyEnvelopeMessageOtherDrivers(t *testing.T) {
	t.Parallel()
	for _, msg := range []string{
		`P2002: Unique constraint failed on the fields: (` + "`email`" + `)`,
		`QueryFailedError: duplicate key`,
		`column \"emial\" does not exist`,
		`SQLSTATE 23505`,
	} {
		body := `{"success":false,"error":{"code":"CONFLICT_EMAIL","message":"` + msg + `"}}`
		res := classifyJSON(409, body)
		if !res.PassThrough || !strings.Contains(string(res.Body), `"message":"`+apierrors.Code("CONFLICT_EMAIL").Message()+`"`) {
			t.Errorf("%s: body %s", msg, res.Body)
		}
	}
}
