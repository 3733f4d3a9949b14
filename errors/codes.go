// Package errors defines chatguard's error envelope, its code catalogue, the
// classification of upstream error replies and of the proxy's own failures,
// and the writers that put an envelope on the wire.
//
// Importers alias it (apierrors "github.com/chatguard/chatguard/errors"), the
// same way Kubernetes code imports k8s.io/apimachinery/pkg/api/errors.
package errors

import "net/http"

// Code is one entry of the envelope's code catalogue.
type Code string

// The catalogue. The names are a contract: clients and alert rules match on them.
const (
	CodeValidation          Code = "VALIDATION_ERROR"
	CodeAuthRequired        Code = "AUTHENTICATION_REQUIRED"
	CodeTokenExpired        Code = "TOKEN_EXPIRED"
	CodeTokenInvalid        Code = "TOKEN_INVALID"
	CodeForbidden           Code = "FORBIDDEN"
	CodeNotFound            Code = "NOT_FOUND"
	CodePayloadTooLarge     Code = "PAYLOAD_TOO_LARGE"
	CodeRateLimitExceeded   Code = "RATE_LIMIT_EXCEEDED"
	CodeIPBlocked           Code = "IP_BLOCKED"
	CodeDatabase            Code = "DATABASE_ERROR"
	CodeInternal            Code = "INTERNAL_ERROR"
	CodeExternalService     Code = "EXTERNAL_SERVICE_ERROR"
	CodeUpstreamUnavailable Code = "UPSTREAM_UNAVAILABLE"
	CodeServiceUnavailable  Code = "SERVICE_UNAVAILABLE"
	CodeUpstreamTimeout     Code = "UPSTREAM_TIMEOUT"
)

type codeInfo struct {
	status  int
	message string
}

var catalogue = map[Code]codeInfo{
	CodeValidation:          {http.StatusBadRequest, "The request data is invalid"},
	CodeAuthRequired:        {http.StatusUnauthorized, "Authentication is required"},
	CodeTokenExpired:        {http.StatusUnauthorized, "The token has expired"},
	CodeTokenInvalid:        {http.StatusUnauthorized, "The token is invalid"},
	CodeForbidden:           {http.StatusForbidden, "You do not have permission to perform this action"},
	CodeNotFound:            {http.StatusNotFound, "The requested resource was not found"},
	CodePayloadTooLarge:     {http.StatusRequestEntityTooLarge, "The request body is too large"},
	CodeRateLimitExceeded:   {http.StatusTooManyRequests, "Too many requests, please try again later"},
	CodeIPBlocked:           {http.StatusForbidden, "This address is temporarily blocked"},
	CodeDatabase:            {http.StatusInternalServerError, "A database error occurred"},
	CodeInternal:            {http.StatusInternalServerError, "An internal error occurred"},
	CodeExternalService:     {http.StatusBadGateway, "An external service failed"},
	CodeUpstreamUnavailable: {http.StatusBadGateway, "The service is unavailable"},
	CodeServiceUnavailable:  {http.StatusServiceUnavailable, "The service is temporarily unavailable"},
	CodeUpstreamTimeout:     {http.StatusGatewayTimeout, "The service did not answer in time"},
}

// Codes returns every code of the catalogue, in a stable order.
func Codes() []Code {
	return []Code{
		CodeValidation, CodeAuthRequired, CodeTokenExpired, CodeTokenInvalid, CodeForbidden,
		CodeNotFound, CodePayloadTooLarge, CodeRateLimitExceeded, CodeIPBlocked, CodeDatabase,
		CodeInternal, CodeExternalService, CodeUpstreamUnavailable, CodeServiceUnavailable,
		CodeUpstreamTimeout,
	}
}

// Status is the HTTP status that goes with c; 500 for a code outside the catalogue.
func (c Code) Status() int {
	if info, ok := catalogue[c]; ok {
		return info.status
	}
	return http.StatusInternalServerError
}

// Message is the catalogue's client-safe message for c.
func (c Code) Message() string {
	if info, ok := catalogue[c]; ok {
		return info.message
	}
	return catalogue[CodeInternal].message
}

// Known reports whether c is in the catalogue.
func (c Code) Known() bool {
	_, ok := catalogue[c]
	return ok
}

// CodeForStatus picks the catalogue code that best describes an HTTP error
// status when nothing else is known about the failure.
func CodeForStatus(status int) Code {
	switch status {
	case http.StatusUnauthorized, http.StatusProxyAuthRequired:
		return CodeAuthRequired
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusGone:
		return CodeNotFound
	case http.StatusRequestEntityTooLarge:
		return CodePayloadTooLarge
	case http.StatusTooManyRequests:
		return CodeRateLimitExceeded
	case http.StatusBadGateway:
		return CodeExternalService
	case http.StatusServiceUnavailable:
		return CodeServiceUnavailable
	case http.StatusGatewayTimeout:
		return CodeUpstreamTimeout
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeValidation
}

// HeadersTooLarge is the message of a 431, chatguard's own or the app's.
const HeadersTooLarge = "the request headers are too large"
