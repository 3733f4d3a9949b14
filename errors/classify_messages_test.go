package errors_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	apierrors "github.com/chatguard/chatguard/errors"
)

// A short, safe upstream message on a 4xx is kept; anything that could carry
// internals is replaced with the catalogue's message.
func TestClassifyClientMessage(t *testing.T) {
	t.Parallel()
	long200 := strings.Repeat("a", 200)
	long201 := strings.Repeat("a", 201)
	multi200 := strings.Repeat("ñ", 200) // 200 runes, 400 bytes
	tests := []struct {
		name   string
		status int
		ct     string
		body   string
		want   string // "" means the catalogue message
	}{
		{"message", 404, jsonCT, `{"message":"Conversation not found"}`, "Conversation not found"},
		{"express/http-errors shape", 404, jsonCT, `{"statusCode":404,"error":"Not Found","message":"Conversation not found"}`, "Conversation not found"},
		{"error string", 404, jsonCT, `{"error":"Conversation not found"}`, "Conversation not found"},
		{"msg", 409, jsonCT, `{"msg":"Message already deleted"}`, "Message already deleted"},
		{"detail (problem+json)", 403, "application/problem+json", `{"type":"about:blank","title":"Forbidden","status":403,"detail":"Only admins may close conversations"}`, "Only admins may close conversations"},
		{"title only", 403, "application/problem+json", `{"type":"about:blank","title":"Forbidden","status":403}`, "Forbidden"},
		{"nested error.message", 404, jsonCT, `{"error":{"message":"Conversation not found"}}`, "Conversation not found"},
		{"first non-empty key wins", 400, jsonCT, `{"message":"","msg":"Text is required"}`, "Text is required"},
		{"text/plain", 404, "text/plain; charset=utf-8", "Conversation not found\n", "Conversation not found"},
		{"Text/Plain mixed case", 429, "Text/Plain", "Too many messages, slow down", "Too many messages, slow down"},
		{"exactly 200 runes", 400, jsonCT, `{"message":"` + long200 + `"}`, long200},
		{"200 multi-byte runes", 400, jsonCT, `{"message":"` + multi200 + `"}`, multi200},
		{"secret in message is redacted", 401, jsonCT, `{"message":"Invalid Bearer abc123def"}`, "Invalid Bearer [FILTERED]"},
		{"password pair in message is redacted", 400, jsonCT, `{"message":"Login failed for password=hunter2"}`, "Login failed for password=[FILTERED]"},
		// Everyday sentences that once matched a substring of the internals
		// list (QA: Joi's own default text was replaced).
		{"Joi string.min", 400, jsonCT, `{"message":"\"password\" length must be at least 8 characters long"}`, `"password" length must be at least 8 characters long`},
		{"at least", 400, jsonCT, `{"message":"Password must be at least 8 characters"}`, "Password must be at least 8 characters"},
		{"at the moment", 409, jsonCT, `{"message":"Meeting room is full at the moment"}`, "Meeting room is full at the moment"},
		{"please select", 400, jsonCT, `{"message":"Please select a conversation first"}`, "Please select a conversation first"},
		{"select a file from", 400, jsonCT, `{"message":"Please select a file from your device"}`, "Please select a file from your device"},
		{"PostgreSQL or MySQL", 400, jsonCT, `{"message":"Only PostgreSQL or MySQL exports are supported"}`, "Only PostgreSQL or MySQL exports are supported"},
		{"Exceptional", 400, "text/plain", "Exceptional characters are not allowed", "Exceptional characters are not allowed"},
		{"stack as a word", 400, jsonCT, `{"message":"Card stack is full"}`, "Card stack is full"},

		{"201 runes", 400, jsonCT, `{"message":"` + long201 + `"}`, ""},
		{"multi-line", 400, jsonCT, `{"message":"Bad request\nsee logs"}`, ""},
		{"tab", 400, jsonCT, `{"message":"Bad\trequest"}`, ""},
		{"control characters", 400, jsonCT, `{"message":"bad\u0000value\u001b[31m red \u0007"}`, ""}, // QA
		{"C1 control", 400, jsonCT, `{"message":"bad\u009bvalue"}`, ""},
		{"html tags", 400, jsonCT, `{"message":"<b>Bad</b> request"}`, ""},
		{"TypeError", 400, jsonCT, `{"message":"TypeError: Cannot read properties of undefined (reading 'x')"}`, ""},
		{"ReferenceError", 400, jsonCT, `{"message":"ReferenceError: user is not defined"}`, ""},
		{"connection string", 400, jsonCT, `{"message":"cannot reach amqp://guest@rabbit.internal:5672"}`, ""},
		{"a link is no connection string", 400, jsonCT, `{"message":"See https://chat.example/help@faq"}`, "See https://chat.example/help@faq"},
		{"undefined", 400, jsonCT, `{"message":"conversationId is undefined"}`, ""},
		{"unix path", 404, jsonCT, `{"message":"ENOENT: no such file or directory, open '/app/uploads/a.png'"}`, ""},
		{"home path", 404, jsonCT, `{"message":"Missing file /home/node/app/config.json"}`, ""},
		{"windows path", 404, jsonCT, `{"message":"Missing file C:\\app\\config.json"}`, ""},
		{"node_modules", 400, jsonCT, `{"message":"Error in node_modules/express"}`, ""},
		{"js position", 400, jsonCT, `{"message":"Unexpected token in index.js:10"}`, ""},
		{"stack frame", 400, jsonCT, `{"message":"Error: boom at Object.handler"}`, ""},
		{"SQL", 400, jsonCT, `{"message":"ER_PARSE_ERROR: You have an error in your SQL syntax"}`, ""},
		{"select", 400, jsonCT, `{"message":"failed: select * from users"}`, ""},
		{"ECONNREFUSED", 400, jsonCT, `{"message":"connect ECONNREFUSED 127.0.0.1:6379"}`, ""},
		{"exception", 400, jsonCT, `{"message":"NullPointerException"}`, ""},
		{"stack word", 400, jsonCT, `{"message":"Maximum call stack size exceeded"}`, ""},
		{"exception word", 400, jsonCT, `{"message":"An exception occurred"}`, ""},
		{"SQL word", 400, jsonCT, `{"message":"Invalid SQL near users"}`, ""},
		{"stack trace words", 400, jsonCT, `{"message":"see stack trace"}`, ""},
		{"one-line stack frame", 400, jsonCT, `{"message":"boom at Layer.handle (server.mjs)"}`, ""},
		{"frame with position", 400, jsonCT, `{"message":"boom at file:///srv/a.mjs:3:9"}`, ""},
		{"select count", 400, jsonCT, `{"message":"failed: select count(*) from messages"}`, ""},
		{"Mongoose CastError", 400, jsonCT, `{"message":"Cast to ObjectId failed for value \"abc\" (type string) at path \"_id\" for model \"User\""}`, ""},
		{"select columns", 400, jsonCT, `{"message":"failed: select id, email from users"}`, ""},
		{"invalid UTF-8 in text", 400, "text/plain", "Bad \xff request", ""},
		{"text/html with markup is never used", 404, "text/html; charset=utf-8", bodyExpressHTML, ""},
		// Express's res.status(404).send('…') is text/html (QA: the message was lost).
		{"text/html line without markup", 404, "text/html; charset=utf-8", "Conversation not found", "Conversation not found"},
		{"text/html with an entity", 409, "text/html; charset=utf-8", "Tom &amp; Jerry exist", ""},
		{"other content types are not used", 404, "application/octet-stream", "Conversation not found", ""},
		{"JSON string body", 404, jsonCT, `"Conversation not found"`, ""},
		{"JSON number message", 404, jsonCT, `{"message":404}`, ""},
		// A 5xx message is never used, however harmless it looks.
		{"5xx safe message", 500, jsonCT, `{"message":"Database is down"}`, ""},
		{"5xx text", 503, "text/plain", "Service restarting", ""},
		{"5xx crash", 500, jsonCT, bodyNodeCrash, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := apierrors.ClassifyUpstream(apierrors.Reply{Status: tt.status, ContentType: tt.ct, Body: []byte(tt.body)}, testID, apierrors.ClassifyOptions{})
			if res.Err == nil || res.Kind != "status" {
				t.Fatalf("Kind=%q Err=%v", res.Kind, res.Err)
			}
			want := tt.want
			if want == "" {
				want = res.Err.Code.Message()
			}
			if res.Err.Message != want {
				t.Errorf("Message = %q, want %q", res.Err.Message, want)
			}
			if res.Err.HTTPStatus() != tt.status {
				t.Errorf("status %d, want %d", res.Err.HTTPStatus(), tt.status)
			}
		})
	}
}

// The internals of a crashed handler never reach the client in production.
func TestClassifyCrashNeverLeaks(t *testing.T) {
	t.Parallel()
	leaks := []string{"TypeError", "Cannot read", "/app/src", "a.js", "node_modules", "Layer.handle", "stack"}
	tests := []struct {
		name   string
		status int
		ct     string
		body   string
	}{
		{"JSON 500", 500, jsonCT, bodyNodeCrash},
		{"text 500", 500, "text/plain", bodyNodeCrashText},
		{"html 500", 500, "text/html", "<pre>" + bodyNodeCrashText + "</pre>"},
		{"JSON 502", 502, jsonCT, bodyNodeCrash},
		{"JSON 400", 400, jsonCT, bodyNodeCrash},
		{"text 400", 400, "text/plain", bodyNodeCrashText},
		{"error string 500", 500, jsonCT, `{"error":"TypeError: Cannot read properties of undefined (reading 'x')\n    at /app/src/a.js:1:2"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := apierrors.ClassifyUpstream(apierrors.Reply{Status: tt.status, ContentType: tt.ct, Body: []byte(tt.body)}, testID, apierrors.ClassifyOptions{})
			out := string(res.Err.Marshal(testID, testNow))
			for _, l := range leaks {
				if strings.Contains(out, l) {
					t.Errorf("envelope contains %q: %s", l, out)
				}
			}
			if res.Err.Message != res.Err.Code.Message() || res.Err.Details != nil {
				t.Errorf("message %q details %v", res.Err.Message, res.Err.Details)
			}
		})
	}
}

// Values of sensitive fields come out as [FILTERED]; other values are
// shortened and redacted, and structures are dropped.
func TestClassifyFieldValues(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 150)
	ev := func(path, value string) string {
		return `{"errors":[{"type":"field","value":` + value + `,"msg":"Invalid value","path":"` + path + `","location":"body"}]}`
	}
	tests := []struct {
		name  string
		body  string
		value string // raw JSON
	}{
		{"password", ev("password", `"S3cr3tZZ"`), `"[FILTERED]"`},
		{"newPassword", ev("newPassword", `"S3cr3tZZ"`), `"[FILTERED]"`},
		{"password_confirmation", ev("password_confirmation", `"S3cr3tZZ"`), `"[FILTERED]"`},
		{"token", ev("token", `"abc"`), `"[FILTERED]"`},
		{"nested accessToken", ev("auth.accessToken", `"abc"`), `"[FILTERED]"`},
		{"x-api-key", ev("headers.x-api-key", `"abc"`), `"[FILTERED]"`},
		{"secret number", ev("pin.secret", `1234`), `"[FILTERED]"`},
		{"secret bool", ev("secret", `true`), `"[FILTERED]"`},
		{"sensitive but null stays null", ev("password", `null`), `null`},
		{"email kept", ev("email", `"ana@example.com"`), `"ana@example.com"`},
		{"author kept", ev("author", `"ana"`), `"ana"`},
		{"number kept exactly", ev("limit", `12345678901234567890`), `12345678901234567890`},
		{"object dropped", ev("filter", `{"password":"S3cr3tZZ"}`), `null`},
		{"array dropped", ev("ids", `["a","b"]`), `null`},
		{"long value shortened", ev("text", `"`+long+`"`), `"` + strings.Repeat("x", 100) + `…"`},
		{"JWT in a plain field", ev("note", `"`+testJWT+`"`), `"[FILTERED]"`},
		{"bearer in a plain field", ev("note", `"Bearer abc.def"`), `"Bearer [FILTERED]"`},
		{"url password in a plain field", ev("webhook", `"https://bot:hunter2@hooks.example.com/x"`), `"https://bot:[FILTERED]@hooks.example.com/x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := classifyJSON(400, tt.body)
			if res.Kind != "express-validator" {
				t.Fatalf("Kind %q", res.Kind)
			}
			fs := fieldsOf(t, res.Err)
			if len(fs) != 1 || string(fs[0].Value) != tt.value {
				t.Errorf("value %s, want %s", fs[0].Value, tt.value)
			}
			out := string(res.Err.Marshal(testID, testNow))
			for _, s := range []string{secretPW, testJWT, "hunter2"} {
				if strings.Contains(out, s) {
					t.Errorf("envelope contains %q: %s", s, out)
				}
			}
		})
	}
}

func TestClassifyFieldLimits(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString(`{"errors":[`)
	for i := range 60 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"msg":"Invalid value","path":"items[%d]","value":%d}`, i, i)
	}
	b.WriteString(`]}`)
	res := classifyJSON(400, b.String())
	fs := fieldsOf(t, res.Err)
	if len(fs) != 50 {
		t.Fatalf("%d fields, want at most 50", len(fs))
	}
	if fs[0].Field != "items[0]" || fs[49].Field != "items[49]" {
		t.Errorf("fields %s .. %s, want the first 50 in order", fs[0].Field, fs[49].Field)
	}

	longName := strings.Repeat("n", 120)
	longMsg := strings.Repeat("m", 250)
	res = classifyJSON(400, `{"errors":[{"msg":"`+longMsg+`","path":"`+longName+`","value":"v"}]}`)
	fs = fieldsOf(t, res.Err)
	if fs[0].Field != strings.Repeat("n", 100)+"…" {
		t.Errorf("field not shortened to 100 runes: %q", fs[0].Field)
	}
	if fs[0].Message != strings.Repeat("m", 200)+"…" {
		t.Errorf("message not shortened to 200 runes: %q", fs[0].Message)
	}
}

// Entries express-validator never writes make the whole array unrecognised.
func TestClassifyExpressValidatorRejectsStrangers(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"errors":[{"msg":"Invalid value","path":"email"},"oops"]}`,
		`{"errors":[{"msg":"Invalid value"}]}`,
		`{"errors":[{"path":"email","value":"x"}]}`,
		`{"errors":[]}`,
		`[]`,
		`[1,2,3]`,
	} {
		res := classifyJSON(400, body)
		if res.Kind != "status" || res.Err.Details != nil {
			t.Errorf("%s: Kind %q details %v", body, res.Kind, res.Err.Details)
		}
	}
}

// A truncated reply is classified by its status alone: no details, no
// upstream message, no pass-through, also in development.
func TestClassifyTruncated(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		code   apierrors.Code
	}{
		{"joi prefix", 400, bodyJoi[:80], apierrors.CodeValidation},
		{"whole joi body", 400, bodyJoi, apierrors.CodeValidation},
		{"whole envelope", 409, bodyEnvelope, apierrors.CodeValidation},
		{"jwt", 401, bodyJWTExpired, apierrors.CodeAuthRequired},
		{"twilio", 500, bodyTwilioAuth, apierrors.CodeInternal},
		{"safe 404 message", 404, `{"message":"Conversation not found"}`, apierrors.CodeNotFound},
		{"nothing read", 502, "", apierrors.CodeExternalService},
	}
	for _, tt := range tests {
		for _, dev := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s dev=%v", tt.name, dev), func(t *testing.T) {
				t.Parallel()
				res := apierrors.ClassifyUpstream(apierrors.Reply{Status: tt.status, ContentType: jsonCT, Body: []byte(tt.body), Truncated: true},
					testID, apierrors.ClassifyOptions{Development: dev})
				if res.PassThrough || res.Err == nil || res.Kind != "status" {
					t.Fatalf("PassThrough=%v Kind=%q", res.PassThrough, res.Kind)
				}
				if res.Code != tt.code || res.Err.HTTPStatus() != tt.status {
					t.Errorf("%s %d, want %s %d", res.Code, res.Err.HTTPStatus(), tt.code, tt.status)
				}
				if res.Err.Message != tt.code.Message() || res.Err.Details != nil {
					t.Errorf("message %q details %v", res.Err.Message, res.Err.Details)
				}
			})
		}
	}
}

// snippetOf returns details.upstreamBody of a development-mode result.
func snippetOf(t *testing.T, res apierrors.Result) string {
	t.Helper()
	s, ok := res.Err.Details["upstreamBody"].(string)
	if !ok {
		t.Fatalf("no upstreamBody in %v", res.Err.Details)
	}
	return s
}

func TestClassifyDevelopment(t *testing.T) {
	t.Parallel()
	longText := strings.Repeat("Conversation service failed. ", 40)
	tests := []struct {
		name   string
		status int
		ct     string
		body   string
		// want, when not empty, is the exact snippet.
		want string
		// mustHave are substrings the snippet keeps.
		mustHave []string
	}{
		{name: "text stack trace cut to its first line", status: 500, ct: "text/plain", body: bodyNodeCrashText,
			want: "TypeError: Cannot read properties of undefined (reading 'x')"},
		{name: "html", status: 500, ct: "text/html", body: "<h1>Internal Server Error</h1>", want: "<h1>Internal Server Error</h1>"},
		// Express's default error handler in development (finalhandler).
		{name: "express html stack", status: 500, ct: "text/html; charset=utf-8",
			body:     "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>TypeError: boom<br> &nbsp; &nbsp;at /app/src/a.js:1:2<br> &nbsp; &nbsp;at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)</pre>\n</body>\n</html>\n",
			mustHave: []string{"<pre>TypeError: boom"}},
		{name: "secrets in JSON", status: 500, ct: jsonCT,
			body:     `{"message":"login failed","authorization":"Bearer ` + testJWT + `","password":"` + secretPW + `","note":"sent ` + testJWT + `","retry":true}`,
			mustHave: []string{`"message":"login failed"`, `"password":"[FILTERED]"`, `"retry":true`, `"authorization":"[FILTERED]"`}},
		{name: "secrets in text", status: 502, ct: "text/plain",
			body:     "upstream said: Authorization: Bearer opaque-token-123 password=" + secretPW + " " + testJWT + " redis://default:" + secretPW + "@cache:6379",
			mustHave: []string{"upstream said", "[FILTERED]", "redis://default:[FILTERED]@cache:6379"}},
		{name: "express-validator password value", status: 400, ct: jsonCT, body: bodyExpressValidatorV6,
			mustHave: []string{`"param":"password","value":"[FILTERED]"`}},
		{name: "express-validator v7 nested password value", status: 400, ct: jsonCT, body: bodyExpressValidatorV7,
			mustHave: []string{`"path":"user.password","type":"field","value":"[FILTERED]"`}},
		{name: "joi password in _original and context", status: 400, ct: jsonCT, body: bodyJoi,
			mustHave: []string{`"_original":{"email":"not-an-email","password":"[FILTERED]"}`}},
		{name: "mongoose password value", status: 400, ct: jsonCT,
			body:     `{"errors":{"password":{"name":"ValidatorError","message":"Path ` + "`password`" + ` is required.","kind":"required","path":"password","value":"` + secretPW + `"}},"_message":"User validation failed","name":"ValidationError","message":"User validation failed"}`,
			mustHave: []string{`"errors":{"password":"[FILTERED]"}`}},
		{name: "long text shortened", status: 503, ct: "text/plain", body: longText, want: string([]rune(longText)[:256]) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := classifyDev(tt.status, tt.ct, tt.body)
			if got := res.Err.Details["upstreamStatus"]; got != tt.status {
				t.Errorf("upstreamStatus = %v, want %d", got, tt.status)
			}
			s := snippetOf(t, res)
			if tt.want != "" && s != tt.want {
				t.Errorf("upstreamBody = %q, want %q", s, tt.want)
			}
			for _, m := range tt.mustHave {
				if !strings.Contains(s, m) {
					t.Errorf("upstreamBody %q lacks %q", s, m)
				}
			}
			if n := utf8.RuneCountInString(s); n > 257 {
				t.Errorf("upstreamBody has %d runes", n)
			}
			out := string(res.Err.Marshal(testID, testNow))
			for _, leak := range []string{secretPW, testJWT, "opaque-token-123", "    at ", "/app/src/a.js"} {
				if strings.Contains(out, leak) {
					t.Errorf("envelope contains %q: %s", leak, out)
				}
			}
			if !json.Valid([]byte(out)) {
				t.Errorf("invalid JSON %s", out)
			}
		})
	}
}

// Development details are added to classified errors too, next to their own.
func TestClassifyDevelopmentKeepsClassification(t *testing.T) {
	t.Parallel()
	res := classifyDev(400, jsonCT, bodyCelebrate)
	if res.Kind != "celebrate" || res.Code != apierrors.CodeValidation {
		t.Fatalf("Kind %q Code %s", res.Kind, res.Code)
	}
	if len(fieldsOf(t, res.Err)) != 2 || res.Err.Details["upstreamStatus"] != 400 || snippetOf(t, res) == "" {
		t.Errorf("details %v", res.Err.Details)
	}

	res = classifyDev(500, jsonCT, bodyTwilioAuth)
	if res.Err.Details["service"] != "twilio" || res.Err.Details["upstreamStatus"] != 500 {
		t.Errorf("twilio details %v", res.Err.Details)
	}

	// An empty body gives the status but no snippet.
	res = classifyDev(404, "", "")
	if res.Err.Details["upstreamStatus"] != 404 {
		t.Errorf("details %v", res.Err.Details)
	}
	if _, ok := res.Err.Details["upstreamBody"]; ok {
		t.Errorf("snippet of an empty body: %v", res.Err.Details)
	}

	// Production adds nothing.
	res = classifyJSON(404, `{"message":"Conversation not found"}`)
	if res.Err.Details != nil {
		t.Errorf("production details %v", res.Err.Details)
	}
}

// An envelope is passed through in development too, without details added.
func TestClassifyDevelopmentPassThrough(t *testing.T) {
	t.Parallel()
	res := classifyDev(404, jsonCT, bodyEnvelopeWithID)
	if !res.PassThrough || string(res.Body) != bodyEnvelopeWithID {
		t.Errorf("PassThrough=%v Body=%s", res.PassThrough, res.Body)
	}
}
