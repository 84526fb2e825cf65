package stackshift

// The state store: durable JSON values by key with optional expiry, atomic counters,
// compare-and-set on versions, and locks with fencing tokens, scoped to the API key's
// namespace (docs/state.md).
//
// State comes in two flavours with the same methods:
//   - Client.State(), outside runs: every call applies directly.
//   - JobContext.State in a handler: every call is journaled like a step, under the run's
//     lease. Calls get the ids state:1, state:2, ... in the order the handler makes them;
//     when an attempt is retried, the replayed handler gets the recorded results back (an
//     increment is never applied twice, a read returns what it read the first time). Make
//     state calls in a deterministic order and never concurrently inside one run.

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// reasonMetadata is the trailing metadata the server sets on state refusals.
const reasonMetadata = "stackshift-error-reason"

// The reasons of a *ConflictError.
const (
	// ReasonVersionMismatch: an expected version did not match the key's version.
	ReasonVersionMismatch = "VERSION_MISMATCH"
	// ReasonNotAnInteger: Increment on a value that is not a JSON integer.
	ReasonNotAnInteger = "NOT_AN_INTEGER"
	// ReasonCounterOverflow: an increment would leave the signed 64-bit range.
	ReasonCounterOverflow = "COUNTER_OVERFLOW"
	// ReasonLockNotHeld: release or extend with a fencing token that does not hold the lock.
	ReasonLockNotHeld = "LOCK_NOT_HELD"
)

// ConflictError is a state refusal that depends on the stored state (the server answered
// FAILED_PRECONDITION with a reason): a version mismatch, a counter that is not an integer or
// would overflow, a lock that is not held. Inside a run it is journaled and replayed as the
// same refusal. Test it with errors.As; errors.Is(err, ErrFailedPrecondition) matches it too.
type ConflictError struct {
	// Reason is one of the Reason* constants.
	Reason string
	// Message is the server's message.
	Message string
}

// Error implements error.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("state conflict (%s): %s", e.Reason, e.Message)
}

// Is makes errors.Is(err, ErrFailedPrecondition) true for a conflict.
func (e *ConflictError) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == codes.FailedPrecondition
}

// stateError maps a state RPC error: a FAILED_PRECONDITION carrying the reason trailer is a
// *ConflictError, anything else an *Error.
func stateError(err error, trailer metadata.MD) error {
	if conflict := asConflict(err, trailer); conflict != nil {
		return conflict
	}
	return fromRPC(err)
}

func asConflict(err error, trailer metadata.MD) *ConflictError {
	s, ok := status.FromError(err)
	if !ok || s.Code() != codes.FailedPrecondition {
		return nil
	}
	if reasons := trailer.Get(reasonMetadata); len(reasons) > 0 && reasons[0] != "" {
		return &ConflictError{Reason: reasons[0], Message: s.Message()}
	}
	return nil
}

// StateEntry is a live key with its value.
type StateEntry struct {
	Key string
	// Value is the stored JSON.
	Value json.RawMessage
	// Version grows with every write; it is what ExpectedVersion compares.
	Version int64
	// ExpiresAt is nil when the key never expires.
	ExpiresAt *time.Time
	UpdatedAt time.Time
}

// Decode unmarshals the entry's value into v.
func (e *StateEntry) Decode(v any) error { return json.Unmarshal(e.Value, v) }

// SetOptions are the options of State.Set. Set at most one of TTL and ExpiresAt; neither
// means the key never expires (a set replaces any earlier expiry).
type SetOptions struct {
	// TTL is the time to live from now (at most 3650 days).
	TTL time.Duration
	// ExpiresAt is an absolute expiry (in the future).
	ExpiresAt time.Time
	// ExpectedVersion makes the set a compare-and-set: write only if the key's version is
	// this one (0: only if the key is absent); a mismatch is a *ConflictError with
	// ReasonVersionMismatch. Nil writes unconditionally.
	ExpectedVersion *int64
}

// ExpectVersion returns a pointer to v, for SetOptions.ExpectedVersion.
func ExpectVersion(v int64) *int64 { return &v }

// IncrementOptions are the options of State.IncrementWith.
type IncrementOptions struct {
	// By is the amount to add (negative to subtract); nil adds 1.
	By *int64
	// TTL applies when the increment creates the key (a live key keeps its expiry).
	TTL time.Duration
}

// Counter is a counter after an increment.
type Counter struct {
	Value     int64
	Version   int64
	ExpiresAt *time.Time
}

// StateKey describes a live key without its value.
type StateKey struct {
	Key       string
	Version   int64
	ExpiresAt *time.Time
	UpdatedAt time.Time
	ValueSize int64
}

// ListKeysOptions page through State.List.
type ListKeysOptions struct {
	// PageSize is 1-1000 (0 = 100).
	PageSize int32
	// PageToken is the NextPageToken of the previous page.
	PageToken string
}

// KeyPage is one page of keys in ascending byte order.
type KeyPage struct {
	Keys []StateKey
	// NextPageToken is empty at the end.
	NextPageToken string
}

// State reads and writes the state store. Get one from Client.State (direct calls) or
// JobContext.State (calls journaled in the run). It is safe for concurrent use outside runs;
// inside a run, make calls one at a time in a deterministic order.
type State struct {
	client pb.StateServiceClient
	run    *runBinding
}

// runBinding ties a State to one execution of a handler.
type runBinding struct {
	lease *lease
	calls atomic.Int64
}

// Journaled reports whether calls are journaled in a run (JobContext.State).
func (s *State) Journaled() bool { return s.run != nil }

// stateCall is one state RPC: send it with the run context (nil outside runs) and the call
// options that capture the trailer.
type stateCall[T any] func(ctx context.Context, run *pb.RunContext, opts ...grpc.CallOption) (T, error)

// invokeState sends a state call. Outside a run: once, with the call timeout (plus any lock
// wait). Inside a run: with the next call id, through the lease-checked write loop, so a lost
// lease interrupts the attempt while a conflict comes back as a *ConflictError.
func invokeState[T any](ctx context.Context, s *State, what string, wait time.Duration, call stateCall[T]) (T, error) {
	var zero T
	extra := time.Duration(0)
	if wait > 0 {
		extra = wait + longPollSlack
	}
	if s.run == nil {
		cctx, cancel := withTimeout(ctx, callTimeout+extra)
		defer cancel()
		var trailer metadata.MD
		v, err := call(cctx, nil, grpc.Trailer(&trailer))
		if err != nil {
			return zero, stateError(err, trailer)
		}
		return v, nil
	}
	l := s.run.lease
	run := &pb.RunContext{RunId: l.runID, LeaseToken: l.token, CallId: fmt.Sprintf("state:%d", s.run.calls.Add(1))}
	type answer struct {
		value    T
		conflict *ConflictError
	}
	got, werr := writeWithTimeout(l, what, writeTimeout+extra, func(cctx context.Context) (answer, error) {
		var trailer metadata.MD
		v, err := call(cctx, run, grpc.Trailer(&trailer))
		if conflict := asConflict(err, trailer); conflict != nil {
			return answer{conflict: conflict}, nil
		}
		return answer{value: v}, err
	})
	switch {
	case werr == nil && got.conflict != nil:
		return zero, got.conflict
	case werr == nil:
		return got.value, nil
	case werr.kind == writeInterrupted:
		return zero, werr.interrupted
	case werr.kind == writeGaveUp:
		l.interrupt("the server stayed unreachable until the lease expired (" + werr.status.Message + ")")
		return zero, l.err()
	default:
		return zero, werr.status
	}
}

// GetEntry reads a key; it returns nil (and no error) when the key is absent or expired.
func (s *State) GetEntry(ctx context.Context, key string) (*StateEntry, error) {
	resp, err := invokeState(ctx, s, "GetState", 0, func(ctx context.Context, run *pb.RunContext, o ...grpc.CallOption) (*pb.GetStateResponse, error) {
		return s.client.GetState(ctx, &pb.GetStateRequest{Key: key, Run: run}, o...)
	})
	if err != nil {
		return nil, err
	}
	e := resp.GetEntry()
	if e == nil {
		return nil, nil
	}
	return &StateEntry{
		Key: e.GetKey(), Value: rawJSON(e.GetValue()), Version: e.GetVersion(),
		ExpiresAt: optTime(e.GetExpiresAt(), e.GetExpiresAt() != nil), UpdatedAt: e.GetUpdatedAt().AsTime(),
	}, nil
}

// Get reads a key into dst (decoded with encoding/json) and reports whether the key exists.
// dst is left untouched when the key is absent or expired.
func (s *State) Get(ctx context.Context, key string, dst any) (bool, error) {
	e, err := s.GetEntry(ctx, key)
	if err != nil || e == nil {
		return false, err
	}
	if dst != nil {
		if err := json.Unmarshal(e.Value, dst); err != nil {
			return true, fmt.Errorf("state key %q does not decode into %T: %w", key, dst, err)
		}
	}
	return true, nil
}

// Set writes value (any JSON-serializable value, or json.RawMessage) under key and returns the
// key's new version. opts may be nil.
func (s *State) Set(ctx context.Context, key string, value any, opts *SetOptions) (int64, error) {
	body, err := marshalJSON(value, "the state value")
	if err != nil {
		return 0, err
	}
	req := &pb.SetStateRequest{Key: key, Value: body}
	if opts != nil {
		switch {
		case opts.TTL != 0 && !opts.ExpiresAt.IsZero():
			return 0, invalidArgument("set at most one of TTL and ExpiresAt")
		case opts.TTL != 0:
			req.Expiration = &pb.SetStateRequest_Ttl{Ttl: durationpb.New(opts.TTL)}
		case !opts.ExpiresAt.IsZero():
			req.Expiration = &pb.SetStateRequest_ExpiresAt{ExpiresAt: timestamppb.New(opts.ExpiresAt)}
		}
		req.ExpectedVersion = opts.ExpectedVersion
	}
	resp, err := invokeState(ctx, s, "SetState", 0, func(ctx context.Context, run *pb.RunContext, o ...grpc.CallOption) (*pb.SetStateResponse, error) {
		req.Run = run
		return s.client.SetState(ctx, req, o...)
	})
	if err != nil {
		return 0, err
	}
	return resp.GetVersion(), nil
}

// Delete removes a key and reports whether a live key was deleted.
func (s *State) Delete(ctx context.Context, key string) (bool, error) {
	return s.deleteKey(ctx, key, nil)
}

// DeleteAtVersion removes a key only if its version is version (a mismatch is a
// *ConflictError with ReasonVersionMismatch).
func (s *State) DeleteAtVersion(ctx context.Context, key string, version int64) (bool, error) {
	return s.deleteKey(ctx, key, &version)
}

func (s *State) deleteKey(ctx context.Context, key string, expected *int64) (bool, error) {
	resp, err := invokeState(ctx, s, "DeleteState", 0, func(ctx context.Context, run *pb.RunContext, o ...grpc.CallOption) (*pb.DeleteStateResponse, error) {
		return s.client.DeleteState(ctx, &pb.DeleteStateRequest{Key: key, ExpectedVersion: expected, Run: run}, o...)
	})
	if err != nil {
		return false, err
	}
	return resp.GetDeleted(), nil
}

// Increment adds 1 to the integer counter under key (an absent key counts as 0) and returns
// the new value. A value that is not a JSON integer is a *ConflictError with
// ReasonNotAnInteger.
func (s *State) Increment(ctx context.Context, key string) (int64, error) {
	c, err := s.IncrementWith(ctx, key, IncrementOptions{})
	return c.Value, err
}

// IncrementBy adds by (negative to subtract) to the counter under key and returns the new
// value.
func (s *State) IncrementBy(ctx context.Context, key string, by int64) (int64, error) {
	c, err := s.IncrementWith(ctx, key, IncrementOptions{By: &by})
	return c.Value, err
}

// IncrementWith is Increment with options (an amount, a TTL for a created key), returning the
// counter's value, version and expiry.
func (s *State) IncrementWith(ctx context.Context, key string, opts IncrementOptions) (Counter, error) {
	req := &pb.IncrementStateRequest{Key: key, By: opts.By}
	if opts.TTL != 0 {
		req.Ttl = durationpb.New(opts.TTL)
	}
	resp, err := invokeState(ctx, s, "IncrementState", 0, func(ctx context.Context, run *pb.RunContext, o ...grpc.CallOption) (*pb.IncrementStateResponse, error) {
		req.Run = run
		return s.client.IncrementState(ctx, req, o...)
	})
	if err != nil {
		return Counter{}, err
	}
	return Counter{Value: resp.GetValue(), Version: resp.GetVersion(), ExpiresAt: optTime(resp.GetExpiresAt(), resp.GetExpiresAt() != nil)}, nil
}

// List returns one page of live keys starting with prefix, in ascending byte order. opts may
// be nil.
func (s *State) List(ctx context.Context, prefix string, opts *ListKeysOptions) (*KeyPage, error) {
	req := &pb.ListStateKeysRequest{Prefix: prefix}
	if opts != nil {
		req.PageSize, req.PageToken = opts.PageSize, opts.PageToken
	}
	resp, err := invokeState(ctx, s, "ListStateKeys", 0, func(ctx context.Context, run *pb.RunContext, o ...grpc.CallOption) (*pb.ListStateKeysResponse, error) {
		req.Run = run
		return s.client.ListStateKeys(ctx, req, o...)
	})
	if err != nil {
		return nil, err
	}
	page := &KeyPage{NextPageToken: resp.GetNextPageToken()}
	for _, k := range resp.GetKeys() {
		page.Keys = append(page.Keys, StateKey{
			Key: k.GetKey(), Version: k.GetVersion(), ValueSize: k.GetValueSize(),
			ExpiresAt: optTime(k.GetExpiresAt(), k.GetExpiresAt() != nil), UpdatedAt: k.GetUpdatedAt().AsTime(),
		})
	}
	return page, nil
}
