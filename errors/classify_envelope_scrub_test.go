package errors_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	apierrors "github.com/chatguard/chatguard/errors"
)

const scrubJWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"

// An envelope the upstream wrote passes through, but not with secrets or
// internals in it: the log's redaction rules apply to it in both modes, and
// in production stacks leave the whole document, top level included.
func TestClassifyEnvelopeIsScrubbed(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		dev    bool
		leaks  []string // must not be in the body sent
		keeps  []string // must still be there
	}{
		{"secrets in details", 500,
			`{"success":false,"error":{"code":"INTERNAL_ERROR","message":"oops","details":{"password":"hunter2LEAK","authorization":"Bearer abcdefLEAK","token":"` + scrubJWT + `"}}}`,
			false, []string{"hunter2LEAK", "abcdefLEAK", scrubJWT}, []string{`"oops"`, `"INTERNAL_ERROR"`}},
		{"secrets in details, development", 400,
			`{"success":false,"error":{"code":"VALIDATION_ERROR","message":"bad","details":{"apiKey":"sk_live_LEAK"}}}`,
			true, []string{"sk_live_LEAK"}, []string{`"VALIDATION_ERROR"`}},
		{"a JWT quoted in a message", 401,
			`{"success":false,"error":{"code":"TOKEN_INVALID","message":"bad token ` + scrubJWT + `"}}`,
			false, []string{scrubJWT}, []string{`"TOKEN_INVALID"`}},
		{"top-level stack and debug block", 500,
			`{"success":false,"error":{"code":"INTERNAL_ERROR","message":"oops"},"stack":"Error: oops\n    at /srv/app/routes/x.js:1:1","debug":{"dbPassword":"PWLEAK"}}`,
			false, []string{"/srv/app", "x.js", "PWLEAK"}, []string{`"oops"`, `"debug"`}},
		{"database text in a 5xx message", 500,
			`{"success":false,"error":{"code":"DATABASE_ERROR","message":"MongoServerError: E11000 duplicate key error collection: chat.users index: email_1 dup key: { email: \"ada@example.com\" }"}}`,
			false, []string{"ada@example.com", "E11000", "email_1"}, []string{`"DATABASE_ERROR"`}},
		// QA: details strings kept their paths and SQL (only frames were cut).
		{"a path in details", 500,
			`{"success":false,"error":{"code":"INTERNAL_ERROR","message":"upload failed","details":{"cause":"ENOENT: no such file or directory, open '/app/uploads/tmp/ada.png'","hint":"C:\\srv\\chat\\config.json missing","frame":"at handler (webpack:///src/x.ts:12:4)","tried":["/srv/chat/a.png",{"q":"SELECT id FROM files WHERE owner = 'ada'"},"b.png"]}}}`,
			false, []string{"/app/uploads", `C:\\srv`, "config.json", "x.ts:12", "/srv/chat", "SELECT"}, []string{`"upload failed"`, `["[path]",{"q":"[REMOVED]"},"b.png"]`, `ENOENT: no such file or directory, open '[path]'`, `[path] missing`}},
		{"database text in details", 409,
			`{"success":false,"error":{"code":"VALIDATION_ERROR","message":"Already registered","details":{"reason":"duplicate key value violates unique constraint \"users_email_key\"","sql":"INSERT INTO users (email) VALUES ('ada@example.com') -- SQLSTATE 23505","conversationId":"c-7"}}}`,
			false, []string{"users_email_key", "ada@example.com", "INSERT INTO"}, []string{`"Already registered"`, `"conversationId":"c-7"`, `"reason":"[REMOVED]"`}},
		// QA: the app's own 5xx envelope kept a runtime's error and a
		// connection string with its user and cluster.
		{"a runtime's error in a 5xx message", 500,
			`{"success":false,"error":{"code":"INTERNAL_ERROR","message":"TypeError: Cannot read properties of undefined (reading 'conversationId')"}}`,
			false, []string{"TypeError", "conversationId"}, []string{`"INTERNAL_ERROR"`, `"` + apierrors.CodeInternal.Message() + `"`}},
		{"a connection string in a 5xx message", 503,
			`{"success":false,"error":{"code":"SERVICE_UNAVAILABLE","message":"timeout exceeded when trying to connect to mongodb+srv://admin:s3cret@cluster0.abcde.mongodb.net/chat"}}`,
			false, []string{"admin", "cluster0", "s3cret"}, []string{`"SERVICE_UNAVAILABLE"`}},
		{"a runtime's error kept in development", 500,
			`{"success":false,"error":{"code":"INTERNAL_ERROR","message":"TypeError: Cannot read properties of undefined (reading 'conversationId')"}}`,
			true, nil, []string{"TypeError: Cannot read properties of undefined"}},
		{"an app's sentences with runtime words kept", 409,
			`{"success":false,"error":{"code":"VALIDATION_ERROR","message":"An exception already exists for this date; export as SQL is not available"}}`,
			false, nil, []string{`"An exception already exists for this date; export as SQL is not available"`}},
		{"an app's 5xx sentence kept", 503,
			`{"success":false,"error":{"code":"SERVICE_UNAVAILABLE","message":"Maintenance until 10:00, see https://status.example.com/chat"}}`,
			false, nil, []string{`"Maintenance until 10:00, see https://status.example.com/chat"`}},
		{"paths and database text kept in development", 500,
			`{"success":false,"error":{"code":"INTERNAL_ERROR","message":"x","details":{"cause":"open '/app/uploads/a.png'"}}}`,
			true, nil, []string{`/app/uploads/a.png`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := apierrors.ClassifyUpstream(apierrors.Reply{Status: tt.status, ContentType: jsonCT, Body: []byte(tt.body)}, testID, apierrors.ClassifyOptions{Development: tt.dev})
			if !res.PassThrough {
				t.Fatalf("not passed through: %+v", res)
			}
			if !json.Valid(res.Body) {
				t.Fatalf("invalid JSON: %s", res.Body)
			}
			for _, l := range tt.leaks {
				if strings.Contains(string(res.Body), l) {
					t.Errorf("body still holds %q: %s", l, res.Body)
				}
			}
			for _, k := range tt.keeps {
				if !strings.Contains(string(res.Body), k) {
					t.Errorf("body lost %s: %s", k, res.Body)
				}
			}
			if !strings.Contains(string(res.Body), testID) {
				t.Errorf("no requestId: %s", res.Body)
			}
		})
	}
}

// A clean envelope passes byte for byte (plus the request id): scrubbing
// re-encodes only what it changed.
func TestClassifyCleanEnvelopeKeepsItsBytes(t *testing.T) {
	body := `{"success":false,"error":{"code":"NOT_FOUND","message":"No such conversation","details":{"conversationId":"c-42","fields":[{"field":"key","message":"\"key\" is required"}]}},"requestId":"up-1"}`
	for _, dev := range []bool{false, true} {
		res := apierrors.ClassifyUpstream(apierrors.Reply{Status: 404, ContentType: jsonCT, Body: []byte(body)}, testID, apierrors.ClassifyOptions{Development: dev})
		if !res.PassThrough || string(res.Body) != body {
			t.Errorf("development=%v: PassThrough=%v body %s", dev, res.PassThrough, res.Body)
		}
	}
}

// Joi's context names the field under "key" (with or without a label): a
// field name, not an API key, so the message that quotes it stays whole;
// a password field's value is still filtered.
func TestClassifyJoiContextKeyIsAFieldName(t *testing.T) {
	body := `{"isJoi":true,"name":"ValidationError","details":[` +
		`{"message":"\"email\" is required","path":["email"],"type":"any.required","context":{"key":"email"}},` +
		`{"message":"\"password\" length must be at least 8 characters long","path":["password"],"type":"string.min","context":{"key":"password","value":"hunter2x","limit":8}}]}`
	res := apierrors.ClassifyUpstream(apierrors.Reply{Status: 400, ContentType: jsonCT, Body: []byte(body)}, testID, apierrors.ClassifyOptions{Development: true})
	out := string(res.Err.Marshal(testID, time.Unix(0, 0)))
	if !strings.Contains(out, `\"email\" is required`) {
		t.Errorf("the email field's message was mangled: %s", out)
	}
	if strings.Contains(out, "hunter2x") {
		t.Errorf("the password's value leaked: %s", out)
	}
}

// What the scrubbing of an upstream envelope's strings must leave alone,
// and what it must still take out (review: links, routes, codes and
// shouted text were mangled; lowercase SQL and quoted duplicate values
// passed).
func TestEnvelopeScrubKeepsLinksRoutesAndCodes(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		keeps, cuts []string
	}{
		{"links and routes",
			`{"success":false,"error":{"code":"NOT_FOUND","message":"No such setting","details":{"allowed":"https://cdn.example.com/app/x.js","help":"https://docs.example.com/home/errors#e42","path":"/api/app/config","deepLink":"chatapp://app/conversations/c-42"}},"path":"/api/home/feed"}`,
			[]string{"https://cdn.example.com/app/x.js", "https://docs.example.com/home/errors#e42", `"/api/app/config"`, "chatapp://app/conversations/c-42", `"/api/home/feed"`}, nil},
		{"version text",
			`{"success":false,"error":{"code":"VALIDATION_ERROR","message":"Unsupported client","details":{"requirement":"Node.js: 18 or later","note":"see socket.io.js: v4"}}}`,
			[]string{"Node.js: 18 or later", "see socket.io.js: v4"}, nil},
		{"shouted text",
			`{"success":false,"error":{"code":"VALIDATION_ERROR","message":"PLEASE SELECT ONE FROM THE LIST","details":{"text":"I SELECT pizza FROM the menu","upd":"UPDATE profile SET"}}}`,
			[]string{"PLEASE SELECT ONE FROM THE LIST", "I SELECT pizza FROM the menu", "UPDATE profile SET"}, nil},
		{"codes", `{"success":false,"error":{"code":"SQLITE_CONSTRAINT","message":"Already exists","details":{"code":"P2002"}}}`,
			[]string{`"code":"SQLITE_CONSTRAINT"`, `"code":"P2002"`}, nil},
		{"MySQL's duplicate entry",
			`{"success":false,"error":{"code":"CONFLICT","message":"Already registered","details":{"code":"ER_DUP_ENTRY","sqlMessage":"Duplicate entry 'ada@example.com' for key 'users.email'"}}}`,
			[]string{`"code":"ER_DUP_ENTRY"`, `"Already registered"`}, []string{"ada@example.com"}},
		{"PostgreSQL's detail",
			`{"success":false,"error":{"code":"CONFLICT","message":"Already registered","details":{"detail":"Key (email)=(ada@example.com) already exists."}}}`,
			nil, []string{"ada@example.com"}},
		{"lowercase SQL", `{"success":false,"error":{"code":"CONFLICT","message":"x","details":{"sql":"insert into users (email) values ('ada@example.com')"}}}`,
			nil, []string{"ada@example.com"}},
		{"sentences that look like SQL, routes that look like paths",
			`{"success":false,"error":{"code":"CONFLICT","message":"Moved to /app/settings","details":{"a":"select messages from users left in the room","b":"delete from archive where the conversation is older than a year","c":"/login?next=/home/feed","d":"see /data/export"}}}`,
			[]string{`"Moved to /app/settings"`, "select messages from users left in the room", "delete from archive where the conversation is older than a year", "/login?next=/home/feed", "see /data/export"}, nil},
		{"queries and drivers' words",
			`{"success":false,"error":{"code":"CONFLICT","message":"x","details":{"a":"SELECT COUNT(*) FROM messages","b":"DELETE FROM sessions","c":"new row for relation violates: Failing row contains (7, ada@example.com, null)","d":"SQLITE_CONSTRAINT UNIQUE constraint failed: users.email","e":"You have an error in your SQL syntax; check the manual near 'DROP'","f":"select \"id\" from \"users\" where \"email\" = $1","g":"delete from sessions where user_id = 7","h":"select * from users left join roles on users.role = roles.id"}}}`,
			nil, []string{"COUNT(*)", "DELETE FROM", "ada@example.com", "users.email", "near 'DROP'", `\"users\"`, "user_id", "roles.id"}},
		{"paths under more roots",
			`{"success":false,"error":{"code":"INTERNAL_ERROR","message":"oops","details":{"a":"/Users/ada/proj/server.js","b":"file:///srv/chat/x","c":"open /run/secrets/db_password","d":"/code/src/lib/index","e":"at /data/db/collection-0.wt","f":"C:/chat/config.json","g":"/etc/passwd"}}}`,
			nil, []string{"/Users", "file:", "secrets", "/code/src", "collection-0", "C:/chat", "passwd"}},
		{"a system path in the message", `{"success":false,"error":{"code":"INTERNAL_ERROR","message":"cannot read /etc/chat.conf"}}`,
			nil, []string{"chat.conf"}},
		{"review: driver texts, knex queries and fs paths; sentences and routes",
			`{"success": false, "error": {"code": "CONFLICT", "message": "x", "details": {"f0": "Please SELECT a file FROM disk", "f1": "Cannot DELETE FROM archive", "f2": "There is no such table: 12 (restaurant booking)", "f3": "Download it from /data/export/2024-06", "f4": "Download it from /data/export.csv", "f5": "Private chats live under /private/messages", "f6": "Ratio A:/B is not allowed", "f7": "Route /Users/42 not found", "f8": "Go to /home/feed/trending", "f9": "Open /app/settings/notifications to turn them on", "f10": "Node.js:18 or later is required", "f11": "The relation \"friend\" cannot be changed twice a day", "f12": "Path ` + "`" + `email` + "`" + ` is required.", "k1": "select * from \"users\" where lower(\"email\") = $1", "k2": "select * from \"users\" where (\"id\" = $1)", "k3": "select * from \"users\" where not \"deleted\"", "k4": "cannot read /app/.env", "k5": "value too long for type character varying(255)", "k6": "password authentication failed for user \"chat_app\"", "k7": "database \"chat_prod\" does not exist", "k8": "permission denied for table users", "k9": "invalid input value for enum message_status: \"archivd\"", "k10": "Cannot add or update a child row: a foreign key constraint fails (` + "`" + `chat` + "`" + `.` + "`" + `messages` + "`" + `, CONSTRAINT ` + "`" + `messages_ibfk_1` + "`" + `)", "k11": "Field 'email' doesn't have a default value", "k12": "Access denied for user 'chat'@'10.0.0.5' (using password: YES)", "k13": "table users has no column named emial", "k14": "near \"SELEC\": syntax error", "k15": "Can't reach database server at ` + "`" + `db.internal` + "`" + `:` + "`" + `5432` + "`" + `", "k16": "notNull Violation: User.email cannot be null", "k17": "select \"id\", \"email\" from \"users\"", "k18": "delete from \"sessions\"", "k19": "ENOENT: no such file or directory, open 'uploads/avatars/a.png'", "k20": "config at ~/.config/chat/settings.json is invalid", "k21": "connect ECONNREFUSED 10.0.0.7:27017", "k22": "WRONGPASS invalid username-password pair or user is disabled."}}}`,
			[]string{`Please SELECT a file FROM disk`, `Cannot DELETE FROM archive`, `There is no such table: 12 (restaurant booking)`, `Download it from /data/export/2024-06`, `Download it from /data/export.csv`, `Private chats live under /private/messages`, `Ratio A:/B is not allowed`, `Route /Users/42 not found`, `Go to /home/feed/trending`, `Open /app/settings/notifications to turn them on`, `Node.js:18 or later is required`, `The relation \"friend\" cannot be changed twice a day`, `Path ` + "`" + `email` + "`" + ` is required.`},
			[]string{`lower(`, `(\"id\"`, `not \"deleted`, `/app/.env`, `character varying`, `chat_app`, `chat_prod`, `permission denied`, `archivd`, `messages_ibfk_1`, `default value`, `10.0.0.5`, `emial`, `\"SELEC\"`, `db.internal`, `notNull`, `\"email\", \"users`, `\"sessions\"`, `avatars`, `settings.json`, `10.0.0.7`, `WRONGPASS`}},
		{"module paths", `{"success":false,"error":{"code":"INTERNAL_ERROR","message":"oops","details":{"f":"/workspace/src/server.mjs:12","g":"at x (webpack:///src/x.ts:12:4)"}}}`,
			[]string{`"[path]"`}, []string{"server.mjs", "x.ts:12"}},
	}
	for _, tt := range tests {
		res := apierrors.ClassifyUpstream(apierrors.Reply{Status: 409, ContentType: jsonCT, Body: []byte(tt.body)}, testID, apierrors.ClassifyOptions{})
		for _, k := range tt.keeps {
			if !strings.Contains(string(res.Body), k) {
				t.Errorf("%s: lost %s: %s", tt.name, k, res.Body)
			}
		}
		for _, c := range tt.cuts {
			if strings.Contains(string(res.Body), c) {
				t.Errorf("%s: still holds %s: %s", tt.name, c, res.Body)
			}
		}
	}
}

// Control characters (a NUL, an ANSI escape, a bell) reach no client: an
// app envelope's message with one is replaced in production, a Joi or
// express-validator field message with one becomes "Invalid value", and a
// field's echoed value loses them (review: the first fix covered messages
// outside envelopes only).
func TestControlCharactersReachNoClient(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"success":false,"error":{"code":"VALIDATION_ERROR","message":"bad\u0000value\u001b[31m red \u0007"}}`,
		`{"message":"Validation failed","details":[{"message":"\"name\" bad\u001b[31m","path":["name"],"type":"string.base","context":{"key":"name","label":"name","value":"x\u0000y"}}]}`,
		`{"errors":[{"msg":"bad\u001b[31m","param":"name","location":"body","value":"x\u0007y"}]}`,
	} {
		res := apierrors.ClassifyUpstream(apierrors.Reply{Status: 400, ContentType: jsonCT, Body: []byte(body)}, testID, apierrors.ClassifyOptions{})
		out := res.Body
		if !res.PassThrough {
			out = res.Err.Marshal(testID, time.Unix(0, 0))
		}
		var doc any
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		var walk func(v any)
		walk = func(v any) {
			switch x := v.(type) {
			case string:
				for _, r := range x {
					if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
						t.Errorf("%s: a control character U+%04X reaches the client in %q", body, r, x)
					}
				}
			case map[string]any:
				for _, e := range x {
					walk(e)
				}
			case []any:
				for _, e := range x {
					walk(e)
				}
			}
		}
		walk(doc)
		if !strings.Contains(string(out), "name") && !res.PassThrough {
			t.Errorf("%s: the field is gone: %s", body, out)
		}
	}
}
