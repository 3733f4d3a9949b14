package errors_test

import (
	"encoding/json"
	stderrors "errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"
	"time"

	apierrors "github.com/chatguard/chatguard/errors"
)

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		code    apierrors.Code
		message string
		status  int
		wantMsg string
	}{
		{"catalogue message", apierrors.CodeNotFound, "", 404, "The requested resource was not found"},
		{"own message", apierrors.CodeRateLimitExceeded, "Slow down", 429, "Slow down"},
		{"unknown code", "SOMETHING_ELSE", "", 500, "An internal error occurred"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := apierrors.New(tt.code, tt.message)
			if e.Code != tt.code || e.Status != tt.status || e.Message != tt.wantMsg || e.Details != nil || e.Header != nil {
				t.Errorf("New(%s, %q) = %+v", tt.code, tt.message, e)
			}
			if e.HTTPStatus() != tt.status {
				t.Errorf("HTTPStatus() = %d, want %d", e.HTTPStatus(), tt.status)
			}
		})
	}
}

func TestErrorMethods(t *testing.T) {
	t.Parallel()
	e := apierrors.New(apierrors.CodeNotFound, "")
	if got, want := e.Error(), "errors: NOT_FOUND (404): The requested resource was not found"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	d := map[string]any{"resource": "conversation"}
	if got := e.WithDetails(d); got != e || e.Details["resource"] != "conversation" {
		t.Errorf("WithDetails returned %p (want %p), details %v", got, e, e.Details)
	}

	// A zero Status means the code's status.
	z := &apierrors.Error{Code: apierrors.CodeRateLimitExceeded, Message: "x"}
	if z.HTTPStatus() != 429 {
		t.Errorf("zero Status: HTTPStatus() = %d, want 429", z.HTTPStatus())
	}
	// An explicit Status wins over the code's.
	o := &apierrors.Error{Status: 405, Code: apierrors.CodeNotFound}
	if o.HTTPStatus() != 405 || o.Error() != "errors: NOT_FOUND (405): " {
		t.Errorf("explicit Status: HTTPStatus() = %d, Error() = %q", o.HTTPStatus(), o.Error())
	}

	// *Error travels through ordinary wrapping.
	wrapped := fmt.Errorf("handler: %w", e)
	var got *apierrors.Error
	if !stderrors.As(wrapped, &got) || got != e {
		t.Errorf("errors.As through %%w failed: %v", wrapped)
	}
}

func TestMarshalExactShape(t *testing.T) {
	t.Parallel()
	cet := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		err  *apierrors.Error
		id   string
		now  time.Time
		want string
	}{
		{
			name: "no details",
			err:  apierrors.New(apierrors.CodeNotFound, ""),
			id:   "req_1706645130123_abc123",
			now:  testNow,
			want: `{"success":false,"error":{"code":"NOT_FOUND","message":"The requested resource was not found","timestamp":"2026-01-30T19:45:30.123Z"},"requestId":"req_1706645130123_abc123"}`,
		},
		{
			name: "details",
			err: apierrors.New(apierrors.CodeValidation, "").WithDetails(map[string]any{
				"fields": []any{map[string]any{"field": "email", "message": "Email es requerido", "value": nil}},
			}),
			id:   "req_1706645130123_abc123",
			now:  testNow,
			want: `{"success":false,"error":{"code":"VALIDATION_ERROR","message":"The request data is invalid","details":{"fields":[{"field":"email","message":"Email es requerido","value":null}]},"timestamp":"2026-01-30T19:45:30.123Z"},"requestId":"req_1706645130123_abc123"}`,
		},
		{
			name: "empty details map is omitted",
			err:  apierrors.New(apierrors.CodeForbidden, "").WithDetails(map[string]any{}),
			id:   "abc",
			now:  testNow,
			want: `{"success":false,"error":{"code":"FORBIDDEN","message":"You do not have permission to perform this action","timestamp":"2026-01-30T19:45:30.123Z"},"requestId":"abc"}`,
		},
		{
			name: "local time is written in UTC, whole seconds get .000",
			err:  apierrors.New(apierrors.CodeUpstreamTimeout, ""),
			id:   "abc",
			now:  time.Date(2026, 1, 30, 20, 45, 30, 0, cet),
			want: `{"success":false,"error":{"code":"UPSTREAM_TIMEOUT","message":"The service did not answer in time","timestamp":"2026-01-30T19:45:30.000Z"},"requestId":"abc"}`,
		},
		{
			name: "milliseconds are truncated, not rounded",
			err:  apierrors.New(apierrors.CodeInternal, ""),
			id:   "abc",
			now:  time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.UTC),
			want: `{"success":false,"error":{"code":"INTERNAL_ERROR","message":"An internal error occurred","timestamp":"2026-12-31T23:59:59.999Z"},"requestId":"abc"}`,
		},
		{
			name: "details that cannot be encoded are dropped, the envelope stays",
			err:  apierrors.New(apierrors.CodeInternal, "").WithDetails(map[string]any{"bad": math.Inf(1), "ch": make(chan int)}),
			id:   "abc",
			now:  testNow,
			want: `{"success":false,"error":{"code":"INTERNAL_ERROR","message":"An internal error occurred","timestamp":"2026-01-30T19:45:30.123Z"},"requestId":"abc"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.err.Marshal(tt.id, tt.now)
			if string(got) != tt.want {
				t.Errorf("Marshal =\n%s\nwant\n%s", got, tt.want)
			}
			env := tt.err.Envelope(tt.id, tt.now)
			if env.Success || env.RequestID != tt.id || env.Error.Code != tt.err.Code {
				t.Errorf("Envelope = %+v", env)
			}
		})
	}
}

func TestTimestampFormat(t *testing.T) {
	t.Parallel()
	// The seed's format, as JavaScript's toISOString writes it.
	re := regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)
	zones := []*time.Location{time.UTC, time.FixedZone("UTC-8", -8*3600), time.FixedZone("IST", 5*3600+1800)}
	for _, loc := range zones {
		now := time.Date(2026, 3, 1, 0, 15, 0, 7_000_000, loc)
		env := apierrors.New(apierrors.CodeInternal, "").Envelope("x", now)
		if !re.MatchString(env.Error.Timestamp) {
			t.Errorf("%s: timestamp %q does not match %s", loc, env.Error.Timestamp, re)
		}
		parsed, err := time.Parse(time.RFC3339Nano, env.Error.Timestamp)
		if err != nil || !parsed.Equal(now.Truncate(time.Millisecond)) {
			t.Errorf("%s: timestamp %q parses to %v (%v), want %v", loc, env.Error.Timestamp, parsed, err, now)
		}
	}
}

func TestMarshalIsValidJSONForAnyID(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"", `quote"and\backslash`, "<script>", "línea\nnueva", "\xff\xfe"} {
		b := apierrors.New(apierrors.CodeValidation, "msg with \"quotes\" and <tags> & \u2028").Marshal(id, testNow)
		var env map[string]any
		if err := json.Unmarshal(b, &env); err != nil {
			t.Errorf("id %q: invalid JSON %s: %v", id, b, err)
			continue
		}
		if len(env) != 3 || env["success"] != false {
			t.Errorf("id %q: top level %v", id, env)
		}
		inner := env["error"].(map[string]any)
		for _, k := range []string{"code", "message", "timestamp"} {
			if _, ok := inner[k]; !ok {
				t.Errorf("id %q: error has no %s: %v", id, k, inner)
			}
		}
	}
}

func TestWrite(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		method   string // "" means a nil request
		err      *apierrors.Error
		wantBody bool
		extra    http.Header
	}{
		{name: "GET", method: http.MethodGet, err: apierrors.New(apierrors.CodeNotFound, ""), wantBody: true},
		{name: "POST with Retry-After", method: http.MethodPost, wantBody: true,
			err:   &apierrors.Error{Status: 429, Code: apierrors.CodeRateLimitExceeded, Message: "slow down", Header: http.Header{"Retry-After": {"30"}, "Ratelimit": {"limit=10, remaining=0, reset=30"}}},
			extra: http.Header{"Retry-After": {"30"}, "Ratelimit": {"limit=10, remaining=0, reset=30"}}},
		{name: "405 with Allow", method: http.MethodDelete, wantBody: true,
			err:   &apierrors.Error{Status: 405, Code: apierrors.CodeNotFound, Message: "no", Header: http.Header{"Allow": {"GET, HEAD"}}},
			extra: http.Header{"Allow": {"GET, HEAD"}}},
		{name: "HEAD", method: http.MethodHead, err: apierrors.New(apierrors.CodeForbidden, ""), wantBody: false},
		{name: "nil request", method: "", err: apierrors.New(apierrors.CodeInternal, ""), wantBody: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var r *http.Request
			if tt.method != "" {
				r = httptest.NewRequest(tt.method, "/api/messages", nil)
			}
			rec := httptest.NewRecorder()
			apierrors.Write(rec, r, tt.err, testID, testNow)

			want := tt.err.Marshal(testID, testNow)
			if rec.Code != tt.err.HTTPStatus() {
				t.Errorf("status %d, want %d", rec.Code, tt.err.HTTPStatus())
			}
			h := rec.Header()
			checks := map[string]string{
				"Content-Type":           "application/json; charset=utf-8",
				"Content-Length":         strconv.Itoa(len(want)),
				"X-Content-Type-Options": "nosniff",
				"Cache-Control":          "no-store",
			}
			for k, v := range checks {
				if got := h.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			for k, v := range tt.extra {
				if got := h.Values(k); len(got) != len(v) || got[0] != v[0] {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if tt.wantBody && rec.Body.String() != string(want) {
				t.Errorf("body %s, want %s", rec.Body, want)
			}
			if !tt.wantBody && rec.Body.Len() != 0 {
				t.Errorf("HEAD got body %s", rec.Body)
			}
		})
	}
}

// TestWriteRealServer checks Write against net/http's own framing: the
// Content-Length it sets must agree with what is written, also for HEAD.
func TestWriteRealServer(t *testing.T) {
	t.Parallel()
	e := apierrors.New(apierrors.CodeIPBlocked, "")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apierrors.Write(w, r, e, testID, testNow)
	}))
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()
	want := e.Marshal(testID, testNow)

	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, srv.URL+"/x", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body []byte
		body, err = readAll(resp)
		if err != nil {
			t.Fatalf("%s: read body: %v", method, err)
		}
		if resp.StatusCode != 403 || resp.ContentLength != int64(len(want)) {
			t.Errorf("%s: status %d, Content-Length %d, want 403, %d", method, resp.StatusCode, resp.ContentLength, len(want))
		}
		if method == http.MethodGet && string(body) != string(want) {
			t.Errorf("GET body %s, want %s", body, want)
		}
		if method == http.MethodHead && len(body) != 0 {
			t.Errorf("HEAD body %q", body)
		}
	}
}
