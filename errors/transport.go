package errors

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	stderrors "errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
)

// ErrClientGone marks a failure caused by the client (an upload cut off):
// the transport wraps it, FromProxyError reports client_closed.
var ErrClientGone = stderrors.New("the client went away")

// ErrBadResponse marks an upstream answer that is not valid HTTP (a status
// line that does not parse, a status outside 100–599): the transport wraps
// it, FromProxyError reports bad_response, and the client gets 502, as from
// nginx ("upstream sent invalid status line").
var ErrBadResponse = stderrors.New("the upstream sent an invalid response")

// ErrBadRequestBody marks a request body whose framing does not parse (a
// malformed chunk): the client gets 400 and the connection closes, as from
// nginx ("client sent invalid chunked body").
var ErrBadRequestBody = stderrors.New("the request body is malformed")

// StatusClientClosed is logged (never sent) when the client went away before
// the upstream answered, as nginx does.
const StatusClientClosed = 499

// FromProxyError classifies a failure of the proxy itself to get an answer
// from the upstream. reason is a short, bounded word for logs and metric
// labels: refused, reset, timeout, dns, eof, body_too_large, client_closed,
// bad_response, bad_request, tls, other.
// For client_closed the returned Error is never written (there is nobody to
// read it); its status is 499.
func FromProxyError(err error) (e *Error, reason string) {
	var maxBytes *http.MaxBytesError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case stderrors.As(err, &maxBytes):
		e := New(CodePayloadTooLarge, "")
		e.Details = map[string]any{"limitBytes": maxBytes.Limit} // as for a Content-Length over the limit
		e.Header = http.Header{"Connection": {"close"}}          // the rest of the body is not read
		return e, "body_too_large"
	case stderrors.Is(err, context.Canceled), stderrors.Is(err, ErrClientGone):
		e := New(CodeServiceUnavailable, "the client closed the request")
		e.Status = StatusClientClosed
		return e, "client_closed"
	case stderrors.Is(err, ErrBadRequestBody):
		e := New(CodeValidation, "The request body is malformed")
		e.Header = http.Header{"Connection": {"close"}}
		return e, "bad_request"
	case stderrors.Is(err, ErrBadResponse):
		return New(CodeUpstreamUnavailable, ""), "bad_response"
	case stderrors.Is(err, context.DeadlineExceeded):
		return New(CodeUpstreamTimeout, ""), "timeout"
	case stderrors.As(err, &dnsErr):
		return New(CodeUpstreamUnavailable, ""), "dns"
	case isTLSFailure(err):
		return New(CodeUpstreamUnavailable, ""), "tls"
	case stderrors.As(err, &netErr) && netErr.Timeout():
		return New(CodeUpstreamTimeout, ""), "timeout"
	case stderrors.Is(err, syscall.ECONNREFUSED):
		return New(CodeUpstreamUnavailable, ""), "refused"
	case stderrors.Is(err, syscall.ECONNRESET), stderrors.Is(err, syscall.EPIPE):
		return New(CodeUpstreamUnavailable, ""), "reset"
	case stderrors.Is(err, io.EOF), stderrors.Is(err, io.ErrUnexpectedEOF):
		return New(CodeUpstreamUnavailable, ""), "eof"
	case isChunkedFraming(err):
		// A response body whose chunked framing does not parse: an answer
		// that is not valid HTTP, as a bad status line is (TCP QA: "other").
		return New(CodeUpstreamUnavailable, ""), "bad_response"
	}
	return New(CodeUpstreamUnavailable, ""), "other"
}

// isChunkedFraming recognises net/http's chunked reader's errors ("malformed
// chunked encoding", "invalid byte in chunk length", "http chunk length too
// large", "chunked encoding contains too much non-data"), which it does not
// export; a chunked body cut short is io.ErrUnexpectedEOF, an eof.
func isChunkedFraming(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "chunked encoding") || strings.Contains(msg, "chunk length")
}

// isTLSFailure recognises an https:// upstream whose TLS handshake failed:
// a certificate not trusted, expired or for another name, a TLS alert, or
// an upstream that answered in plain HTTP.
func isTLSFailure(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		record   tls.RecordHeaderError
		alert    tls.AlertError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return stderrors.As(err, &verify) || stderrors.As(err, &record) || stderrors.As(err, &alert) ||
		stderrors.As(err, &unknown) || stderrors.As(err, &hostname) || stderrors.As(err, &invalid) ||
		// net/http's Transport turns a RecordHeaderError into this text, and
		// an alert the upstream sent over TCP has no exported type.
		err != nil && (strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") ||
			strings.Contains(err.Error(), "remote error: tls: "))
}
