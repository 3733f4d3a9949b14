package errors_test

import (
	"net/http"
	"testing"

	apierrors "github.com/chatguard/chatguard/errors"
)

// The catalogue of DESIGN.md, in its order. Clients and alert rules match on
// these names, so the test spells them out rather than using the constants.
var designCatalogue = []struct {
	code   string
	status int
}{
	{"VALIDATION_ERROR", 400},
	{"AUTHENTICATION_REQUIRED", 401},
	{"TOKEN_EXPIRED", 401},
	{"TOKEN_INVALID", 401},
	{"FORBIDDEN", 403},
	{"NOT_FOUND", 404},
	{"PAYLOAD_TOO_LARGE", 413},
	{"RATE_LIMIT_EXCEEDED", 429},
	{"IP_BLOCKED", 403},
	{"DATABASE_ERROR", 500},
	{"INTERNAL_ERROR", 500},
	{"EXTERNAL_SERVICE_ERROR", 502},
	{"UPSTREAM_UNAVAILABLE", 502},
	{"SERVICE_UNAVAILABLE", 503},
	{"UPSTREAM_TIMEOUT", 504},
}

func TestCodesMatchDesign(t *testing.T) {
	t.Parallel()
	codes := apierrors.Codes()
	if len(codes) != len(designCatalogue) {
		t.Fatalf("Codes() has %d codes, DESIGN.md lists %d: %v", len(codes), len(designCatalogue), codes)
	}
	for i, want := range designCatalogue {
		c := codes[i]
		if string(c) != want.code {
			t.Errorf("Codes()[%d] = %s, want %s", i, c, want.code)
		}
		if got := c.Status(); got != want.status {
			t.Errorf("%s.Status() = %d, want %d", c, got, want.status)
		}
		if !c.Known() {
			t.Errorf("%s.Known() = false", c)
		}
	}
}

func TestCodesStableAndUnique(t *testing.T) {
	t.Parallel()
	a, b := apierrors.Codes(), apierrors.Codes()
	seen := map[apierrors.Code]bool{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("Codes() order differs between calls at %d: %s vs %s", i, a[i], b[i])
		}
		if seen[a[i]] {
			t.Errorf("duplicate code %s", a[i])
		}
		seen[a[i]] = true
	}
	// Codes() returns a fresh slice: a caller's change must not leak into the catalogue.
	a[0] = "MUTATED"
	if apierrors.Codes()[0] != apierrors.CodeValidation {
		t.Fatal("Codes() returned shared storage")
	}
}

func TestCodeMessages(t *testing.T) {
	t.Parallel()
	want := map[apierrors.Code]string{
		apierrors.CodeValidation:          "The request data is invalid",
		apierrors.CodeAuthRequired:        "Authentication is required",
		apierrors.CodeTokenExpired:        "The token has expired",
		apierrors.CodeTokenInvalid:        "The token is invalid",
		apierrors.CodeForbidden:           "You do not have permission to perform this action",
		apierrors.CodeNotFound:            "The requested resource was not found",
		apierrors.CodePayloadTooLarge:     "The request body is too large",
		apierrors.CodeRateLimitExceeded:   "Too many requests, please try again later",
		apierrors.CodeIPBlocked:           "This address is temporarily blocked",
		apierrors.CodeDatabase:            "A database error occurred",
		apierrors.CodeInternal:            "An internal error occurred",
		apierrors.CodeExternalService:     "An external service failed",
		apierrors.CodeUpstreamUnavailable: "The service is unavailable",
		apierrors.CodeServiceUnavailable:  "The service is temporarily unavailable",
		apierrors.CodeUpstreamTimeout:     "The service did not answer in time",
	}
	if len(want) != len(apierrors.Codes()) {
		t.Fatalf("test lists %d messages for %d codes", len(want), len(apierrors.Codes()))
	}
	messages := map[string]apierrors.Code{}
	for _, c := range apierrors.Codes() {
		t.Run(string(c), func(t *testing.T) {
			t.Parallel()
			if got := c.Message(); got != want[c] {
				t.Errorf("Message() = %q, want %q", got, want[c])
			}
		})
		if other, dup := messages[c.Message()]; dup {
			t.Errorf("%s and %s share the message %q", c, other, c.Message())
		}
		messages[c.Message()] = c
	}
}

func TestUnknownCode(t *testing.T) {
	t.Parallel()
	for _, c := range []apierrors.Code{"", "CONVERSATION_LOCKED", "validation_error"} {
		if c.Known() {
			t.Errorf("%q.Known() = true", c)
		}
		if got := c.Status(); got != http.StatusInternalServerError {
			t.Errorf("%q.Status() = %d, want 500", c, got)
		}
		if got, want := c.Message(), apierrors.CodeInternal.Message(); got != want {
			t.Errorf("%q.Message() = %q, want %q", c, got, want)
		}
	}
}

func TestCodeForStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   apierrors.Code
	}{
		{400, apierrors.CodeValidation},
		{401, apierrors.CodeAuthRequired},
		{402, apierrors.CodeValidation},
		{403, apierrors.CodeForbidden},
		{404, apierrors.CodeNotFound},
		{405, apierrors.CodeNotFound},
		{406, apierrors.CodeValidation},
		{407, apierrors.CodeAuthRequired},
		{409, apierrors.CodeValidation},
		{410, apierrors.CodeNotFound},
		{413, apierrors.CodePayloadTooLarge},
		{415, apierrors.CodeValidation},
		{422, apierrors.CodeValidation},
		{429, apierrors.CodeRateLimitExceeded},
		{431, apierrors.CodeValidation},
		{499, apierrors.CodeValidation},
		{500, apierrors.CodeInternal},
		{501, apierrors.CodeInternal},
		{502, apierrors.CodeExternalService},
		{503, apierrors.CodeServiceUnavailable},
		{504, apierrors.CodeUpstreamTimeout},
		{505, apierrors.CodeInternal},
		{507, apierrors.CodeInternal},
		{599, apierrors.CodeInternal},
	}
	for _, tt := range tests {
		if got := apierrors.CodeForStatus(tt.status); got != tt.want {
			t.Errorf("CodeForStatus(%d) = %s, want %s", tt.status, got, tt.want)
		}
	}
}
