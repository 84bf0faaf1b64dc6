package audit

import (
	"errors"
	"fmt"
)

// Code classifies an application error. The HTTP layer maps each code to a
// status in one place; clients see the code string in error bodies.
type Code string

const (
	EINVALID      Code = "invalid_request"   // the input is wrong; 400
	ENOTFOUND     Code = "not_found"         // absent or not visible to the caller; 404
	ECONFLICT     Code = "conflict"          // e.g. an idempotency key reused for another event; 409
	EUNAUTHORIZED Code = "unauthorized"      // no valid credentials; 401
	EFORBIDDEN    Code = "forbidden"         // valid credentials, not allowed; 403
	ETOOLARGE     Code = "payload_too_large" // body over the limit; 413
	EUNAVAILABLE  Code = "unavailable"       // the database does not answer; 503
	EINTERNAL     Code = "internal_error"    // anything else; 500, details only in logs
)

// Error is the one application error type. Message is safe to show to
// clients; internal details never go into it.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf returns an *Error with a formatted, client-safe message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error and "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-safe message of err: the message of an
// *Error, or "Internal error." for anything else.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error."
}
