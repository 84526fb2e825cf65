package stackshift

// Locks: State.Lock and State.TryLock take a lock for a TTL and return a *Lock carrying the
// fencing token, which can Extend and Release it.
//
// A lock expires after its TTL unless extended, so work abandoned by a crashed owner can
// recover: keep TTLs short and extend while working. Every grant carries a fencing token
// larger than all earlier tokens of that lock (across expiry and server restarts): pass it to
// the systems the lock protects, so they can refuse writes from an owner whose lock expired.

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// LockOptions are the options of State.Lock and State.TryLock.
type LockOptions struct {
	// TTL is how long the lock is held unless extended or released (required; at most 24 h).
	TTL time.Duration
	// Wait is how long to wait for a held lock to become free (at most 60 s; 0 tries once).
	// The wait ends as soon as the lock is released or expires.
	Wait time.Duration
	// ReleaseWithRun releases the lock when the run completes, fails for good or is cancelled
	// (only inside a run). Nil = true inside a run (JobContext.State), false outside.
	ReleaseWithRun *bool
}

// Lock is a granted lock.
type Lock struct {
	state *State
	// Key is the lock's key.
	Key string
	// Token is the fencing token: strictly larger than every token given for this key before.
	Token int64
	// ExpiresAt is when the lock expires unless extended (updated by Extend).
	ExpiresAt time.Time
}

// LockAttempt is the answer of TryLock: Lock when granted, else when the holder's lock
// expires.
type LockAttempt struct {
	// Lock is nil when the lock is held by someone else.
	Lock *Lock
	// HolderExpiresAt is, when not granted, when the current holder's lock expires.
	HolderExpiresAt time.Time
}

// Lock takes the lock key, waiting up to opts.Wait for it to become free. It returns nil (and
// no error) when the lock is still held by someone else.
func (s *State) Lock(ctx context.Context, key string, opts LockOptions) (*Lock, error) {
	a, err := s.TryLock(ctx, key, opts)
	return a.Lock, err
}

// TryLock is Lock that also tells, when the lock is busy, when the holder's lock expires.
func (s *State) TryLock(ctx context.Context, key string, opts LockOptions) (LockAttempt, error) {
	if opts.TTL <= 0 {
		return LockAttempt{}, invalidArgument("a lock needs a TTL (LockOptions.TTL)")
	}
	release := s.Journaled()
	if opts.ReleaseWithRun != nil {
		release = *opts.ReleaseWithRun
	}
	req := &pb.AcquireLockRequest{Key: key, Ttl: durationpb.New(opts.TTL), ReleaseWithRun: release}
	if opts.Wait > 0 {
		req.Wait = durationpb.New(opts.Wait)
	}
	resp, err := invokeState(ctx, s, "AcquireLock", opts.Wait, func(ctx context.Context, run *pb.RunContext, o ...grpc.CallOption) (*pb.AcquireLockResponse, error) {
		req.Run = run
		return s.client.AcquireLock(ctx, req, o...)
	})
	if err != nil {
		return LockAttempt{}, err
	}
	if !resp.GetGranted() {
		return LockAttempt{HolderExpiresAt: resp.GetHolderExpiresAt().AsTime()}, nil
	}
	return LockAttempt{Lock: &Lock{state: s, Key: key, Token: resp.GetFencingToken(), ExpiresAt: resp.GetExpiresAt().AsTime()}}, nil
}

// Extend gives the lock a new TTL counted from now and returns the new expiry. A lock that is
// no longer held under this token is a *ConflictError with ReasonLockNotHeld.
func (l *Lock) Extend(ctx context.Context, ttl time.Duration) (time.Time, error) {
	resp, err := invokeState(ctx, l.state, "ExtendLock", 0, func(ctx context.Context, run *pb.RunContext, o ...grpc.CallOption) (*pb.ExtendLockResponse, error) {
		return l.state.client.ExtendLock(ctx, &pb.ExtendLockRequest{Key: l.Key, FencingToken: l.Token, Ttl: durationpb.New(ttl), Run: run}, o...)
	})
	if err != nil {
		return time.Time{}, err
	}
	l.ExpiresAt = resp.GetExpiresAt().AsTime()
	return l.ExpiresAt, nil
}

// Release frees the lock. A lock that is no longer held under this token is a *ConflictError
// with ReasonLockNotHeld.
func (l *Lock) Release(ctx context.Context) error {
	return l.state.ReleaseLock(ctx, l.Key, l.Token)
}

// ReleaseLock frees the lock key held under the fencing token (for a token kept elsewhere).
func (s *State) ReleaseLock(ctx context.Context, key string, token int64) error {
	_, err := invokeState(ctx, s, "ReleaseLock", 0, func(ctx context.Context, run *pb.RunContext, o ...grpc.CallOption) (*pb.ReleaseLockResponse, error) {
		return s.client.ReleaseLock(ctx, &pb.ReleaseLockRequest{Key: key, FencingToken: token, Run: run}, o...)
	})
	return err
}
