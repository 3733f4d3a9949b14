package errors_test

import (
	"fmt"
	"time"

	apierrors "github.com/chatguard/chatguard/errors"
)

func ExampleClassifyUpstream() {
	// An express-validator reply from the Node backend.
	rep := apierrors.Reply{
		Status:      422,
		ContentType: "application/json; charset=utf-8",
		Body:        []byte(`{"errors":[{"type":"field","value":"hunter2","msg":"Too short","path":"password","location":"body"}]}`),
	}
	res := apierrors.ClassifyUpstream(rep, "req_1706645130123_abc123", apierrors.ClassifyOptions{})
	now := time.Date(2026, 1, 30, 19, 45, 30, 123e6, time.UTC)
	fmt.Println(res.Kind, res.Err.HTTPStatus())
	fmt.Println(string(res.Err.Marshal("req_1706645130123_abc123", now)))
	// Output:
	// express-validator 400
	// {"success":false,"error":{"code":"VALIDATION_ERROR","message":"The request data is invalid","details":{"fields":[{"field":"password","message":"Too short","value":"[FILTERED]"}]},"timestamp":"2026-01-30T19:45:30.123Z"},"requestId":"req_1706645130123_abc123"}
}

func ExampleNew() {
	e := apierrors.New(apierrors.CodeRateLimitExceeded, "")
	fmt.Println(e.HTTPStatus(), e.Message)
	fmt.Println(e)
	// Output:
	// 429 Too many requests, please try again later
	// errors: RATE_LIMIT_EXCEEDED (429): Too many requests, please try again later
}

func ExampleFromProxyError() {
	e, reason := apierrors.FromProxyError(fmt.Errorf("dial upstream: %w", timeoutError{}))
	fmt.Println(reason, e.Code, e.HTTPStatus())
	// Output:
	// timeout UPSTREAM_TIMEOUT 504
}
