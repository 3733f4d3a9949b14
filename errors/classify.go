package errors

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"reflect"
	"regexp"
	"sort"
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
		return Result{PassThrough: true, Body: withRequestID(body, obj, requestID), Code: Code(code), Kind: "envelope"}
	}
	res := classifyDoc(doc)
	secrets := redact.SecretValues(doc)
	if res.Err != nil {
		scrubFields(res.Err.Details, secrets)
	}
	if res.Err == nil {
		res = Result{Err: New(CodeForStatus(rep.Status), ""), Kind: "status"}
		res.Err.Status = rep.Status
		if rep.Status < 500 && !rep.Truncated {
			if msg := clientMessage(doc, rep); msg != "" {
				res.Err.Message = msg
			}
		}
	}
	res.Code = res.Err.Code
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
	if msg, _ := e["message"].(string); leaksInternals(msg) || leaksDatabase(msg) {
		code, _ := e["code"].(string)
		e["message"] = Code(code).Message()
		changed = true
	}
	changed = dropStacks(clean) || changed
	return clean, changed
}

// leaksDatabase recognises a database driver's or ORM's own error text in a
// message (MongoDB and Mongoose, MySQL ER_… codes, PostgreSQL, SQLite,
// Sequelize, Prisma, TypeORM), which quotes tables, indexes, columns and the
// values that collided.
func leaksDatabase(s string) bool {
	return databaseText.MatchString(s)
}

var databaseText = regexp.MustCompile(strings.Join([]string{
	`Mongo[A-Za-z]*Error`, `E11000`, // MongoServerError, MongoError, MongoBulkWriteError, MongooseError
	// MySQL/MariaDB error codes as drivers write them ("ER_DUP_ENTRY: …"),
	// the usual ones anywhere; SQLite result codes. Not an app's own codes
	// that happen to start with ER_ ("Coupon code ER_2024 is not valid").
	`\bER_[A-Z][A-Z0-9_]*:`, `\bER_(?:DUP_ENTRY|PARSE_ERROR|NO_SUCH_TABLE|BAD_FIELD_ERROR|ROW_IS_REFERENCED|NO_REFERENCED_ROW)`, `SQLITE_`,
	`Sequelize`, `QueryFailedError`, `TypeORM`,
	`Prisma`, "`prisma\\.", `^P[12][0-9]{3}\b`, `\bP[12][0-9]{3}:`, `Unique constraint failed on the`, // Prisma P1xxx/P2xxx
	`relation "[^"]*" (?:does not exist|already exists)`, `column "[^"]*" (?:does not exist|of relation)`, // PostgreSQL
	`duplicate key value violates`, `violates (?:foreign key|unique|not-null|check|exclusion) constraint`,
	`syntax error at (?:or near|end of input)`, `invalid input syntax for`, `(?i:sqlstate)`,
	// A query itself, as drivers and query builders quote it: in capitals
	// with a star, a function, DISTINCT or a quoted or qualified column
	// before FROM and the table at the end or before a clause ("SELECT
	// COUNT(*) FROM messages"), or any column before a clause; not "PLEASE
	// SELECT ONE FROM THE LIST", "I SELECT pizza FROM the menu", "Please
	// SELECT a file FROM disk". In either case with a quoted table (knex's
	// select "id" from "users") or a clause that reads as SQL ("select *
	// from users where id = 1", not "select messages from users left in
	// the room"). A bare "DELETE FROM t" only as the whole text.
	`\bSELECT\s+(?:\*|DISTINCT\b|[A-Z]+\(|["` + "`" + `]|[a-z_]+\.).{0,200}?\sFROM\s+` + sqlName + `\s*(?:$|[;)]|(?:WHERE|JOIN|INNER|LEFT|RIGHT|OUTER|ORDER|GROUP|LIMIT|OFFSET|HAVING|UNION|AS|ON)\b)`,
	`\bSELECT\s+[a-z_].{0,200}?\sFROM\s+` + sqlName + `\s+(?:WHERE|JOIN|INNER|LEFT|RIGHT|ORDER|GROUP|LIMIT)\b`,
	`(?i:\bselect\s.{1,200}?\sfrom\s+` + sqlQuoted + `)`,
	`(?i:\bselect\s.{1,200}?\sfrom\s+` + sqlName + `\s+(?:` + sqlClause + `))`,
	`(?i:\binsert\s+into\s+` + sqlName + `\s*(?:\(|values\b|select\b))`,
	`(?i:\bupdate\s+` + sqlName + `\s+set\s+` + sqlName + `\s*=)`,
	`\bDELETE\s+FROM\s+` + sqlName + `\s*(?:WHERE\b|RETURNING\b|USING\b)`, `^DELETE\s+FROM\s+` + sqlName + `\s*;?$`,
	`(?i:\bdelete\s+from\s+` + sqlQuoted + `)`,
	`(?i:\bdelete\s+from\s+` + sqlName + `\s+(?:` + sqlClause + `))`,
	// Drivers' own words. MySQL:
	`error in your SQL syntax`, `Unknown column '`, `Table '[^']*' doesn't exist`, `Column '[^']*' cannot be null`,
	`Data truncated for column`, `Data too long for column '`, `Incorrect \w+ value: '.*' for column`, `Unknown database '`,
	`Field '[^']*' doesn't have a default value`, `a foreign key constraint fails`, `Access denied for user '`,
	// PostgreSQL:
	`Failing row contains`, `value too long for type `, `password authentication failed for user`,
	`database "[^"]*" does not exist`, `permission denied for (?:table|relation|schema|database|sequence|function) `,
	`operator does not exist: `, `invalid input value for enum `, `bind message supplies \d+ parameters?`,
	`no unique or exclusion constraint matching`, `current transaction is aborted`,
	// SQLite:
	`\b(?:UNIQUE|NOT NULL|CHECK|FOREIGN KEY|PRIMARY KEY) constraint failed`, `no such (?:table|column): [A-Za-z_]`,
	`table \S+ has no column named `, `near "[^"]*": syntax error`,
	// The MongoDB driver, Prisma, Sequelize, knex, Redis (not Mongoose's
	// validation messages, "Path `email` is required.", which are the
	// app's to show):
	`buffering timed out after`,
	`Foreign key constraint failed on the field`, `Can't reach database server at`,
	"The (?:table|column) `[^`]*` does not exist in the current database",
	`notNull Violation: `, `Knex: Timeout acquiring a connection`, `\bWRONGPASS\b`, `\bNOAUTH\b`,
	// A connection's failure names the internal address it went to.
	`\b(?:connect|getaddrinfo|read|write) (?:ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|ECONNRESET|EPIPE)\b`,
	// MySQL's and PostgreSQL's texts that quote the colliding value.
	`Duplicate entry '.*' for key`, `Key \([^)]*\)=\(`,
}, "|"))

const (
	// sqlName is a table or column name as a query writes it.
	sqlName = `[\w."` + "`" + `]+`
	// sqlQuoted is one quoted as a query builder quotes it ("users",
	// `users`, "public"."users").
	sqlQuoted = `(?:"[\w.]+"|` + "`[\\w.]+`" + `)`
	// sqlClause is what follows the table in a query and not in a sentence:
	// a join, a condition with an operator, an ordering, a limit.
	sqlClause = `(?:left|right|inner|full|cross)\s+(?:outer\s+)?join\b|join\s+` + sqlName + `\s+on\b` +
		`|where\s+(?:not\s+|\(\s*)*(?:\w+\()?` + sqlName + `\)?\s*(?:[=<>!]|\bin\s*\(|\bis\s+(?:not\s+)?null\b|\blike\b|\bbetween\b)` +
		`|where\s+not\s+` + sqlName +
		`|order\s+by\s+` + sqlName + `|group\s+by\s+` + sqlName + `|limit\s+(?:\d|\$|\?)`
)

// errorClass recognises an error class name as err.toString() and
// util.inspect write it: "Error: boom" (at the start), "TypeError: …",
// "SequelizeUniqueConstraintError: …" (one word); not an app's own words
// ("Validation Error: email is required", "Payment Error: card declined").
var errorClass = regexp.MustCompile(`^Error:|\b[A-Z][A-Za-z0-9_$]*[a-z0-9_$](?:Error|Exception):`)

// leaksInternalText reports whether a message an upstream wrote shows its
// internals: stack frames, file paths, a database's own error text or an
// error class name. Such a message is replaced, never cut.
func leaksInternalText(s string) bool {
	return leaksInternals(s) || leaksDatabase(s) || errorClass.MatchString(s)
}

// fieldMessage replaces a validation field's message that shows internals.
const fieldMessage = "Invalid value"

// dropStacks takes the internals out of an envelope's members, in place:
// stack members go, and a string loses its stack frames and file paths;
// one that still shows internals (a database's own text, a query) is
// replaced by removedText. Codes (any "code" member: error.code,
// a driver's ER_DUP_ENTRY) are names a client branches on and are kept.
// It reports whether anything changed.
func dropStacks(v any) bool {
	changed := false
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			switch strings.ToLower(k) {
			case "stack", "stacktrace", "trace":
				delete(t, k)
				changed = true
				continue
			case "code":
				continue
			}
			if s, ok := val.(string); ok {
				if c := withoutInternals(s); c != s {
					t[k] = c
					changed = true
				}
				continue
			}
			changed = dropStacks(val) || changed
		}
	case []any:
		for i, val := range t {
			if s, ok := val.(string); ok {
				if c := withoutInternals(s); c != s {
					t[i] = c
					changed = true
				}
				continue
			}
			changed = dropStacks(val) || changed
		}
	}
	return changed
}

// removedText replaces a string of an upstream envelope that shows a
// database's own error text or a query, in production.
const removedText = "[REMOVED]"

// withoutInternals is s without stack frames, and with its file paths
// replaced by "[path]"; removedText if it still shows a database's text
// or a query. URLs are not paths (https://cdn.example.com/app/x.js), nor
// are an app's routes (/api/home/feed): a path is a token that starts at
// a server directory, or names node_modules or a script's line.
func withoutInternals(s string) string {
	if !strings.Contains(s, "\n") && !stackFrame.MatchString(s) && !filePath.MatchString(s) && !fsErrorPath.MatchString(s) && !leaksDatabase(s) {
		return s
	}
	c := cutStack(s)
	c = fsErrorPath.ReplaceAllString(c, "$1 '[path]'")
	c = filePath.ReplaceAllStringFunc(c, func(m string) string {
		token := strings.TrimLeft(m, " \t\n'\"(=:[,")
		if webURL.MatchString(token) {
			return m
		}
		return m[:len(m)-len(token)] + "[path]"
	})
	if leaksDatabase(c) || stackFrame.MatchString(c) {
		return removedText
	}
	return c
}

// webURL is a link a client may follow (not webpack:///src/x.ts:12).
var webURL = regexp.MustCompile(`^(?i:https?|wss?)://`)

// fsErrorPath is the path a Node fs error quotes, relative or not
// ("ENOENT: no such file or directory, open 'uploads/a.png'").
var fsErrorPath = regexp.MustCompile(`\b(open|stat|lstat|scandir|mkdir|rmdir|unlink|rename|access|readlink|copyfile|chmod|opendir|realpath) '[^']+'`)

// filePath finds a file path, with the delimiter before it: a token that
// starts at a system directory (/etc/passwd, /usr/…), or at one an app's
// routes may share a name with (app, home, Users, data, private…) and
// names a source or configuration file (/app/server.js, /app/.env) or goes
// three levels down (/home/node/app/dist); with file:// or not; a Windows
// drive (C:\…, C:/dir/…), a file:/// URL, a home-relative ~/ path,
// Docker's /run/secrets/…, or one that holds node_modules or a script's
// line (/src/server.mjs:12, x.ts:12:4). A route under such a directory
// (?next=/home/feed/42, "moved to /app/settings", /data/export.csv,
// /Users/42) is not a path.
var filePath = regexp.MustCompile(`(?:^|[\s'"(=:\[,])(?:(?:file://)?(?:` +
	`/(?:` + systemDirs + `)/` + pathSegment + pathRest + `|/run/secrets/` + pathRest +
	`|/(?:` + routeLikeDirs + `)/(?:` + pathSegment + `/){2,}` + pathSegment +
	`|/(?:` + routeLikeDirs + `)/(?:` + pathSegment + `/)*[^\s'"()<>,;?#/]*\.(?:` + codeExts + `)\b` + pathRest + `)` +
	`|file:///` + pathRest + `|[A-Za-z]:\\` + pathRest + `|[A-Za-z]:/` + pathSegment + `/` + pathRest + `|~/` + pathSegment + pathRest + `)` +
	`|` + pathRest + `(?:node_modules|[/\\]` + pathRest + `\.[cm]?[jt]sx?:[0-9]|\.[cm]?[jt]sx?:[0-9]+:[0-9])` + pathRest)

const (
	systemDirs    = `usr|srv|opt|var|tmp|root|etc|workspace|builds|snap|nix`
	routeLikeDirs = `app|home|Users|code|data|src|lib|run|mnt|private|proc|sys|dist|build`
	codeExts      = `[cm]?[jt]sx?|json|env|ya?ml|toml|ini|conf|cfg|config|db|sqlite3?|wt|log|pem|key|crt|sh|py|rb|go|node|map|lock|sql`
	pathSegment   = `[^\s'"()<>,;?#/]+`
	pathRest      = `[^\s'"()<>,;]*`
)

// leaksInternals reports whether s shows a stack or a file path.
func leaksInternals(s string) bool {
	return strings.Contains(s, "node_modules") || stackFrame.MatchString(s) || strings.Contains(s, "\n    at ") ||
		strings.Contains(s, "\n  at ") || filePath.MatchString(s) || fsErrorPath.MatchString(s)
}

func upperSnake(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// nodeSystemErrors are libuv's error codes as Node reports them.
var nodeSystemErrors = map[string]bool{
	"ECONNREFUSED": true, "ECONNRESET": true, "ECONNABORTED": true, "ETIMEDOUT": true, "ENOTFOUND": true,
	"EAI_AGAIN": true, "EPIPE": true, "EHOSTUNREACH": true, "ENETUNREACH": true, "EADDRINUSE": true,
	"EACCES": true, "EPERM": true, "ENOENT": true, "EEXIST": true, "EMFILE": true, "EISDIR": true,
	"ENOTDIR": true, "EBADF": true, "EINVAL": true, "ENOMEM": true, "ENOSPC": true, "EPROTO": true,
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

func classifyDoc(doc any) Result {
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

func validation(fields []any, kind string) Result {
	return Result{Err: New(CodeValidation, "").WithDetails(map[string]any{"fields": fields}), Kind: kind}
}

// jwtCode recognises jsonwebtoken's errors and express-jwt's UnauthorizedError.
func jwtCode(c map[string]any) (Code, bool) {
	name, _ := c["name"].(string)
	switch name {
	case "TokenExpiredError":
		return CodeTokenExpired, true
	case "JsonWebTokenError", "NotBeforeError":
		return CodeTokenInvalid, true
	case "UnauthorizedError":
		if inner, ok := c["inner"].(map[string]any); ok {
			if code, ok := jwtCode(inner); ok {
				return code, true
			}
		}
		switch c["code"] {
		case "credentials_required":
			return CodeAuthRequired, true
		case "invalid_token", "revoked_token":
			if msg, _ := c["message"].(string); msg == "jwt expired" {
				return CodeTokenExpired, true
			}
			return CodeTokenInvalid, true
		}
	}
	return "", false
}

// joiDetails reports whether every item of details is a Joi error item
// ({message, path: [...], type}), as an app that sends
// {"error": "Bad Request", "details": err.details} passes them on.
func joiDetails(details []any) bool {
	for _, d := range details {
		dm, ok := d.(map[string]any)
		if !ok {
			return false
		}
		_, msg := dm["message"].(string)
		_, path := dm["path"].([]any)
		_, typ := dm["type"].(string)
		if !msg || !path || !typ {
			return false
		}
	}
	return len(details) > 0
}

// validationFields recognises Joi, celebrate, express-validator and Mongoose
// validation errors and lists their fields.
func validationFields(c map[string]any) ([]any, string) {
	name, _ := c["name"].(string)
	isJoi, _ := c["isJoi"].(bool)
	_, hasOriginal := c["_original"]
	if details, ok := c["details"].([]any); ok && (isJoi || name == "ValidationError" || hasOriginal ||
		c["error"] == "ValidationError" || joiDetails(details)) {
		var fields []any
		for _, d := range details {
			dm, ok := d.(map[string]any)
			if !ok {
				continue
			}
			field := joiPath(dm["path"])
			var value any
			if ctx, ok := dm["context"].(map[string]any); ok {
				value = ctx["value"]
				if field == "" {
					field, _ = ctx["key"].(string)
				}
			}
			fields = appendField(fields, field, dm["message"], value)
		}
		if fields != nil {
			return fields, "joi"
		}
	}
	if v, ok := c["validation"].(map[string]any); ok {
		// celebrate: {"validation": {"body": {"source","keys":[…],"message"}}}
		var fields []any
		for _, src := range []string{"params", "headers", "query", "cookies", "signedCookies", "body"} {
			sm, ok := v[src].(map[string]any)
			if !ok {
				continue
			}
			keys, _ := sm["keys"].([]any)
			for _, k := range keys {
				ks, _ := k.(string)
				fields = appendField(fields, ks, sm["message"], nil)
			}
		}
		if fields != nil {
			return fields, "celebrate"
		}
	}
	if arr, ok := c["errors"].([]any); ok {
		if fields := expressValidatorFields(arr); fields != nil {
			return fields, "express-validator"
		}
	}
	if errs, ok := c["errors"].(map[string]any); ok && name == "ValidationError" {
		var fields []any
		for _, path := range sortedKeys(errs) {
			em, ok := errs[path].(map[string]any)
			if !ok {
				continue
			}
			fields = appendField(fields, path, em["message"], em["value"])
		}
		if fields != nil {
			return fields, "mongoose"
		}
	}
	return nil, ""
}

func expressValidatorFields(arr []any) []any {
	var fields []any
	for _, e := range arr {
		em, ok := e.(map[string]any)
		if !ok {
			return nil
		}
		msg, hasMsg := em["msg"]
		field, _ := em["path"].(string)
		if field == "" {
			field, _ = em["param"].(string)
		}
		if !hasMsg || field == "" {
			return nil
		}
		fields = appendField(fields, field, msg, em["value"])
	}
	return fields
}

func joiPath(p any) string {
	switch t := p.(type) {
	case string:
		return t
	case []any:
		parts := make([]string, 0, len(t))
		for _, e := range t {
			switch s := e.(type) {
			case string:
				parts = append(parts, s)
			case json.Number:
				parts = append(parts, s.String())
			}
		}
		return strings.Join(parts, ".")
	}
	return ""
}

func appendField(fields []any, field string, message, value any) []any {
	if len(fields) >= maxFields {
		return fields
	}
	rawValue := value
	msg, _ := message.(string)
	if leaksInternalText(msg) {
		msg = fieldMessage
	}
	if redact.IsSensitivePath(field) && value != nil {
		value = redact.Filtered
	} else {
		value = safeValue(value)
	}
	if s, ok := value.(string); ok && s == redact.Filtered {
		if raw, ok := rawValue.(string); ok && raw != "" {
			// Messages quote the value: "\"password\" with value \"…\" fails to match".
			msg = strings.ReplaceAll(msg, raw, redact.Filtered)
		}
	}
	return append(fields, map[string]any{
		"field":   truncate(field, maxValueRunes),
		"message": truncate(redact.String(msg), maxMessageRunes),
		"value":   value,
	})
}

// safeValue keeps scalars (shortened, redacted) and drops structures, which
// could carry anything.
func safeValue(v any) any {
	switch t := v.(type) {
	case nil, bool, json.Number:
		return t
	case string:
		return truncate(redact.String(t), maxValueRunes)
	}
	return nil
}

// twilioCode recognises Twilio's REST errors: a numeric code in 20000–69999
// and a more_info (moreInfo in twilio-node) link.
func twilioCode(c map[string]any) (int64, bool) {
	_, hasMore := c["more_info"]
	if !hasMore {
		_, hasMore = c["moreInfo"]
	}
	if !hasMore {
		return 0, false
	}
	n, ok := c["code"].(json.Number)
	if !ok {
		return 0, false
	}
	code, err := n.Int64()
	if err != nil || code < 20000 || code > 69999 {
		return 0, false
	}
	return code, true
}

var grpcNames = map[int64]string{
	1: "cancelled", 2: "unknown", 3: "invalid-argument", 4: "deadline-exceeded", 5: "not-found",
	6: "already-exists", 7: "permission-denied", 8: "resource-exhausted", 9: "failed-precondition",
	10: "aborted", 11: "out-of-range", 12: "unimplemented", 13: "internal", 14: "unavailable",
	15: "data-loss", 16: "unauthenticated",
}

// firebaseCode recognises Firebase Admin / Firestore / gRPC errors: string codes
// ("not-found", "firestore/permission-denied", "auth/id-token-expired"),
// Google API statuses ("NOT_FOUND") and numeric gRPC codes with gRPC's
// details/metadata members.
func firebaseCode(c map[string]any) (Code, bool) {
	var name string
	switch t := c["code"].(type) {
	case string:
		name = t
	case json.Number:
		// gRPC errors carry details or metadata; Google API errors a status
		// string (below). A bare number is anybody's.
		_, hasDetails := c["details"]
		_, hasMeta := c["metadata"]
		if n, err := t.Int64(); err == nil && (hasDetails || hasMeta) {
			name = grpcNames[n]
		}
	}
	if name == "" {
		// Google API errors: {"code": 404, "message": …, "status": "NOT_FOUND"}.
		name, _ = c["status"].(string)
	}
	if name == "" {
		return "", false
	}
	name = strings.ReplaceAll(strings.ToLower(name), "_", "-")
	if svc, rest, ok := strings.Cut(name, "/"); ok {
		if svc == "auth" {
			return firebaseAuthCode(rest)
		}
		switch svc {
		case "storage":
			if rest == "unauthorized" || rest == "unauthenticated" {
				return map[string]Code{"unauthorized": CodeForbidden, "unauthenticated": CodeAuthRequired}[rest], true
			}
			name = rest
		case "firestore", "database", "functions", "app", "messaging":
			name = rest
		default:
			return "", false
		}
	}
	switch name {
	case "not-found", "object-not-found", "bucket-not-found", "project-not-found":
		return CodeNotFound, true
	case "permission-denied":
		return CodeForbidden, true
	case "unauthenticated":
		return CodeAuthRequired, true
	}
	for _, known := range grpcNames {
		if name == known {
			return CodeDatabase, true
		}
	}
	switch name {
	case "retry-limit-exceeded", "invalid-checksum", "quota-exceeded", "internal-error":
		return CodeDatabase, true
	}
	return "", false
}

func firebaseAuthCode(rest string) (Code, bool) {
	switch rest {
	case "id-token-expired", "session-cookie-expired", "user-token-expired":
		return CodeTokenExpired, true
	case "id-token-revoked", "session-cookie-revoked", "invalid-id-token", "invalid-session-cookie-duration",
		"argument-error", "invalid-custom-token", "custom-token-mismatch", "invalid-user-token", "user-disabled":
		return CodeTokenInvalid, true
	case "user-not-found":
		return CodeNotFound, true
	case "insufficient-permission", "unauthorized-domain", "operation-not-allowed":
		return CodeForbidden, true
	case "invalid-email", "invalid-password", "email-already-exists", "email-already-in-use",
		"weak-password", "invalid-phone-number", "phone-number-already-exists", "invalid-argument":
		return CodeValidation, true
	case "wrong-password", "invalid-credential", "invalid-login-credentials":
		return CodeAuthRequired, true
	}
	return CodeDatabase, true
}

// clientMessage extracts a 4xx reply's own message when it is short, single
// line and free of stack traces, paths, error class names, a database's own
// error text (leaksInternalText, the rule envelopes follow) and secrets.
func clientMessage(doc any, rep Reply) string {
	var msg string
	switch {
	case doc != nil:
		for _, c := range candidates(doc) {
			for _, k := range []string{"message", "msg", "error", "detail", "title"} {
				if s, ok := c[k].(string); ok && s != "" {
					msg = s
					break
				}
			}
			if msg != "" {
				break
			}
		}
	case strings.HasPrefix(strings.ToLower(rep.ContentType), "text/plain"):
		msg = string(bytes.TrimSpace(rep.Body))
	case strings.HasPrefix(strings.ToLower(rep.ContentType), "text/html") && !bytes.ContainsAny(rep.Body, "<>&"):
		// Express's res.status(404).send('Conversation not found') is
		// text/html: a line of text with no markup (nor entities) is
		// the same message.
		msg = string(bytes.TrimSpace(rep.Body))
	}
	if !safeMessage(msg) {
		return ""
	}
	return truncate(redact.String(msg), maxMessageRunes)
}

func safeMessage(s string) bool {
	if s == "" || utf8.RuneCountInString(s) > maxMessageRunes || !utf8.ValidString(s) {
		return false
	}
	if strings.ContainsAny(s, "\n\r\t<>") || leaksInternalText(s) {
		return false
	}
	lower := strings.ToLower(s)
	for _, bad := range []string{
		"node_modules", ".js:", ".ts:", "/home/", "/usr/", "/app/", "/var/", "/srv/", "/opt/", `c:\`,
		"typeerror", "referenceerror", "syntaxerror", "rangeerror", "econnrefused", "econnreset",
		"etimedout", "enotfound", "undefined", "null pointer", "cannot read prop",
	} {
		if strings.Contains(lower, bad) {
			return false
		}
	}
	return !internalWords.MatchString(s)
}

// internalWords are words of a runtime's or a driver's text that an app's
// own message does not use, as whole words: "NullPointerException" but not
// "Exceptional characters", "SQL" but not "PostgreSQL or MySQL", a stack
// frame's "at fn (" but not "at least 8 characters" (Joi's own text).
// A query in lower case, with a star, a count or a list of columns.
var internalWords = regexp.MustCompile(`(?i)exception\b|\bsql\b|\bcall stack\b|\bstack ?trace\b|\bstack overflow\b|` +
	`\bat (?:async )?(?:new )?[\w$.\[\]]+ \(|\bat \S+:\d+:\d+|` +
	`\bCast to \w+ failed\b|\bat path "|` + // Mongoose's CastError: "Cast to ObjectId failed for value … at path "_id" for model "User""
	"\\bselect\\s+(?:\\*|distinct\\b|count\\s*\\(|[\\w.\"`]+\\s*,).{0,200}?\\bfrom\\b") // "select * from users", not "select a file from disk"

// scrubFields replaces quoted secret values in validation messages.
func scrubFields(details map[string]any, secrets []string) {
	fields, _ := details["fields"].([]any)
	for _, f := range fields {
		if fm, ok := f.(map[string]any); ok {
			if msg, ok := fm["message"].(string); ok {
				fm["message"] = redact.ReplaceAll(msg, secrets)
			}
		}
	}
}

// snippet is the development-mode view of an upstream body: redacted, without
// stack frames, short.
func snippet(doc any, body []byte, secrets []string) string {
	var s string
	if doc != nil {
		b, err := json.Marshal(redact.Value(withoutStacks(doc)))
		if err == nil {
			s = string(b)
		}
	} else {
		s = cutStack(redact.String(string(body)))
	}
	return truncate(redact.ReplaceAll(s, secrets), snippetBytes)
}

// withoutStacks drops "stack" members and cuts stack frames from strings.
func withoutStacks(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, val := range t {
			if strings.EqualFold(k, "stack") || strings.EqualFold(k, "stackTrace") {
				continue
			}
			out[k] = withoutStacks(val)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, val := range t {
			out[i] = withoutStacks(val)
		}
		return out
	case string:
		return cutStack(t)
	}
	return v
}

// cutStack keeps the text before the first stack frame: "\n    at …" in
// text and JSON, "<br> &nbsp; &nbsp;at …" in the HTML page of Express's
// default error handler.
func cutStack(s string) string {
	if loc := stackFrame.FindStringIndex(s); loc != nil {
		return s[:loc[0]]
	}
	return s
}

var stackFrame = regexp.MustCompile(`(?:\n|<br\s*/?>)(?:[ \t]|&nbsp;)+at `)

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func truncate(s string, maxRunes int) string {
	if utf8.RuneCountInString(s) <= maxRunes {
		return s
	}
	r := []rune(s)
	return string(r[:maxRunes]) + "…"
}
