package stackshift

import "time"

// Limits of a step's in-place retry policy (StepOptions), identical in every StackShift SDK.
const (
	// MaxStepRetries is the largest StepOptions.Retries.
	MaxStepRetries = 100
	// DefaultStepRetryDelay is the delay before the first retry when RetryDelay is zero.
	DefaultStepRetryDelay = 200 * time.Millisecond
	// MaxStepRetryDelay caps the delay between two tries.
	MaxStepRetryDelay = 5 * time.Second
)

// StepOptions is a step's in-place retry policy (Step.RunWithOptions, RunStepWithOptions).
//
// A retryable error from the step body runs it again within the same attempt, up to Retries
// more times, after RetryDelay doubled for each try and capped at 5 s. Heartbeats go on during
// the wait; cancellation or a lost lease ends it at once with an *InterruptedError. Each failed
// try logs a warn line "step ID failed (try K of N): MESSAGE; retrying in Dms" through the run
// logger. NonRetryable errors are not retried, and once the last try fails the error is handled
// exactly as by Run. A bad value fails the step with a NonRetryable error.
type StepOptions struct {
	// Retries is the number of extra tries, 0 to 100 (default 0: no in-place retry).
	Retries int
	// RetryDelay is the wait before the first retry; zero means 200 ms. Not negative.
	RetryDelay time.Duration
}

// validate returns the retries and the base delay, or a NonRetryable error.
func (o StepOptions) validate() (int, time.Duration, error) {
	if o.Retries < 0 || o.Retries > MaxStepRetries {
		return 0, 0, NonRetryablef("step retries must be between 0 and %d, got %d", MaxStepRetries, o.Retries)
	}
	if o.RetryDelay < 0 {
		return 0, 0, NonRetryablef("step retry delay must not be negative, got %s", o.RetryDelay)
	}
	delay := o.RetryDelay
	if delay == 0 {
		delay = DefaultStepRetryDelay
	}
	return o.Retries, delay, nil
}

// stepRetryDelay is the wait after failed try k (from 1): base * 2^(k-1), capped at 5 s.
func stepRetryDelay(base time.Duration, k int) time.Duration {
	shift := k - 1
	if shift > 30 {
		shift = 30
	}
	d := base * time.Duration(int64(1)<<shift)
	if d > MaxStepRetryDelay || d < 0 {
		return MaxStepRetryDelay
	}
	return d
}
