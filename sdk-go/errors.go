package stackshift

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is the error of a client call: the gRPC status code and the server's message. Test it
// with errors.Is against the sentinels (errors.Is(err, stackshift.ErrNotFound)) or errors.As.
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the server's message.
	Message string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Message == "" {
		return CodeName(e.Code)
	}
	return fmt.Sprintf("%s: %s", strings.ToLower(strings.ReplaceAll(CodeName(e.Code), "_", " ")), e.Message)
}

// Is reports whether target is an *Error with the same code (so the sentinels match any message).
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// Name is the canonical status name, e.g. "NOT_FOUND" (the same string in every SDK).
func (e *Error) Name() string { return CodeName(e.Code) }

// Transient reports whether retrying the same call later may succeed.
func (e *Error) Transient() bool { return e.Code == codes.Unavailable }

// Sentinels for errors.Is.
var (
	ErrInvalidArgument    = &Error{Code: codes.InvalidArgument}
	ErrNotFound           = &Error{Code: codes.NotFound}
	ErrAlreadyExists      = &Error{Code: codes.AlreadyExists}
	ErrFailedPrecondition = &Error{Code: codes.FailedPrecondition}
	ErrUnauthenticated    = &Error{Code: codes.Unauthenticated}
	ErrPermissionDenied   = &Error{Code: codes.PermissionDenied}
	ErrResourceExhausted  = &Error{Code: codes.ResourceExhausted}
	ErrAborted            = &Error{Code: codes.Aborted}
	ErrUnavailable        = &Error{Code: codes.Unavailable}
	ErrDeadlineExceeded   = &Error{Code: codes.DeadlineExceeded}
	ErrCancelled          = &Error{Code: codes.Canceled}
)

// CodeName is the canonical gRPC status name of c ("NOT_FOUND", "CANCELLED", ...).
func CodeName(c codes.Code) string {
	if c == codes.Canceled {
		return "CANCELLED"
	}
	name := c.String()
	var b strings.Builder
	for i, r := range name {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// fromRPC converts a gRPC call error into an *Error.
func fromRPC(err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		return &Error{Code: codes.Unknown, Message: err.Error()}
	}
	msg := s.Message()
	if s.Code() == codes.Unavailable && msg == "" {
		msg = "the server did not answer"
	}
	return &Error{Code: s.Code(), Message: msg}
}

func invalidArgument(format string, args ...any) error {
	return &Error{Code: codes.InvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// NonRetryableError marks an error that must not be retried: returned from a handler, it fails
// the run at once; returned from a step function, it is also recorded as the step's terminal
// failure, so a replay returns it (as *StepFailedError) without running the step again.
type NonRetryableError struct {
	Err error
	// Details are optional JSON-serializable details recorded with the failure.
	Details any
}

// NonRetryable wraps err so that it fails the run at once.
func NonRetryable(err error) error {
	if err == nil {
		return nil
	}
	return &NonRetryableError{Err: err}
}

// NonRetryablef is NonRetryable(fmt.Errorf(format, args...)).
func NonRetryablef(format string, args ...any) error {
	return NonRetryable(fmt.Errorf(format, args...))
}

func (e *NonRetryableError) Error() string { return e.Err.Error() }
func (e *NonRetryableError) Unwrap() error { return e.Err }

// StepFailedError is a step's recorded terminal failure, returned by Step.Run on replay (the
// step function is not called). It keeps the failure's NonRetryable flag, so returning it from
// the handler fails the run.
type StepFailedError struct {
	StepID  string
	Failure Failure
}

func (e *StepFailedError) Error() string {
	return fmt.Sprintf("step %s failed: %s", e.StepID, e.Failure.Message)
}

// InterruptedError means the attempt was interrupted: the run was cancelled, the lease was
// lost, or the worker is shutting down. Step.Run returns it instead of running or recording
// anything; the worker then reports nothing. Return it from the handler.
type InterruptedError struct {
	Reason string
}

func (e *InterruptedError) Error() string { return "attempt interrupted: " + e.Reason }

// IsNonRetryable reports whether err (or an error it wraps) is non-retryable. A
// *ChildFailedError is: the child's outcome is journaled, so a retry would see it again.
func IsNonRetryable(err error) bool {
	var nr *NonRetryableError
	if errors.As(err, &nr) {
		return true
	}
	var cf *ChildFailedError
	if errors.As(err, &cf) {
		return true
	}
	var sf *StepFailedError
	return errors.As(err, &sf) && sf.Failure.NonRetryable
}

// IsInterrupted reports whether err (or an error it wraps) is an *InterruptedError.
func IsInterrupted(err error) bool {
	var ie *InterruptedError
	return errors.As(err, &ie)
}

const maxStackTrace = 8 * 1024

// failureFromError renders a handler or step error as a Failure.
func failureFromError(err error) Failure {
	f := Failure{Message: err.Error(), Type: fmt.Sprintf("%T", err), NonRetryable: IsNonRetryable(err)}
	var sf *StepFailedError
	if errors.As(err, &sf) {
		f.Type = sf.Failure.Type
		f.Details = sf.Failure.Details
	}
	var cf *ChildFailedError
	if errors.As(err, &cf) {
		f.Type = "ChildFailed"
		if b, err := json.Marshal(map[string]string{"runId": cf.RunID, "job": cf.Job, "status": string(cf.Status), "childErrorType": cf.Failure.Type}); err == nil {
			f.Details = b
		}
	}
	var nr *NonRetryableError
	if errors.As(err, &nr) {
		f.Type = fmt.Sprintf("%T", nr.Err)
		if nr.Details != nil {
			if b, err := json.Marshal(nr.Details); err == nil {
				f.Details = b
			}
		}
	}
	return f
}
