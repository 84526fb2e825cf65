package stackshift

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// writeTimeout is the deadline of one worker write RPC.
const writeTimeout = 10 * time.Second

// lease is one attempt's lease: run id, token, a local estimate of the deadline (extended by
// each heartbeat) and the interrupt switch (cancels the handler's context).
type lease struct {
	runID   string
	token   string
	timeout time.Duration

	log       *slog.Logger
	mu        sync.Mutex
	deadline  time.Time
	reason    string
	suspended bool
	done      chan struct{}
	cancel    context.CancelFunc
}

func newLease(runID, token string, timeout time.Duration, cancel context.CancelFunc, log *slog.Logger) *lease {
	return &lease{runID: runID, token: token, timeout: timeout, deadline: time.Now().Add(timeout), done: make(chan struct{}), cancel: cancel, log: log}
}

func (l *lease) currentDeadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// extended records a successful heartbeat sent at sentAt.
func (l *lease) extended(sentAt time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d := sentAt.Add(l.timeout); d.After(l.deadline) {
		l.deadline = d
	}
}

// interrupt stops the attempt; the first reason wins.
func (l *lease) interrupt(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reason != "" {
		return
	}
	l.reason = reason
	close(l.done)
	if l.cancel != nil {
		l.cancel()
	}
}

// suspend stops the attempt because the run suspended (a sleep or an event wait): the server
// holds the wait and delivers the run again, so nothing is reported.
func (l *lease) suspend(reason string) {
	l.mu.Lock()
	if l.reason == "" {
		l.suspended = true
	}
	l.mu.Unlock()
	l.interrupt(reason)
}

// isSuspended reports whether suspend stopped the attempt.
func (l *lease) isSuspended() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.suspended
}

func (l *lease) isInterrupted() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *lease) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	reason := l.reason
	if reason == "" {
		reason = "the attempt was stopped"
	}
	return &InterruptedError{Reason: reason}
}

type writeKind int

const (
	writeInterrupted writeKind = iota + 1
	writeGaveUp
	writeRejected
)

// writeError says why a worker write did not go through.
type writeError struct {
	kind        writeKind
	status      *Error
	interrupted error
}

// leaseLost: ABORTED (cancelled), FAILED_PRECONDITION (stale/expired lease), NOT_FOUND.
func leaseLost(c codes.Code) bool {
	return c == codes.Aborted || c == codes.FailedPrecondition || c == codes.NotFound
}

// transient failures are retried while the lease lasts (writes are idempotent per token).
func transient(c codes.Code) bool {
	return c == codes.Unavailable || c == codes.DeadlineExceeded || c == codes.Unknown || c == codes.Canceled
}

func lostReason(s *status.Status) string {
	what := "the attempt was stopped"
	switch s.Code() {
	case codes.Aborted:
		what = "the run was cancelled"
	case codes.FailedPrecondition:
		what = "the lease is no longer valid"
	case codes.NotFound:
		what = "the run no longer exists"
	}
	if s.Message() == "" {
		return what
	}
	return what + " (" + s.Message() + ")"
}

// backoff: 100 ms doubling up to 5 s, each delay between half and all of its nominal value.
type backoff struct{ failures int }

func (b *backoff) next() time.Duration {
	nominal := min(100*time.Millisecond<<min(b.failures, 20), 5*time.Second)
	b.failures++
	return nominal/2 + time.Duration(rand.Int64N(int64(nominal/2)+1))
}

func (b *backoff) reset() { b.failures = 0 }

// write sends one worker RPC, retrying transient failures with backoff until the lease deadline;
// lease-lost codes interrupt the lease. It uses its own context (not the handler's), so that a
// cancelled handler context does not abort the write of an outcome.
func write[T any](l *lease, what string, call func(ctx context.Context) (T, error)) (T, *writeError) {
	return writeWithTimeout(l, what, writeTimeout, call)
}

// writeWithTimeout is write with a per-call deadline other than writeTimeout (a lock wait).
func writeWithTimeout[T any](l *lease, what string, timeout time.Duration, call func(ctx context.Context) (T, error)) (T, *writeError) {
	var zero T
	var b backoff
	for {
		if l.isInterrupted() {
			return zero, &writeError{kind: writeInterrupted, interrupted: l.err()}
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		v, err := call(ctx)
		cancel()
		if err == nil {
			return v, nil
		}
		s, _ := status.FromError(err)
		if leaseLost(s.Code()) {
			l.interrupt(lostReason(s))
			return zero, &writeError{kind: writeInterrupted, interrupted: l.err()}
		}
		e := &Error{Code: s.Code(), Message: s.Message()}
		if !transient(s.Code()) {
			return zero, &writeError{kind: writeRejected, status: e}
		}
		left := time.Until(l.currentDeadline())
		if left <= 0 {
			return zero, &writeError{kind: writeGaveUp, status: e}
		}
		delay := min(b.next(), left)
		l.log.Warn("worker write failed; retrying while the lease lasts", "rpc", what, "run_id", l.runID, "error", e, "retry_in", delay.Round(time.Millisecond))
		select {
		case <-time.After(delay):
		case <-l.done:
		}
	}
}
