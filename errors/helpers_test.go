package errors_test

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"sort"
	"testing"
	"time"

	apierrors "github.com/chatguard/chatguard/errors"
)

const (
	testID   = "req_1706645130123_abc123def"
	jsonCT   = "application/json; charset=utf-8"
	secretPW = "S3cr3tZZ"
	// A syntactically real HS256 JWT ({"alg":"HS256"} / {"sub":"1"} / "signature").
	testJWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
)

var testNow = time.Date(2026, 1, 30, 19, 45, 30, 123456789, time.UTC)

// field is one entry of details.fields as a client decodes it; Value keeps
// the raw JSON so that null, numbers and strings are told apart.
type field struct {
	Field   string          `json:"field"`
	Message string          `json:"message"`
	Value   json.RawMessage `json:"value"`
}

func f(name, msg, rawValue string) field {
	return field{Field: name, Message: msg, Value: json.RawMessage(rawValue)}
}

// fieldsOf returns e.Details["fields"] as the client sees it.
func fieldsOf(t *testing.T, e *apierrors.Error) []field {
	t.Helper()
	raw, ok := e.Details["fields"]
	if !ok {
		t.Fatalf("details has no fields: %#v", e.Details)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatalf("marshal fields: %v", err)
	}
	var out []field
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal fields %s: %v", b, err)
	}
	return out
}

func sortFields(fs []field) {
	sort.Slice(fs, func(i, j int) bool { return fs[i].Field < fs[j].Field })
}

func assertFields(t *testing.T, got, want []field) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d fields %s, want %d %s", len(got), mustJSON(t, got), len(want), mustJSON(t, want))
	}
	for i := range want {
		if got[i].Field != want[i].Field || got[i].Message != want[i].Message || string(got[i].Value) != string(want[i].Value) {
			t.Errorf("field %d = %s, want %s", i, mustJSON(t, got[i]), mustJSON(t, want[i]))
		}
	}
}

// jsonEqual reports whether two JSON texts hold the same value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("invalid JSON %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return string(b)
}

func classifyJSON(status int, body string) apierrors.Result {
	return apierrors.ClassifyUpstream(apierrors.Reply{Status: status, ContentType: jsonCT, Body: []byte(body)}, testID, apierrors.ClassifyOptions{})
}

func classifyDev(status int, ct, body string) apierrors.Result {
	return apierrors.ClassifyUpstream(apierrors.Reply{Status: status, ContentType: ct, Body: []byte(body)}, testID, apierrors.ClassifyOptions{Development: true})
}

func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// validationCase is an upstream body the classifier reads as a validation
// failure of kind, keeping the app's status.
type validationCase struct {
	name    string
	status  int
	body    string
	kind    string
	fields  []field
	message string // the app's, kept; "" = not checked
}

// runValidationCases checks each case's kind, code, status, message and
// fields (sorted by name first when sorted is set).
func runValidationCases(t *testing.T, tests []validationCase, sorted bool) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := classifyJSON(tt.status, tt.body)
			if res.Kind != tt.kind || res.Code != apierrors.CodeValidation || res.Err.Status != tt.status {
				t.Fatalf("kind %q code %s status %d, want %q VALIDATION_ERROR %d (the app's)", res.Kind, res.Code, res.Err.Status, tt.kind, tt.status)
			}
			if tt.message != "" && res.Err.Message != tt.message {
				t.Errorf("message %q, want the app's %q", res.Err.Message, tt.message)
			}
			got := fieldsOf(t, res.Err)
			if sorted {
				sortFields(got)
			}
			assertFields(t, got, tt.fields)
		})
	}
}
