package errors

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/chatguard/chatguard/internal/redact"
)

// Reply is what the proxy saw of an upstream error response.
type Reply struct {
	Status      int
	ContentType string
	// Body is the start of the body, at most the inspection cap.
	Body []byte
	// Truncated reports that the body was larger than the cap (or could not be
	// decoded); it is then classified by status alone, without details.
	Truncated bool
	// WWWAuthenticate is the reply's WWW-Authenticate header, which says
	// on a 401 whether the token expired or is invalid (RFC 6750).
	WWWAuthenticate string
}

// Result says what to send instead of an upstream error reply.
type Result struct {
	// PassThrough is set when the reply already is an envelope: Body is then
	// the upstream body, with requestId added if it had none.
	PassThrough bool
	Body        []byte
	// Err is the envelope to send when PassThrough is false.
	Err *Error
	// Code is the code the client sees: Err.Code, or the passed-through envelope's.
	Code Code
	// UpstreamRequestID is the passed-through envelope's own requestId, kept
	// for the client, when it is not chatguard's: the one a user reports.
	UpstreamRequestID string
	// Kind names the rule that classified the reply (envelope, joi, celebrate,
	// express-validator, mongoose, jwt, firebase, twilio, status), for logs and tests.
	Kind string
}

// ClassifyOptions tune ClassifyUpstream. The zero value is production behaviour.
type ClassifyOptions struct {
	// Development adds a short, redacted snippet of the upstream body to details.
	Development bool
}

const (
	snippetBytes    = 256
	maxFields       = 50
	maxValueRunes   = 100
	maxMessageRunes = 200
)

// ClassifyUpstream turns an upstream error reply into the envelope to send.
// It recognises the shapes a Node backend really emits: envelopes, Joi,
// celebrate, express-validator and Mongoose validation errors, jsonwebtoken and
// express-jwt errors, Firebase/Firestore/gRPC errors and Twilio REST errors;
// anything else is classified by status. Stack traces, paths and internal
// messages never reach the result.
func ClassifyUpstream(rep Reply, requestID string, opts ClassifyOptions) Result {
	rep.Body = utf8Body(rep.ContentType, rep.Body)
	var doc any
	if !rep.Truncated && looksJSON(rep.ContentType, rep.Body) {
		dec := json.NewDecoder(bytes.NewReader(rep.Body))
		dec.UseNumber()
		if err := dec.Decode(&doc); err != nil || dec.Decode(new(json.RawMessage)) != io.EOF {
			doc = nil // not one JSON value: trailing bytes, or none
		}
	}
	if obj, ok := doc.(map[string]any); ok && isEnvelope(obj) {
		code, _ := obj["error"].(map[string]any)["code"].(string)
		body := rep.Body
		if clean, changed := scrubEnvelope(obj, !opts.Development); changed {
			obj = clean
			body, _ = json.Marshal(obj) // key order changes; only when something was taken out
		}
		res := Result{PassThrough: true, Body: withRequestID(body, obj, requestID), Code: Code(code), Kind: "envelope"}
		if id, ok := obj["requestId"].(string); ok && id != requestID {
			res.UpstreamRequestID = id
		}
		return res
	}
	res := classifyDoc(doc, rep.Status)
	if frameworkKind(res.Kind) {
		// Not the shapes 422 → 400 was decided for (Joi, express-validator):
		// the app's status and its own message stay, as they did before
		// these were recognised (QA: a 422 turned 400 and lost "Phone
		// number is not valid").
		res.Err.Status = rep.Status
		if msg := clientMessage(doc, rep); msg != "" {
			res.Err.Message = msg
		}
	}
	secrets := redact.SecretValues(doc)
	if res.Err != nil {
		scrubFields(res.Err.Details, secrets)
	}
	if res.Err == nil {
		res = Result{Err: New(CodeForStatus(rep.Status), ""), Kind: "status"}
		res.Err.Status = rep.Status
		if rep.Status == 431 {
			// Node's own 431 has no body; its catalogue message would say
			// the data is invalid, and chatguard's own 431 says this.
			res.Err.Message = HeadersTooLarge
		}
		if rep.Status < 500 && !rep.Truncated {
			if msg := clientMessage(doc, rep); msg != "" {
				res.Err.Message = msg
			}
		}
		if rep.Status == 401 {
			if code, ok := tokenCode(rep.WWWAuthenticate, res.Err.Message); ok {
				if res.Err.Message == res.Err.Code.Message() { // not the app's: the new code's own
					res.Err.Message = code.Message()
				}
				res.Err.Code = code
			}
		}
	}
	res.Code = res.Err.Code
	switch res.Kind {
	case "jwt", "twilio", "firebase": // their codes made the classification
	default:
		// The app's own code (EMAIL_TAKEN) is what its client branches
		// on: kept, beside the catalogue's, for a 4xx (a 5xx's may name
		// internals, and its client has nothing to act on).
		if code := appCode(doc); code != nil && (rep.Status < 500 || opts.Development) {
			if res.Err.Details == nil {
				res.Err.Details = map[string]any{}
			}
			res.Err.Details["upstreamCode"] = code
		}
	}
	// A message the app's library wrote may quote a value the body holds
	// under a sensitive name (yup's "password \"…\" must be digits"): its
	// fields had it filtered, and so has the message (QA).
	res.Err.Message = redact.ReplaceAll(res.Err.Message, secrets)
	if opts.Development && !rep.Truncated {
		if res.Err.Details == nil {
			res.Err.Details = map[string]any{}
		}
		res.Err.Details["upstreamStatus"] = rep.Status
		if s := snippet(doc, rep.Body, secrets); s != "" {
			res.Err.Details["upstreamBody"] = s
		}
	}
	return res
}

// utf8Body is body as UTF-8: without a byte-order mark (a JSON decoder
// refuses one), and decoded from ISO-8859-1 when the Content-Type's charset
// says so (a JSON decoder would turn its accented letters into U+FFFD).
func utf8Body(contentType string, body []byte) []byte {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	_, params, _ := mime.ParseMediaType(contentType)
	switch strings.ToLower(params["charset"]) {
	case "iso-8859-1", "latin1", "iso_8859-1", "l1":
		out := make([]byte, 0, len(body)+len(body)/8)
		for _, b := range body {
			out = utf8.AppendRune(out, rune(b))
		}
		return out
	}
	return body
}

func looksJSON(contentType string, body []byte) bool {
	if strings.Contains(strings.ToLower(contentType), "json") {
		return true
	}
	t := bytes.TrimSpace(body)
	return len(t) > 0 && (t[0] == '{' || t[0] == '[')
}

// isEnvelope recognises the upstream's own envelopes: success false, and an
// error with an UPPER_SNAKE code and a message. A Node system error that
// happens to sit under "error" ({"code": "ECONNREFUSED", "address": …}) is
// not one.
func isEnvelope(obj map[string]any) bool {
	if s, ok := obj["success"].(bool); !ok || s {
		return false
	}
	e, ok := obj["error"].(map[string]any)
	if !ok {
		return false
	}
	code, _ := e["code"].(string)
	_, hasMessage := e["message"].(string)
	if !hasMessage || !upperSnake(code) || nodeSystemErrors[code] {
		return false
	}
	_, errno := e["errno"]
	_, syscall := e["syscall"]
	return !errno && !syscall
}

// scrubEnvelope cleans an upstream envelope before it passes through, by the
// rules the logs follow: the values of sensitive keys anywhere in it
// (details.password, a debug block's dbPassword) and credentials in its text
// (a JWT, "Bearer …") become [FILTERED], always. In production it also takes
// stack traces out of the whole document, top level included, and replaces
// an error message that shows file paths, stack frames or a database's own
// error text: those never reach the client, whoever wrote the envelope. It
// returns the cleaned document and whether anything changed.
func scrubEnvelope(obj map[string]any, production bool) (map[string]any, bool) {
	clean, _ := redact.Value(obj).(map[string]any)
	if clean == nil { // cannot happen: Value keeps a map a map
		clean = obj
	}
	changed := !reflect.DeepEqual(clean, obj)
	e, ok := clean["error"].(map[string]any)
	if !production || !ok {
		return clean, changed
	}
	if msg, _ := e["message"].(string); leaksInternalText(msg) || connectionString.MatchString(msg) || hasControl(msg) {
		code, _ := e["code"].(string)
		e["message"] = Code(code).Message()
		changed = true
	}
	changed = dropStacks(clean) || changed
	return clean, changed
}

// withRequestID adds requestId to an envelope that lacks one, keeping the
// upstream's bytes (and so its key order and formatting) otherwise.
func withRequestID(body []byte, obj map[string]any, requestID string) []byte {
	if id, ok := obj["requestId"].(string); ok && id != "" {
		return body
	}
	if _, present := obj["requestId"]; !present {
		t := bytes.TrimRight(body, " \t\r\n")
		if n := len(t); n > 0 && t[n-1] == '}' {
			idJSON, _ := json.Marshal(requestID)
			out := make([]byte, 0, n+len(idJSON)+14)
			out = append(out, t[:n-1]...)
			out = append(out, `,"requestId":`...)
			out = append(out, idJSON...)
			return append(out, '}')
		}
	}
	obj["requestId"] = requestID
	b, err := json.Marshal(obj)
	if err != nil {
		return body
	}
	return b
}

// candidates are the objects an error may sit in: the body itself, or the
// error under a conventional key.
func candidates(doc any) []map[string]any {
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil
	}
	out := []map[string]any{obj}
	for _, k := range []string{"error", "err", "errorInfo", "data"} {
		if inner, ok := obj[k].(map[string]any); ok {
			out = append(out, inner)
		}
	}
	return out
}

func classifyDoc(doc any, status int) Result {
	if arr, ok := doc.([]any); ok {
		if fields := expressValidatorFields(arr); fields != nil {
			return validation(fields, "express-validator")
		}
		return Result{}
	}
	cands := candidates(doc)
	for _, c := range cands {
		if code, ok := jwtCode(c); ok {
			return Result{Err: New(code, ""), Kind: "jwt"}
		}
	}
	for _, c := range cands {
		if fields, kind := validationFields(c); fields != nil {
			return validation(fields, kind)
		}
	}
	if validationStatus(status) {
		for _, c := range cands {
			if fields, kind := frameworkFields(c); fields != nil {
				return validation(fields, kind)
			}
			if fields, kind := schemaFields(c); fields != nil {
				return validation(fields, kind)
			}
		}
	}
	for _, c := range cands {
		if code, ok := twilioCode(c); ok {
			e := New(CodeExternalService, "").WithDetails(map[string]any{"service": "twilio", "serviceCode": code})
			return Result{Err: e, Kind: "twilio"}
		}
	}
	for _, c := range cands {
		if code, ok := firebaseCode(c); ok {
			return Result{Err: New(code, ""), Kind: "firebase"}
		}
	}
	return Result{}
}
