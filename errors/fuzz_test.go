package errors_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	apierrors "github.com/chatguard/chatguard/errors"
	"github.com/chatguard/chatguard/internal/redact"
)

// fuzzSeeds holds one body of every shape ClassifyUpstream recognises.
var fuzzSeeds = []struct {
	status int
	ct     string
	body   string
}{
	{409, jsonCT, bodyEnvelope}, {404, jsonCT, bodyEnvelopeWithID},
	{400, jsonCT, bodyJoi}, {400, jsonCT, bodyJoiLegacy}, {422, jsonCT, bodyJoiNamed}, {400, jsonCT, bodyJoiNested},
	{400, jsonCT, bodyJoiWrapped}, {400, jsonCT, bodyJoiPattern},
	{400, jsonCT, bodyCelebrate},
	{422, jsonCT, bodyExpressValidatorV6}, {400, jsonCT, bodyExpressValidatorV7}, {400, jsonCT, bodyExpressValidatorArray},
	{400, jsonCT, bodyMongoose}, {400, jsonCT, bodyMongoosePassword},
	{401, jsonCT, bodyJWTExpired}, {401, jsonCT, bodyJWTInvalid}, {401, jsonCT, bodyJWTNotBefore},
	{401, jsonCT, bodyJWTNested}, {401, jsonCT, bodyJWTNestedErr}, {401, jsonCT, bodyJWTNestedData},
	{401, jsonCT, bodyExpressJWTRequired}, {401, jsonCT, bodyExpressJWTExpired}, {401, jsonCT, bodyExpressJWTInvalid},
	{401, jsonCT, bodyExpressJWTv5Expired}, {401, jsonCT, bodyExpressJWTRevoked},
	{500, jsonCT, bodyFirestoreNotFound}, {500, jsonCT, bodyFirestoreDenied}, {500, jsonCT, bodyFirestoreUnauth},
	{500, jsonCT, bodyFirestoreUnavailable}, {500, jsonCT, bodyFirestorePrefixed}, {503, jsonCT, bodyFirestorePrefixedDown},
	{500, jsonCT, bodyStorageNotFound}, {401, jsonCT, bodyFirebaseTokenExpired}, {500, jsonCT, bodyFirebaseUserNotFound},
	{500, jsonCT, bodyFirebaseErrorInfo}, {401, jsonCT, bodyFirebaseErrorInfoRevoked}, {500, jsonCT, bodyFirebaseNested},
	{500, jsonCT, bodyGRPCNotFound}, {500, jsonCT, bodyGRPCDenied}, {500, jsonCT, bodyGRPCUnauth}, {500, jsonCT, bodyGRPCDown},
	{404, jsonCT, bodyGoogleAPI}, {403, jsonCT, bodyGoogleAPIDetails},
	{500, jsonCT, bodyTwilioAuth}, {400, jsonCT, bodyTwilioNode}, {400, jsonCT, bodyTwilioWhatsApp},
	{500, jsonCT, bodyTwilioNested}, {400, jsonCT, bodyTwilioOutOfRange},
	{404, jsonCT, `{"statusCode":404,"error":"Not Found","message":"Conversation not found"}`},
	{404, "text/plain; charset=utf-8", "Conversation not found"},
	{400, jsonCT, bodyNestValidation}, {400, jsonCT, bodyNestCustom}, {422, jsonCT, bodyClassValidatorErrors},
	{400, jsonCT, bodyFastifyValidation}, {400, jsonCT, bodyAjv6}, {400, jsonCT, bodyFastifyDefault},
	{400, jsonCT, bodyFieldList}, {400, jsonCT, bodyFieldMap}, {422, jsonCT, bodyRailsStyle}, {409, jsonCT, bodyConflictMap},
	{404, "text/html; charset=utf-8", bodyExpressHTML},
	{500, jsonCT, bodyNodeCrash}, {500, "text/plain", bodyNodeCrashText},
	{502, "", ""},
}

func FuzzClassifyUpstream(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s.status, s.ct, []byte(s.body), false, false)
		f.Add(s.status, s.ct, []byte(s.body), false, true)
	}
	f.Add(400, jsonCT, []byte(bodyJoi[:60]), true, true)
	f.Fuzz(func(t *testing.T, status int, ct string, body []byte, truncated, dev bool) {
		// ClassifyUpstream is only called for upstream error replies.
		status = 400 + int(uint(status)%200)
		rep := apierrors.Reply{Status: status, ContentType: ct, Body: body, Truncated: truncated}
		opts := apierrors.ClassifyOptions{Development: dev}
		res := apierrors.ClassifyUpstream(rep, testID, opts)
		checkResult(t, rep, res, dev)

		// Plant secrets where the shapes keep values, then require that
		// none of them reaches an envelope chatguard writes.
		if containsSecret(body) {
			return
		}
		prep := rep
		var p planter
		prep.Body = p.plantSecrets(body)
		pres := apierrors.ClassifyUpstream(prep, testID, opts)
		checkResult(t, prep, pres, dev)
		if pres.PassThrough {
			return // the backend's own envelope is its responsibility
		}
		out := pres.Err.Marshal(testID, testNow)
		for _, s := range []string{secretPW, testJWT} {
			if bytes.Contains(out, []byte(s)) {
				t.Fatalf("secret %q reaches the envelope\ninput %d %q dev=%v\n%s\noutput %s", s, status, ct, dev, prep.Body, out)
			}
		}
	})
}

func containsSecret(body []byte) bool {
	if bytes.Contains(body, []byte(secretPW)) || bytes.Contains(body, []byte(testJWT)) {
		return true
	}
	// Also when JSON escapes spell it.
	var doc any
	if json.Unmarshal(body, &doc) == nil {
		b, _ := json.Marshal(doc)
		return bytes.Contains(b, []byte(secretPW)) || bytes.Contains(b, []byte(testJWT))
	}
	return false
}

func checkResult(t *testing.T, rep apierrors.Reply, res apierrors.Result, dev bool) {
	t.Helper()
	if res.PassThrough {
		if rep.Truncated || res.Err != nil || res.Kind != "envelope" || res.Code == "" {
			t.Fatalf("pass-through: Truncated=%v Err=%v Kind=%q Code=%q", rep.Truncated, res.Err, res.Kind, res.Code)
		}
		if !json.Valid(res.Body) {
			t.Fatalf("pass-through body is not JSON: %q (input %q)", res.Body, rep.Body)
		}
		var env map[string]any
		if err := json.Unmarshal(res.Body, &env); err != nil {
			t.Fatalf("pass-through body is not an object: %q: %v", res.Body, err)
		}
		if id, _ := env["requestId"].(string); id == "" {
			t.Fatalf("pass-through body has no requestId: %q", res.Body)
		}
		return
	}
	e := res.Err
	if e == nil {
		t.Fatalf("neither PassThrough nor Err: %+v", res)
	}
	if !e.Code.Known() || res.Code != e.Code {
		t.Fatalf("code %q (Result.Code %q) is not in the catalogue", e.Code, res.Code)
	}
	if s := e.HTTPStatus(); s < 400 || s > 599 {
		t.Fatalf("status %d for upstream %d", s, rep.Status)
	}
	if e.Message == "" {
		t.Fatal("empty message")
	}
	out := e.Marshal(testID, testNow)
	var env struct {
		Success *bool `json:"success"`
		Error   struct {
			Code      string         `json:"code"`
			Message   string         `json:"message"`
			Details   map[string]any `json:"details"`
			Timestamp string         `json:"timestamp"`
		} `json:"error"`
		RequestID string `json:"requestId"`
	}
	if err := json.Unmarshal(out, &env); err != nil {
		t.Fatalf("envelope is not JSON: %q: %v", out, err)
	}
	if env.Success == nil || *env.Success || env.Error.Code != string(e.Code) || env.RequestID != testID || env.Error.Timestamp != "2026-01-30T19:45:30.123Z" {
		t.Fatalf("envelope %s", out)
	}
	if rep.Truncated && e.Details != nil {
		t.Fatalf("truncated reply got details %v", e.Details)
	}
	if code, ok := e.Details["upstreamCode"]; ok {
		// The app's own code: a name or a whole number, on a 4xx in production.
		if s, isString := code.(string); (!isString || !upstreamCodeShape.MatchString(s)) && !isWholeNumber(code) {
			t.Fatalf("upstreamCode %#v is neither a code name nor a whole number", code)
		}
		if !dev && rep.Status >= 500 {
			t.Fatalf("5xx got upstreamCode %v in production", code)
		}
	}
	if !dev && res.Kind == "status" && e.Details != nil && (len(e.Details) != 1 || e.Details["upstreamCode"] == nil) {
		t.Fatalf("status fallback got details beyond upstreamCode %v", e.Details)
	}
	if !dev && rep.Status >= 500 && res.Kind == "status" && e.Message != e.Code.Message() {
		t.Fatalf("5xx message %q is not the catalogue's", e.Message)
	}
	if fs, ok := e.Details["fields"].([]any); ok && (len(fs) == 0 || len(fs) > 50) {
		t.Fatalf("%d fields", len(fs))
	}
	if s, ok := e.Details["upstreamBody"].(string); ok && utf8.RuneCountInString(s) > 257 {
		t.Fatalf("upstreamBody has %d runes", utf8.RuneCountInString(s))
	}
	if _, ok := e.Details["upstreamBody"]; ok && !dev {
		t.Fatal("upstreamBody in production")
	}
}

// plantSecrets returns body with a password and a bearer JWT wherever the
// recognised shapes carry values: a "password" and an "authorization" member
// in every object, a bearer token appended to every message, and the
// password as the value of every validation entry that names a sensitive field.
func (p *planter) plantSecrets(body []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err == nil && !dec.More() {
		switch doc.(type) {
		case map[string]any, []any:
			if b, err := json.Marshal(p.plant(doc)); err == nil {
				return b
			}
		}
	}
	return append(append([]byte(nil), body...), "\nAuthorization: Bearer "+testJWT+"\npassword="+secretPW+" Bearer "+testJWT...)
}

// planter notes whether it planted a value under a dotted path whose last
// segment only is sensitive (a known bug of the development snippet).
type planter struct{ dottedPath bool }

func (p *planter) plant(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			t[k] = p.plant(val)
		}
		for _, k := range []string{"message", "msg", "error", "detail", "title"} {
			if s, ok := t[k].(string); ok {
				t[k] = s + " Bearer " + testJWT
			}
		}
		if last, whole, ok := namedField(t); ok && redact.IsSensitiveKey(last) {
			p.dottedPath = p.dottedPath || !redact.IsSensitiveKey(whole)
			t["value"] = secretPW
			if ctx, ok := t["context"].(map[string]any); ok {
				ctx["value"], ctx["key"] = secretPW, last
			}
		}
		t["password"] = secretPW
		t["authorization"] = "Bearer " + testJWT
		return t
	case []any:
		for i := range t {
			t[i] = p.plant(t[i])
		}
	}
	return v
}

// namedField returns the last segment of the field a validation entry names,
// by the rule ClassifyUpstream applies: path (string or Joi array), else param.
func namedField(m map[string]any) (last, whole string, ok bool) {
	var name string
	switch p := m["path"].(type) {
	case string:
		name = p
	case []any:
		if len(p) == 0 {
			return "", "", false
		}
		s, ok := p[len(p)-1].(string)
		if !ok {
			return "", "", false // an index: see TestRegressionJoiArrayIndexPathNotSensitive
		}
		name = s
	}
	if name == "" {
		name, _ = m["param"].(string)
	}
	if name == "" {
		return "", "", false
	}
	last = name
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		last = name[i+1:]
	}
	return last, name, true
}

var upstreamCodeShape = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.:/-]{0,63}$`)

func isWholeNumber(v any) bool {
	n, ok := v.(int64)
	return ok && n > 0
}
