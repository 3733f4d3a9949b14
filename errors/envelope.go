package errors

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// TimestampLayout is the envelope's timestamp format: RFC 3339 in UTC with milliseconds,
// as JavaScript's Date.prototype.toISOString writes it.
const TimestampLayout = "2006-01-02T15:04:05.000Z"

// Envelope is the one JSON shape every error takes on the wire.
type Envelope struct {
	Success   bool   `json:"success"`
	Error     Body   `json:"error"`
	RequestID string `json:"requestId"`
}

// Body is the envelope's "error" member.
type Body struct {
	Code      Code           `json:"code"`
	Message   string         `json:"message"`
	Details   map[string]any `json:"details,omitempty"`
	Timestamp string         `json:"timestamp"`
}

// Error is a failure that chatguard answers with an envelope. It is a Go error
// so that it can travel through ordinary error returns.
type Error struct {
	// Status is the HTTP status; zero means Code.Status().
	Status  int
	Code    Code
	Message string
	// Details is sent to the client as is; callers put only client-safe,
	// redacted values in it.
	Details map[string]any
	// Header holds extra response headers (Retry-After, Allow, …); may be nil.
	Header http.Header
}

// New returns an Error with the catalogue's status and message for code,
// unless message is non-empty.
func New(code Code, message string) *Error {
	if message == "" {
		message = code.Message()
	}
	return &Error{Status: code.Status(), Code: code, Message: message}
}

// WithDetails sets e's details and returns e.
func (e *Error) WithDetails(d map[string]any) *Error {
	e.Details = d
	return e
}

func (e *Error) Error() string {
	return fmt.Sprintf("errors: %s (%d): %s", e.Code, e.HTTPStatus(), e.Message)
}

// HTTPStatus is the status e is written with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	return e.Code.Status()
}

// Envelope builds the wire form of e.
func (e *Error) Envelope(requestID string, now time.Time) Envelope {
	return Envelope{
		Error: Body{
			Code:      e.Code,
			Message:   e.Message,
			Details:   e.Details,
			Timestamp: now.UTC().Format(TimestampLayout),
		},
		RequestID: requestID,
	}
}

// Marshal encodes the envelope of e. It never fails: details that cannot be
// encoded are dropped rather than losing the envelope.
func (e *Error) Marshal(requestID string, now time.Time) []byte {
	env := e.Envelope(requestID, now)
	b, err := json.Marshal(env)
	if err != nil {
		env.Error.Details = nil
		b, _ = json.Marshal(env)
	}
	return b
}

// Write sends e as an envelope. Nothing is written to the body of a HEAD request.
func Write(w http.ResponseWriter, r *http.Request, e *Error, requestID string, now time.Time) {
	body := e.Marshal(requestID, now)
	h := w.Header()
	for k, vals := range e.Header {
		h[k] = vals
	}
	SetHeaders(h, len(body))
	w.WriteHeader(e.HTTPStatus())
	if r == nil || r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// SetHeaders sets the headers that go with an envelope body of n bytes.
func SetHeaders(h http.Header, n int) {
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(n))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
}
