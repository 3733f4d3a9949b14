package errors_test

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"
	"testing"

	apierrors "github.com/chatguard/chatguard/errors"
)

// A body with a stray closing brace after the envelope is accepted as an
// envelope (json.Decoder.More reports false before '}'), and requestId is then
// spliced in before that last brace: the client gets invalid JSON.
func TestRegressionPassThroughTrailingBrace(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		bodyEnvelope + "}",
		bodyEnvelopeWithID + "}",
		bodyEnvelope + "]",
	} {
		res := classifyJSON(409, body)
		if res.PassThrough && !json.Valid(res.Body) {
			t.Errorf("input %s\n  got PassThrough with invalid JSON body %s\n  want either no pass-through or a valid JSON body", body, res.Body)
		}
	}
}

// Google API errors without a details member ({"error":{"code":404,
// "status":"NOT_FOUND"}}) are never recognised: the numeric-code branch of
// firebaseCode returns before the "status" fallback that the comment describes.
func TestRegressionGoogleAPIErrorWithoutDetails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body string
		code apierrors.Code
	}{
		{bodyGoogleAPI, apierrors.CodeNotFound},
		{`{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED"}}`, apierrors.CodeForbidden},
		{`{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`, apierrors.CodeAuthRequired},
	}
	for _, tt := range tests {
		// The Node app rethrew the Google error, so the reply is a 500.
		res := classifyJSON(500, tt.body)
		if res.Kind != "firebase" || res.Code != tt.code || res.Err.HTTPStatus() != tt.code.Status() {
			t.Errorf("input 500 %s\n  got Kind=%q %s %d\n  want Kind=\"firebase\" %s %d", tt.body, res.Kind, res.Code, res.Err.HTTPStatus(), tt.code, tt.code.Status())
		}
	}
}

// In development the snippet of a JSON body is re-encoded, so its newlines
// are the two characters `\n`: the "\n    at " cut never matches and stack
// frames (file paths) reach the client.
func TestRegressionDevSnippetKeepsJSONStackFrames(t *testing.T) {
	t.Parallel()
	res := classifyDev(500, jsonCT, bodyNodeCrash)
	s := snippetOf(t, res)
	for _, frame := range []string{"/app/src/a.js:1:2", `    at `, "node_modules"} {
		if strings.Contains(s, frame) {
			t.Errorf("input 500 %s\n  got upstreamBody %q\n  want no stack frame (%q)", bodyNodeCrash, s, frame)
		}
	}
}

// In development the snippet is redact.Value of the body: Mongoose repeats
// the rejected value inside its messages, where no key marks it as secret.
func TestRegressionDevSnippetLeaksMongooseMessageValue(t *testing.T) {
	t.Parallel()
	res := classifyDev(400, jsonCT, bodyMongoosePassword)
	if s := snippetOf(t, res); strings.Contains(s, secretPW) {
		t.Errorf("input %s\n  got upstreamBody %q\n  want no %q", bodyMongoosePassword, s, secretPW)
	}
}

// Joi's string.pattern.base and Mongoose's minlength/maxlength/enum/match
// messages quote the rejected value; the field's value is filtered but the
// message carries the password to the client in production.
func TestRegressionValidationMessageQuotesSecret(t *testing.T) {
	t.Parallel()
	for _, body := range []string{bodyJoiPattern, bodyMongoosePassword} {
		res := classifyJSON(400, body)
		out := string(res.Err.Marshal(testID, testNow))
		if strings.Contains(out, secretPW) {
			t.Errorf("input %s\n  got %s\n  want no %q (the field's value is [FILTERED]; its message must not quote it)", body, out, secretPW)
		}
	}
}

// appendField judges a field by its last path segment, so a Joi path that
// ends in an array index (["tokens", 0]) is not seen as sensitive, while the
// same field from express-validator ("tokens[0]") is.
func TestRegressionJoiArrayIndexPathNotSensitive(t *testing.T) {
	t.Parallel()
	body := `{"_original":{"refreshTokens":["tok_live_123"]},"details":[{"message":"\"refreshTokens[0]\" must be a valid GUID","path":["refreshTokens",0],"type":"string.guid","context":{"label":"refreshTokens[0]","value":"tok_live_123","key":0}}]}`
	res := classifyJSON(400, body)
	fs := fieldsOf(t, res.Err)
	if len(fs) != 1 || string(fs[0].Value) != `"[FILTERED]"` {
		t.Errorf("input %s\n  got fields %s\n  want value \"[FILTERED]\"", body, mustJSON(t, fs))
	}
}

// Mongoose's errors member is a JSON object; ranging over the decoded map
// lists its fields in random order, so the same upstream reply gives
// differently ordered envelopes (and, past 50 fields, a random subset).
func TestRegressionMongooseFieldOrderRandom(t *testing.T) {
	t.Parallel()
	var first []string
	for i := range 50 {
		res := classifyJSON(400, bodyMongoose)
		var names []string
		for _, fl := range fieldsOf(t, res.Err) {
			names = append(names, fl.Field)
		}
		if i == 0 {
			first = names
			continue
		}
		if strings.Join(names, ",") != strings.Join(first, ",") {
			want := append([]string(nil), first...)
			sort.Strings(want)
			t.Fatalf("input %s\n  call 1 fields %v, call %d fields %v\n  want one stable order (the body's, or sorted: %v)", bodyMongoose, first, i+1, names, want)
		}
	}
}

// Any object with success:false and a string error.code is passed through
// untouched, so a backend that wraps a raw Node or Firebase error the seed's
// way ({success:false, error: err}) sends its internals (addresses, project
// paths) to the client. A catalogue-like code (upper-case, A-Z0-9_) or at
// least a message would tell a real envelope from a wrapped error.
func TestRegressionEnvelopeLookalikePassesInternals(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"success":false,"error":{"code":"ECONNREFUSED","errno":-111,"syscall":"connect","address":"10.0.0.5","port":6379}}`,
		`{"success":false,"error":{"code":"not-found","message":"No document to update: projects/chat-prod/databases/(default)/documents/conversations/abc"}}`,
	} {
		res := classifyJSON(500, body)
		if res.PassThrough {
			t.Errorf("input 500 %s\n  got PassThrough (code %q) with body %s\n  want it classified (INTERNAL_ERROR / NOT_FOUND) without the internals", body, res.Code, res.Body)
		}
	}
}

// A bare "unauthorized" code (common in Node apps for a missing login) is
// read as Firebase Storage's storage/unauthorized and turns a 401 into 403.
func TestRegressionBareUnauthorizedCodeBecomesForbidden(t *testing.T) {
	t.Parallel()
	body := `{"code":"UNAUTHORIZED","message":"Login required"}`
	res := classifyJSON(401, body)
	if res.Err.HTTPStatus() != 401 {
		t.Errorf("input 401 %s\n  got %s %d\n  want a 401 (AUTHENTICATION_REQUIRED)", body, res.Code, res.Err.HTTPStatus())
	}
}

// redact.Value judges a validation entry by its whole path ("settings.key"
// normalises to "settingskey"), ClassifyUpstream by its last segment ("key"):
// production filters the value, the development snippet shows it.
func TestRegressionDevSnippetLeaksDottedPathValue(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"errors":[{"type":"field","value":"S3cr3tZZ","msg":"Invalid value","path":"settings.key","location":"body"}]}`,
		`{"errors":{"db.pass":{"name":"ValidatorError","message":"Path ` + "`db.pass`" + ` is invalid.","kind":"regexp","path":"db.pass","value":"S3cr3tZZ"}},"_message":"Config validation failed","name":"ValidationError","message":"Config validation failed"}`,
	} {
		res := classifyDev(400, jsonCT, body)
		if out := res.Err.Marshal(testID, testNow); bytes.Contains(out, []byte(secretPW)) {
			t.Errorf("input %s\n  got %s\n  want no %q (details.fields has it as [FILTERED])", body, out, secretPW)
		}
	}
}

// An upstream envelope keeps its shape, but in production no stack trace or
// file path in it reaches the client.
func TestRegressionEnvelopeStacksScrubbed(t *testing.T) {
	t.Parallel()
	body := `{"success":false,"error":{"code":"CONVERSATION_LOCKED","message":"Error at /app/src/routes/messages.js:42:13","details":{"stack":"Error: x\n    at f (/app/src/a.js:1:2)","conversationId":"c1"},"timestamp":"2026-01-30T19:45:30.123Z"}}`
	res := apierrors.ClassifyUpstream(apierrors.Reply{Status: 409, ContentType: "application/json", Body: []byte(body)}, "req_1_x", apierrors.ClassifyOptions{})
	if !res.PassThrough || !json.Valid(res.Body) {
		t.Fatalf("not passed through: %+v", res)
	}
	out := string(res.Body)
	for _, leak := range []string{"/app/src", "    at ", "stack"} {
		if strings.Contains(out, leak) {
			t.Errorf("%q reached the client: %s", leak, out)
		}
	}
	for _, keep := range []string{`"conversationId":"c1"`, `"code":"CONVERSATION_LOCKED"`, `"requestId":"req_1_x"`} {
		if !strings.Contains(out, keep) {
			t.Errorf("%s lost: %s", keep, out)
		}
	}
	dev := apierrors.ClassifyUpstream(apierrors.Reply{Status: 409, ContentType: "application/json", Body: []byte(body)}, "req_1_x", apierrors.ClassifyOptions{Development: true})
	if !strings.Contains(string(dev.Body), "stack") {
		t.Errorf("development mode scrubbed the envelope: %s", dev.Body)
	}
}
