package logging_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/logging"
)

const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"

// secrets are the values of secretLine that must never be written.
var secrets = []string{
	"pw-hunter2", "tok-456", "dXNlcjpwYXNz", "ak-789", "cookie-val-1", "sess-000",
	"nested-pw", "hdr-bearer-tok", "hdr-cookie-val", "abc.def", jwt, "token=abc",
	"qpw-1", "redis-pw",
}

// secretLine logs one line full of secrets at level lvl.
func secretLine(l logrus.FieldLogger, lvl logrus.Level) {
	e := l.WithFields(logrus.Fields{
		"password":      "pw-hunter2",
		"token":         "tok-456",
		"authorization": "Basic dXNlcjpwYXNz",
		"apiKey":        "ak-789",
		"cookie":        "sid=cookie-val-1",
		"session":       "sess-000",
		"user":          map[string]any{"email": "user@test.com", "password": "nested-pw", "roles": []any{"agent", map[string]any{"token": "nested-pw"}}},
		"headers": http.Header{
			"Authorization": {"Bearer hdr-bearer-tok"},
			"Cookie":        {"sid=hdr-cookie-val"},
			"Accept":        {"application/json"},
		},
		"path":                "/x?token=abc&a=1",
		"cleanPath":           "/api/messages/42",
		"redis":               "redis://chat:redis-pw@redis:6379/0",
		"form":                "user=bob&password=qpw-1",
		"email":               "user@test.com",
		"requestId":           "req_1706645130123_abc123",
		"status":              502,
		logging.FieldCategory: logging.CategoryAuth,
	}).WithError(errors.New("upstream said: Bearer abc.def"))
	switch lvl {
	case logrus.ErrorLevel:
		e.Errorf("bad token %s for user", jwt)
	default:
		e.Infof("bad token %s for user", jwt)
	}
}

// checkRedacted asserts that out shows no secret and keeps the plain fields.
func checkRedacted(t *testing.T, out string) {
	t.Helper()
	if out == "" {
		t.Fatal("no output")
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("output shows secret %q:\n%s", s, out)
		}
	}
	for _, keep := range []string{"user@test.com", "/api/messages/42", "req_1706645130123_abc123", "application/json", "agent", "a=1", "for user"} {
		if !strings.Contains(out, keep) {
			t.Errorf("output lost %q:\n%s", keep, out)
		}
	}
}

func TestRedaction(t *testing.T) {
	t.Parallel()
	for _, dev := range []bool{false, true} {
		name := map[bool]string{false: "json", true: "text"}[dev]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			lg, buf := newLogger(t, logging.Options{Development: dev})
			secretLine(lg, logrus.InfoLevel)
			checkRedacted(t, buf.String())
		})
	}
}

func TestRedactionFieldValues(t *testing.T) {
	t.Parallel()
	lg, buf := newLogger(t, logging.Options{})
	secretLine(lg, logrus.InfoLevel)
	m := lines(t, buf.String())[0]
	want := map[string]any{
		"password":      "[FILTERED]",
		"token":         "[FILTERED]",
		"authorization": "[FILTERED]",
		"apiKey":        "[FILTERED]",
		"cookie":        "[FILTERED]",
		"session":       "[FILTERED]",
		"path":          "/x?token=[FILTERED]&a=1",
		"cleanPath":     "/api/messages/42",
		"email":         "user@test.com",
		"requestId":     "req_1706645130123_abc123",
		"status":        float64(502),
		"category":      "auth",
		"error":         "upstream said: Bearer [FILTERED]",
		"msg":           "bad token [FILTERED] for user",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	user, _ := m["user"].(map[string]any)
	if user["email"] != "user@test.com" || user["password"] != "[FILTERED]" {
		t.Errorf("user = %#v", m["user"])
	}
	h, _ := m["headers"].(map[string]any)
	if h["Authorization"] != "[FILTERED]" || h["Cookie"] != "[FILTERED]" || h["Accept"] != "application/json" {
		t.Errorf("headers = %#v", m["headers"])
	}
}

// Redaction works on the line, not on the caller's values.
func TestRedactionDoesNotMutateCallerData(t *testing.T) {
	t.Parallel()
	lg, _ := newLogger(t, logging.Options{})
	user := map[string]any{"password": "pw"}
	h := http.Header{"Authorization": {"Bearer x"}}
	e := lg.WithFields(logrus.Fields{"user": user, "headers": h, "token": "t"})
	e.Info("x")
	if user["password"] != "pw" || h.Get("Authorization") != "Bearer x" || e.Data["token"] != "t" {
		t.Errorf("logging changed the caller's data: %v %v %v", user, h, e.Data)
	}
}

// Other common containers of secrets: url.Values (r.URL.Query()), string
// maps, nested logrus.Fields, string slices and structs.
func TestRedactionOtherContainers(t *testing.T) {
	t.Parallel()
	type creds struct{ User, Password string }
	tests := map[string]any{
		"url.Values":           url.Values{"token": {"L0"}, "a": {"1"}},
		"map[string]string":    map[string]string{"password": "L1"},
		"logrus.Fields":        logrus.Fields{"password": "L2"},
		"[]string":             []string{"Bearer L3xyz"},
		"struct":               creds{"u", "L4"},
		"nested string map":    map[string]any{"x": map[string]string{"password": "L5"}},
		"pointer to struct":    &creds{"u", "L6"},
		"map[string][]string":  map[string][]string{"authorization": {"L7"}},
		"[]map[string]any":     []map[string]any{{"token": "L8"}},
		"json.RawMessage body": json.RawMessage(`{"password":"L9"}`),
	}
	for name, v := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			lg, buf := newLogger(t, logging.Options{})
			lg.WithField("v", v).Info("x")
			for _, s := range []string{"L0", "L1", "L2", "L3xyz", "L4", "L5", "L6", "L7", "L8", "L9"} {
				if strings.Contains(buf.String(), `"`+s) || strings.Contains(buf.String(), " "+s) {
					t.Errorf("%s shows %s: %s", name, s, buf)
				}
			}
		})
	}
}

type stringer string

func (s stringer) String() string { return "dial " + string(s) }

// Values that print themselves are redacted as their text.
func TestRedactionStringers(t *testing.T) {
	t.Parallel()
	lg, buf := newLogger(t, logging.Options{})
	u := &url.URL{Scheme: "redis", User: url.UserPassword("chat", "url-pw-1"), Host: "redis:6379"}
	lg.WithFields(logrus.Fields{
		"target": u,
		"stats":  config.Secret("stats-tok-2"),
		"note":   stringer("password=str-pw-3"),
		"plain":  stringer("host:6379"),
	}).Info("connecting")
	out := buf.String()
	for _, s := range []string{"url-pw-1", "stats-tok-2", "str-pw-3"} {
		if strings.Contains(out, s) {
			t.Errorf("output shows %q: %s", s, out)
		}
	}
	m := lines(t, out)[0]
	if m["target"] != "redis://chat:[FILTERED]@redis:6379" || m["plain"] != "dial host:6379" {
		t.Errorf("stringers = %v / %v", m["target"], m["plain"])
	}
}
