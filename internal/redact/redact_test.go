package redact_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/chatguard/chatguard/internal/redact"
)

const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return v
}

func TestValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"seed example", `{"email":"user@test.com","password":"secret123"}`, `{"email":"user@test.com","password":"[FILTERED]"}`},
		{"nested maps", `{"user":{"name":"ana","auth":{"token":"t","scheme":"x"},"settings":{"apiKey":"k","theme":"dark"}}}`,
			`{"user":{"name":"ana","auth":"[FILTERED]","settings":{"apiKey":"[FILTERED]","theme":"dark"}}}`},
		{"a sensitive key hides a whole structure", `{"credentials":{"user":"a","pass":"b"},"cookie":["a=1","b=2"]}`,
			`{"credentials":"[FILTERED]","cookie":"[FILTERED]"}`},
		{"slices of maps", `{"users":[{"email":"a@x","pwd":"1"},{"email":"b@x","session":"s"}],"ids":[1,2,3]}`,
			`{"users":[{"email":"a@x","pwd":"[FILTERED]"},{"email":"b@x","session":"[FILTERED]"}],"ids":[1,2,3]}`},
		{"top-level slice", `[{"token":"a"},"Bearer abc",3,null,true]`, `[{"token":"[FILTERED]"},"Bearer [FILTERED]",3,null,true]`},
		{"strings go through String", `{"note":"sent ` + jwt + `","url":"redis://u:p4ss@cache:6379"}`,
			`{"note":"sent [FILTERED]","url":"redis://u:[FILTERED]@cache:6379"}`},
		{"scalars unchanged", `{"n":1.5,"b":false,"z":null,"s":"hola"}`, `{"n":1.5,"b":false,"z":null,"s":"hola"}`},
		{"non-sensitive look-alikes", `{"monkey":"banana","author":"ana","path":"/api","passenger":"bob"}`,
			`{"monkey":"banana","author":"ana","path":"/api","passenger":"bob"}`},
		// Validation entries that name a sensitive field have their value filtered.
		{"express-validator entry", `{"errors":[{"type":"field","value":"S3cr3t","msg":"Invalid value","path":"password","location":"body"},{"value":"a@b","msg":"Invalid value","param":"email"}]}`,
			`{"errors":[{"type":"field","value":"[FILTERED]","msg":"Invalid value","path":"password","location":"body"},{"value":"a@b","msg":"Invalid value","param":"email"}]}`},
		{"joi context", `{"details":[{"path":["user","password"],"value":"x","context":{"label":"user.password","value":"S3cr3t"}}]}`,
			`{"details":[{"path":["user","password"],"value":"[FILTERED]","context":{"label":"user.password","value":"[FILTERED]"}}]}`},
		{"field/val pair", `{"field":"refreshToken","val":"abc"}`, `{"field":"refreshToken","val":"[FILTERED]"}`},
		{"name/value pair", `{"name":"session","value":"abc"}`, `{"name":"session","value":"[FILTERED]"}`},
		{"non-sensitive field keeps its value", `{"field":"email","value":"a@b"}`, `{"field":"email","value":"a@b"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := decode(t, tt.in)
			before := decode(t, tt.in)
			got := redact.Value(in)
			if !reflect.DeepEqual(got, decode(t, tt.want)) {
				b, _ := json.Marshal(got)
				t.Errorf("Value(%s) =\n%s\nwant\n%s", tt.in, b, tt.want)
			}
			if !reflect.DeepEqual(in, before) {
				t.Errorf("Value modified its input: %v", in)
			}
		})
	}
}

func TestValueOtherTypes(t *testing.T) {
	t.Parallel()
	h := http.Header{"Authorization": {"Bearer x"}, "Accept": {"a", "b"}}
	if got, want := redact.Value(h), (map[string]string{"Authorization": redact.Filtered, "Accept": "a, b"}); !reflect.DeepEqual(got, want) {
		t.Errorf("Value(http.Header) = %v, want %v", got, want)
	}
	if h.Get("Authorization") != "Bearer x" {
		t.Error("Value modified the header")
	}
	q := url.Values{"token": {"a"}, "page": {"1", "2"}}
	if got, want := redact.Value(q), (map[string]any{"token": redact.Filtered, "page": "1,2"}); !reflect.DeepEqual(got, want) {
		t.Errorf("Value(url.Values) = %v, want %v", got, want)
	}
	if q.Get("token") != "a" {
		t.Error("Value modified the values")
	}
	if got := redact.Value("Bearer abc"); got != "Bearer [FILTERED]" {
		t.Errorf("Value(string) = %v", got)
	}
	for _, v := range []any{nil, 42, 1.5, true} {
		if got := redact.Value(v); !reflect.DeepEqual(got, v) {
			t.Errorf("Value(%#v) = %#v, want it unchanged", v, got)
		}
	}
	// Structures of other types are redacted through their JSON form.
	for _, tc := range []struct {
		in   any
		want any
	}{
		{struct{ Password, User string }{"x", "u"}, map[string]any{"Password": redact.Filtered, "User": "u"}},
		{map[string]string{"token": "t", "a": "b"}, map[string]any{"token": redact.Filtered, "a": "b"}},
		{[]string{"Bearer abc", "ok"}, []any{"Bearer [FILTERED]", "ok"}},
		{&struct{ APIKey string }{"k"}, map[string]any{"APIKey": redact.Filtered}},
	} {
		if got := redact.Value(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Value(%#v) = %#v, want %#v", tc.in, got, tc.want)
		}
	}
}

func TestQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"page=2&limit=10", "page=2&limit=10"},
		{"token=abc", "token=[FILTERED]"},
		{"a=1&password=hunter2&b=2", "a=1&password=[FILTERED]&b=2"},
		{"b=2&api_key=k&a=1&access_token=t&z=", "b=2&api_key=[FILTERED]&a=1&access_token=[FILTERED]&z="},
		{"key=1&monkey=2&author=3", "key=[FILTERED]&monkey=2&author=3"},
		{"token=a=b=c&x=1", "token=[FILTERED]&x=1"},
		{"token=", "token=[FILTERED]"},
		{"token&x=1", "token&x=1"}, // no value, nothing to hide
		{"pass%77ord=x&q=a%20b", "pass%77ord=[FILTERED]&q=a%20b"},
		{"api%5Fkey=k", "api%5Fkey=[FILTERED]"},
		{"user%5Bpassword%5D=x&user%5Bname%5D=ana", "user%5Bpassword%5D=[FILTERED]&user%5Bname%5D=ana"},
		{"X-Api-Key=k", "X-Api-Key=[FILTERED]"},
		{"%zz=1&secret=s", "%zz=1&secret=[FILTERED]"}, // a bad escape is kept as is
		{"q=Bearer+abc&&jwt=x&", "q=Bearer+abc&&jwt=[FILTERED]&"},
		// A percent-encoded value is judged decoded: the encoding hid a
		// token in a redirect target, and a URL's password, from the log.
		{"redirect=%2Fapi%3Ftoken%3Dabc", "redirect=[FILTERED]"},
		{"next=https%3A%2F%2Fbob%3AENCPW-SECRET%40evil.example%2F&x=1", "next=[FILTERED]&x=1"},
		{"next=https%3A%2F%2Fexample.com%2Fchat%3Froom%3D7", "next=https%3A%2F%2Fexample.com%2Fchat%3Froom%3D7"},
		{"q=100%25%20off", "q=100%25%20off"},
		// Credentials whose names say nothing of it (QA): an OAuth code, a
		// one-time password, signed-URL signatures, a CAS ticket, Engine.IO's sid.
		{"code=4%2F0AX4&state=xyz", "code=[FILTERED]&state=xyz"},
		{"otp=123456&sig=abc&Signature=def&X-Amz-Signature=0a1b&X-Amz-Date=20261129", "otp=[FILTERED]&sig=[FILTERED]&Signature=[FILTERED]&X-Amz-Signature=[FILTERED]&X-Amz-Date=20261129"},
		{"ticket=ST-1-abc&service=x", "ticket=[FILTERED]&service=x"},
		{"EIO=4&transport=polling&sid=Vd0pTHzxGgqaNvXRAAAB", "EIO=4&transport=polling&sid=" + redact.Fingerprint("Vd0pTHzxGgqaNvXRAAAB")},
		{"zipcode=12345&codec=h264", "zipcode=12345&codec=h264"},
	}
	for _, tt := range tests {
		if got := redact.Query(tt.in); got != tt.want {
			t.Errorf("Query(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestURI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"/api/messages", "/api/messages"},
		{"/api/messages?", "/api/messages?"},
		{"/api/messages?conversationId=1&token=abc", "/api/messages?conversationId=1&token=[FILTERED]"},
		{"/socket.io/?EIO=4&transport=websocket&token=" + jwt, "/socket.io/?EIO=4&transport=websocket&token=[FILTERED]"},
		{"/a?b=1?token=2", "/a?b=1?token=2"}, // the second ? belongs to b's value
		{"*", "*"},
	}
	for _, tt := range tests {
		if got := redact.URI(tt.in); got != tt.want {
			t.Errorf("URI(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHeader(t *testing.T) {
	t.Parallel()
	h := http.Header{
		"Authorization":       {"Bearer " + jwt},
		"Proxy-Authorization": {"Basic dXNlcjpwYXNz"},
		"Cookie":              {"connect.sid=s%3Aabc", "theme=dark"},
		"Set-Cookie":          {"sid=abc; HttpOnly"},
		"X-Api-Key":           {"k"},
		"X-Auth-Token":        {"t"},
		"Accept":              {"application/json", "text/plain"},
		"X-Debug":             {"forwarded " + jwt},
		"X-Request-Id":        {"req_1"},
		"Empty":               {},
	}
	want := map[string]string{
		"Authorization":       redact.Filtered,
		"Proxy-Authorization": redact.Filtered,
		"Cookie":              redact.Filtered,
		"Set-Cookie":          redact.Filtered,
		"X-Api-Key":           redact.Filtered,
		"X-Auth-Token":        redact.Filtered,
		"Accept":              "application/json, text/plain",
		"X-Debug":             "forwarded [FILTERED]",
		"X-Request-Id":        "req_1",
		"Empty":               "",
	}
	before := h.Clone()
	if got := redact.Header(h); !reflect.DeepEqual(got, want) {
		t.Errorf("Header =\n%v\nwant\n%v", got, want)
	}
	if !reflect.DeepEqual(h, before) {
		t.Error("Header modified its input")
	}
	if got := redact.Header(nil); len(got) != 0 {
		t.Errorf("Header(nil) = %v", got)
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
		// gone are substrings that must not survive when want is "".
		gone []string
	}{
		{name: "plain text", in: "Conversation not found", want: "Conversation not found"},
		// An app's message quoting the secret in prose (QA: kept in a 400
		// envelope); the words alone, or with a word, stay readable.
		// A URL Go's url.Error quotes has its query redacted as an access
		// line's: code and sid too (QA: a failed WebSocket dial's warning).
		{name: "quoted URL query", in: `Get "http://127.0.0.1:3000/socket.io/?EIO=4&code=oauthcode123&sid=AAAAAAAAAAAAAAAAAAAA": connection refused`, want: `Get "http://127.0.0.1:3000/socket.io/?EIO=4&code=[FILTERED]&sid=` + redact.Fingerprint("AAAAAAAAAAAAAAAAAAAA") + `": connection refused`},
		// chatguard's own configuration problems name a key and say what
		// is wrong with it, or where its secret is kept (QA: "[FILTERED]
		// shorter than 16 characters" in the reload-refused line).
		{name: "problem about a key", in: "stats_token: is shorter than 16 characters", want: "stats_token: is shorter than 16 characters"},
		{name: "a word ending in file is no key file", in: "password_profile=hunter2x session_token_file=x", want: "password_profile=[FILTERED] session_token_file=x"},
		{name: "a sid digest after session", in: "polling session [FILTERED:f0aded9b] ended", want: "polling session [FILTERED:f0aded9b] ended"},
		{name: "key file path", in: "auth.jwt_public_key_file: /etc/keys/key.pem: the public key is not PEM", want: "auth.jwt_public_key_file: /etc/keys/key.pem: the public key is not PEM"},
		{name: "a key's value after all", in: "jwt_secret: hunter2 token=abc", want: "jwt_secret: [FILTERED] token=[FILTERED]"},
		// After a colon, in two words, and a provider's key shape (QA: an
		// app passing on "Invalid API key: …" gave clients its own key).
		{name: "api key after a colon", in: "Invalid API key: 3f9a2b7c8d1e4f60a9b8c7d6e5f4a3b2", want: "Invalid API key: [FILTERED]"},
		{name: "session id after a colon", in: "Session ID: 7f3a9c2e4b1d not found", want: "Session ID: [FILTERED] not found"},
		{name: "openai key shape", in: "Incorrect API key provided: sk-proj-AbC123dEf456gHi789jKl", want: "Incorrect API key provided: [FILTERED]"},
		{name: "mongoose path value", in: "Path `password` (`abc`) is shorter than the minimum allowed length (8).", want: "Path `password` (`[FILTERED]`) is shorter than the minimum allowed length (8)."},
		{name: "openai key alone", in: "OpenAI call failed for sk-proj-AbC123dEf456gHi789jKlMnO", want: "OpenAI call failed for [FILTERED]"},
		{name: "mongoose value with a backtick", in: "Path `password` (`hun`ter2`) is shorter than 8.", want: "Path `password` (`[FILTERED]`) is shorter than 8."},
		{name: "mongoose value with a backtick and a parenthesis", in: "Path `password` (`hunter`)2secret`) is shorter than 12.", want: "Path `password` (`[FILTERED]`) is shorter than 12."},
		{name: "mongoose value unended", in: "Path `password` (`" + strings.Repeat("x", 1200), want: "Path `password` (`[FILTERED]`)"},
		{name: "mongoose two paths", in: "Path `email` (`a@b`) is invalid., Path `password` (`abc`) is shorter than 8.", want: "Path `email` (`a@b`) is invalid., Path `password` (`[FILTERED]`) is shorter than 8."},
		{name: "letters after a colon", in: "Invalid API key: abcdefghijklmnopq", want: "Invalid API key: [FILTERED]"},
		{name: "a long word in a sentence", in: "session authenticationRequired for this room", want: "session authenticationRequired for this room"},
		{name: "sessions wrapping a Go error", in: "sessions: dial tcp 10.0.0.5:6379: i/o timeout", want: "sessions: dial tcp 10.0.0.5:6379: i/o timeout"},
		{name: "mongoose plain field", in: "Path `email` (`a@b`) is invalid", want: "Path `email` (`a@b`) is invalid"},
		// What a validator says of the field is no value (QA: "password:
		// required" became "password: [FILTERED]").
		{name: "key: required", in: "password: required; token: expired; api_key: missing", want: "password: required; token: expired; api_key: missing"},
		{name: "mongoose required", in: "User validation failed: password: Path `password` is required.", want: "User validation failed: password: Path `password` is required."},
		{name: "password in prose", in: "password hunter2x is wrong", want: "password [FILTERED] is wrong"},
		{name: "password quoted", in: `Invalid password "hunter2x"`, want: `Invalid password "[FILTERED]"`},
		{name: "password single-quoted", in: "invalid password 'hunter2' for user bob@example.com", want: "invalid password '[FILTERED]' for user bob@example.com"},
		{name: "password quoted, no digit", in: "password `letmein` rejected", want: "password `[FILTERED]` rejected"},
		{name: "api key in prose", in: "api key hunter2x invalid", want: "api key [FILTERED] invalid"},
		{name: "session in prose", in: "Session 9f8e7d6c expired", want: "Session [FILTERED] expired"},
		{name: "pwd and secret", in: "pwd hunter2x, secret 12345678", want: "pwd [FILTERED], secret [FILTERED]"},
		{name: "password words", in: "Password is too short; password must be at least 8 characters", want: "Password is too short; password must be at least 8 characters"},
		{name: "session words", in: "session expired after 5 minutes; session v2 only", want: "session expired after 5 minutes; session v2 only"},
		// Go's textproto quotes a bad header line whole; its value can be
		// anything, whatever the name (QA: a card number in a trailer).
		{name: "malformed header line", in: `read trailer: malformed MIME header line: "X-Card: 4111111111111111\x00"`, want: `read trailer: malformed MIME header line: "X-Card: [FILTERED]"`},
		{name: "malformed header with a quote", in: `malformed MIME header line: "X-Otp: 12\"34\x00" then`, want: `malformed MIME header line: "X-Otp: [FILTERED]" then`},
		{name: "missing colon", in: `malformed MIME header: missing colon: "4111111111111111"`, want: `malformed MIME header: missing colon: "[FILTERED]"`},
		{name: "initial line", in: `malformed MIME header initial line: " X-Private: value"`, want: `malformed MIME header initial line: "[FILTERED]"`},
		{name: "malformed sensitive header", in: `malformed MIME header line: "X-Auth-Token: abc\x00"`, want: `malformed MIME header line: "X-Auth-Token: [FILTERED]"`},
		// Escaped quotes inside: the key=value rule took one for the end
		// of the line, and the rest stayed (review).
		{name: "malformed header, escaped quotes", in: fmt.Sprintf("read trailer: malformed MIME header line: %q", "X-Data: token=\"x\" card=4111111111111111\x00"), want: `read trailer: malformed MIME header line: "X-Data: [FILTERED]"`},
		{name: "malformed api key header", in: fmt.Sprintf("malformed MIME header line: %q", "X-Api-Key: \"sk-SECRETVALUE123\"\x00"), want: `malformed MIME header line: "X-Api-Key: [FILTERED]"`},
		{name: "malformed cookie header", in: fmt.Sprintf("malformed MIME header line: %q", "Set-Cookie: session=\"SECRETSID\"\x01"), want: `malformed MIME header line: "Set-Cookie: [FILTERED]"`},
		// An answer net/http could not read is whatever the upstream sent:
		// its leading word stays, to tell what answered.
		{name: "malformed response", in: fmt.Sprintf("upstream: malformed HTTP response %q", `{"token":"abc","password":"hunter2"}`), want: `upstream: malformed HTTP response "[FILTERED]"`},
		{name: "malformed response banner", in: fmt.Sprintf("malformed HTTP response %q", "SSH-2.0-OpenSSH_9.6"), want: `malformed HTTP response "SSH-2.0-OpenSSH_9.6"`},
		{name: "malformed status code", in: fmt.Sprintf("malformed HTTP status code %q", "2000 secret=abc"), want: `malformed HTTP status code "[FILTERED]"`},
		{name: "malformed status code, a number", in: fmt.Sprintf("malformed HTTP status code %q", "2000"), want: `malformed HTTP status code "2000"`},
		{name: "malformed response, a word", in: fmt.Sprintf("malformed HTTP response %q", "hunter2secretpassword"), want: `malformed HTTP response "[FILTERED]"`},
		{name: "malformed response, TLS", in: fmt.Sprintf("malformed HTTP response %q", "\x15\x03\x01\x00\x02\x02F"), want: `malformed HTTP response "\x15\x03\x01\x00\x02\x02F"`},
		{name: "malformed response, redis", in: fmt.Sprintf("malformed HTTP response %q", "-ERR wrong number of arguments"), want: `malformed HTTP response "-ERR[FILTERED]"`},
		{name: "empty", in: "", want: ""},
		{name: "bearer", in: "got Bearer abc.def-ghi_jkl~mno+pqr/stu==", want: "got Bearer [FILTERED]"},
		{name: "bearer lower case", in: "bearer abc123", want: "bearer [FILTERED]"},
		{name: "basic", in: "Basic dXNlcjpwYXNz", want: "Basic [FILTERED]"},
		{name: "token scheme", in: "Token abc123", want: "Token [FILTERED]"},
		// In a path the space is percent-encoded (QA).
		{name: "bearer in a path", in: "/api/conversations/Bearer%20SEKB12aaaa", want: "/api/conversations/Bearer%20[FILTERED]"},
		{name: "bearer with a plus", in: "/x?q=Bearer+abc123", want: "/x?q=Bearer+[FILTERED]"},
		{name: "token expired in a path", in: "/docs/token%20expired", want: "/docs/token%20expired"},
		{name: "percent-encoded bearer credential", in: "/x/Bearer%20opaqueTOKEN%2Bwith%2Fslash%3D", want: "/x/Bearer%20[FILTERED]"},
		{name: "JWT with encoded dots", in: "/x/eyJhbGciOiJIUzI1NiJ9%2EeyJzdWIiOiJib2IifQ%2Esig123", want: "/x/[FILTERED]"},
		{name: "bearer JWT with encoded dots", in: "/x/Bearer%20eyJhbGciOiJIUzI1NiJ9%2EeyJzdWIiOiJib2IifQ%2Esig123", want: "/x/Bearer%20[FILTERED]"},
		// Escaped padding is still base64; %20 ends the credential (review).
		{name: "basic with escaped padding", in: "/x/Basic%20dXNlcjpwYXNzd29yZA%3D%3D", want: "/x/Basic%20[FILTERED]"},
		{name: "token words in a path", in: "/docs/token%20has%20expired", want: "/docs/token%20has%20expired"},
		{name: "token ring", in: "/api/search/Token%20Ring%20network", want: "/api/search/Token%20Ring%20network"},
		{name: "bearer then words", in: "/x/Bearer%20abc123%20and%20more", want: "/x/Bearer%20[FILTERED]%20and%20more"},
		{name: "token with escapes", in: "/x/token%20abcdef%21ghij", want: "/x/token%20[FILTERED]"},
		{name: "bearer after an escape", in: "/x/foo%20Bearer%20secretvalue", want: "/x/foo%20Bearer%20[FILTERED]"},
		{name: "bearer after an escaped slash", in: "/x%2FBearer%20secretvalue", want: "/x%2FBearer%20[FILTERED]"},
		{name: "basic auth words", in: "/docs/basic%20auth%20flow", want: "/docs/basic%20auth%20flow"},
		{name: "bare JWT", in: jwt, want: "[FILTERED]"},
		{name: "JWT in a sentence", in: "user " + jwt + " connected", want: "user [FILTERED] connected"},
		{name: "JWT glued to text", in: "id=x" + jwt + ".", want: "id=x[FILTERED]."},
		{name: "JWT with empty signature", in: "alg none: eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", want: "alg none: [FILTERED]"},
		{name: "password=", in: "password=hunter2&user=bob", want: "password=[FILTERED]&user=bob"},
		{name: "password: with space", in: "password: hunter2, next", want: "password: [FILTERED], next"},
		{name: "passwd", in: "db_passwd=hunter2", want: "db_passwd=[FILTERED]"},
		{name: "api_key", in: "api_key=abc;x=1", want: "api_key=[FILTERED];x=1"},
		{name: "client_secret", in: "client_secret=abc", want: "client_secret=[FILTERED]"},
		{name: "session", in: "session=s%3Aabc", want: "session=[FILTERED]"},
		{name: "jwt key", in: "jwt=abc", want: "jwt=[FILTERED]"},
		// An error class whose name holds a key word, and its message.
		{name: "error class", in: "JsonWebTokenError: jwt malformed", want: "JsonWebTokenError: jwt malformed"},
		{name: "exception class", in: "InvalidTokenException: token revoked", want: "InvalidTokenException: token revoked"},
		// chatguard's own sessions package names itself in its errors.
		{name: "sessions package prefix", in: `memory management: sessions: alert file (alerts.path "/x"): denied`, want: `memory management: sessions: alert file (alerts.path "/x"): denied`},
		{name: "sessions as a field", in: `sessions=abc "sessions": "def" Sessions: ghi sessions: s3cr3t`, want: `sessions=[FILTERED] "sessions": [FILTERED] Sessions: [FILTERED] sessions: [FILTERED]`},
		{name: "error class with a JWT", in: "JsonWebTokenError: " + jwt, want: "JsonWebTokenError: [FILTERED]"},
		{name: "key named like an error", in: "tokenError=abc passwordError: hunter2", want: "tokenError=[FILTERED] passwordError: [FILTERED]"},
		{name: "JSON pair", in: `{"token": "abc", "user": "bob"}`, want: `{"token": [FILTERED], "user": "bob"}`},
		{name: "JSON pair compact", in: `{"password":"hunter2","email":"a@b"}`, want: `{"password":[FILTERED],"email":"a@b"}`},
		{name: "JSON pair, value with spaces", in: `{"secret": "two words"}`, want: `{"secret": [FILTERED]}`},
		{name: "redis URL", in: "dial redis://user:pass@host:6379/0 failed", want: "dial redis://user:[FILTERED]@host:6379/0 failed"},
		{name: "rediss URL without user", in: "rediss://:s3cr3t@cache.internal:6380", want: "rediss://:[FILTERED]@cache.internal:6380"},
		{name: "URL with port and no user", in: "http://host:8080/path", want: "http://host:8080/path"},
		{name: "already filtered stays", in: "password=[FILTERED]", want: "password=[FILTERED]"},
		{name: "monkey is not a key", in: "monkey=banana", want: "monkey=banana"},
		{name: "authorization header line", in: "Authorization: Bearer " + jwt, gone: []string{jwt, "eyJ"}},
		{name: "cookie header line", in: "Cookie: sid=abc123", gone: []string{"abc123"}},
		{name: "Stripe key in a sentence", in: "invalid api key sk_live_51HxYzAbCdEfGhIjKl provided", want: "invalid api key [FILTERED] provided"},
		{name: "AWS access key id", in: "The AWS Access Key Id AKIAIOSFODNN7EXAMPLE does not exist", want: "The AWS Access Key Id [FILTERED] does not exist"},
		{name: "GitHub token", in: "bad credentials for ghp_" + strings.Repeat("a1", 18), want: "bad credentials for [FILTERED]"},
		{name: "MySQL says whether a password was sent", in: "Access denied for user 'chat'@'10.0.0.5' (using password: YES)",
			want: "Access denied for user 'chat'@'10.0.0.5' (using password: YES)"},
		{name: "sk_ in a word is not a key", in: "task_live_view is off", want: "task_live_view is off"},
		{name: "several secrets", in: "token=a1 password=b2 Bearer c3 " + jwt + " redis://u:d4@h",
			gone: []string{"a1", "b2", "c3", jwt, "d4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := redact.String(tt.in)
			if tt.gone == nil && got != tt.want {
				t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
			for _, g := range tt.gone {
				if strings.Contains(got, g) {
					t.Errorf("String(%q) = %q still holds %q", tt.in, got, g)
				}
			}
			if tt.gone != nil && !strings.Contains(got, redact.Filtered) {
				t.Errorf("String(%q) = %q has no %s", tt.in, got, redact.Filtered)
			}
			// Redacting twice changes nothing more.
			if again := redact.String(got); again != got {
				t.Errorf("String is not idempotent on %q: %q then %q", tt.in, got, again)
			}
		})
	}
}

// An authorization-scheme word right before "Bearer" is taken for the
// scheme and "Bearer" for its credential; the real credential then survives.
func TestRegressionStringSchemeWordBeforeBearer(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"invalid token Bearer sk_live_abc123", "expected basic Bearer sk_live_abc123"} {
		if got := redact.String(in); strings.Contains(got, "sk_live_abc123") {
			t.Errorf("String(%q) = %q, want the credential filtered", in, got)
		}
	}
}

// Value judges a validation entry by its whole path, ClassifyUpstream by the
// last segment: "settings.key" normalises to "settingskey" (not sensitive)
// and a Joi path ending in an index (["tokens", 0]) is not looked at.
func TestRegressionValueDottedOrIndexedPath(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{"path":"settings.key","value":"S3cr3t"}`,
		`{"param":"db.pass","value":"S3cr3t"}`,
		`{"path":["tokens",0],"value":"S3cr3t"}`,
	} {
		b, _ := json.Marshal(redact.Value(decode(t, in)))
		if strings.Contains(string(b), "S3cr3t") {
			t.Errorf("Value(%s) = %s, want the value filtered", in, b)
		}
	}
}

// A polling session's sid is logged as a keyed digest: the same sid gives
// the same mark, another sid another, and the sid itself never shows.
func TestFingerprint(t *testing.T) {
	t.Parallel()
	a, b := redact.Fingerprint("Vd0pTHzxGgqaNvXRAAAB"), redact.Fingerprint("Wx1qUIayHhrbOwYSBBBC")
	if a != redact.Fingerprint("Vd0pTHzxGgqaNvXRAAAB") || a == b {
		t.Fatalf("fingerprints %q %q", a, b)
	}
	if len(a) != len("[FILTERED:12345678]") || !strings.HasPrefix(a, "[FILTERED:") || strings.Contains(a, "Vd0p") {
		t.Fatalf("fingerprint %q", a)
	}
	if got := redact.Query("sid=Vd0pTHzxGgqaNvXRAAAB&sid="); got != "sid="+a+"&sid=" {
		t.Fatalf("Query = %q", got)
	}
}
