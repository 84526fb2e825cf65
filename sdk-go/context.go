package stackshift

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// JobContext is what a handler receives besides its context.Context.
type JobContext struct {
	// Payload is the run's payload as JSON; decode it with Decode.
	Payload json.RawMessage
	// Step runs memoized steps, durable sleeps and event waits.
	Step *Step
	// State is the state store, journaled in this run: each call is recorded like a step
	// (ids state:1, state:2, ... by call order), so a retried attempt gets the recorded
	// results back and an increment is applied once (see State).
	State *State
	// Log is the run's logger: lines are tied to the run, this attempt and the executing
	// step, and shown in the run's detail (Run.Logs).
	Log *Logger
	// RunID is the run's id.
	RunID string
	// Attempt is this attempt's number, from 1.
	Attempt int32
	// MaxAttempts is the number of attempts allowed in total.
	MaxAttempts int32
	// Job is the job's name.
	Job string
	// Queue is the queue the run came from.
	Queue string
}

// Decode unmarshals the payload into v.
func (jc *JobContext) Decode(v any) error { return json.Unmarshal(jc.Payload, v) }

// IsLastAttempt reports whether a failure of this attempt will not be retried.
func (jc *JobContext) IsLastAttempt() bool { return jc.MaxAttempts > 0 && jc.Attempt >= jc.MaxAttempts }

// String never shows the payload.
func (jc *JobContext) String() string {
	return fmt.Sprintf("JobContext{run %s, job %s, attempt %d}", jc.RunID, jc.Job, jc.Attempt)
}

// HandlerFunc is a job handler. Its result (any JSON-serializable value) completes the run; an
// error fails the attempt. ctx is cancelled when the attempt is interrupted (the run was
// cancelled, the lease was lost, or the worker abandons its work at shutdown).
type HandlerFunc func(ctx context.Context, jc *JobContext) (any, error)

// occurrences assigns effective step ids: id, id#2, id#3, ... per execution, refusing an id
// already handed out in this execution (an explicit "a#2" followed by a second "a").
type occurrences struct {
	counts map[string]int
	used   map[string]bool
}

func newOccurrences() *occurrences {
	return &occurrences{counts: map[string]int{}, used: map[string]bool{}}
}

func (o *occurrences) next(id string) (string, error) {
	o.counts[id]++
	effective := id
	if n := o.counts[id]; n > 1 {
		effective = fmt.Sprintf("%s#%d", id, n)
	}
	if o.used[effective] {
		return "", NonRetryablef("step id %q is used twice in one execution (an explicit id collides with an occurrence suffix); rename the step", effective)
	}
	o.used[effective] = true
	return effective, nil
}

// recorded is a journaled outcome: output bytes or a terminal failure, of a step or (kind
// SLEEP or EVENT) of a wait that ended.
type recorded struct {
	kind    pb.JournalEntryKind
	output  []byte
	failure *Failure
}

// Step runs memoized steps for one attempt.
//
// Run(ctx, id, fn) first assigns the effective step id: the first use of id in this execution
// is id, the second id#2, the third id#3, and so on (identical in every StackShift SDK). Then:
//   - if the journal holds that id, the recorded output is returned (or the recorded terminal
//     failure as *StepFailedError) and fn is not called;
//   - otherwise fn runs. Its result is recorded on the server and returned, as JSON, only once
//     the server acknowledged it. A NonRetryable error from fn is recorded as the step's
//     terminal failure and returned; any other error is returned unrecorded: the attempt fails,
//     is retried, and the step runs again then.
//
// Once the run is cancelled or the lease is lost, Run returns an *InterruptedError without
// calling fn; return it from the handler.
type Step struct {
	mu          sync.Mutex
	client      pb.WorkerServiceClient
	lease       *lease
	journal     map[string]recorded
	occurrences *occurrences
	logs        *logSink
}

// Output is a step's JSON output.
type Output json.RawMessage

// Decode unmarshals the output into v.
func (o Output) Decode(v any) error { return json.Unmarshal(o, v) }

// Run runs fn as the step id, or returns its recorded outcome (see Step).
func (s *Step) Run(ctx context.Context, id string, fn func(ctx context.Context) (any, error)) (Output, error) {
	return s.RunWithOptions(ctx, id, StepOptions{}, fn)
}

// RunWithOptions is Run with a per-step retry policy (see StepOptions): a retryable error from
// fn runs it again in place, in the same attempt, up to opts.Retries more times.
//
//	out, err := jc.Step.RunWithOptions(ctx, "fetch-rate",
//		stackshift.StepOptions{Retries: 3, RetryDelay: 500 * time.Millisecond}, fetchRate)
func (s *Step) RunWithOptions(ctx context.Context, id string, opts StepOptions, fn func(ctx context.Context) (any, error)) (Output, error) {
	retries, base, err := opts.validate()
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, NonRetryablef("step id must not be empty")
	}
	if strings.HasPrefix(id, "state:") {
		return nil, NonRetryablef("step id %q is reserved: ids starting with state: name state calls", id)
	}
	s.mu.Lock()
	stepID, err := s.occurrences.next(id)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if rec, ok := s.journal[stepID]; ok {
		if rec.kind != pb.JournalEntryKind_JOURNAL_ENTRY_KIND_STEP {
			return nil, kindMismatch(stepID, rec.kind, pb.JournalEntryKind_JOURNAL_ENTRY_KIND_STEP)
		}
		if rec.failure != nil {
			return nil, &StepFailedError{StepID: stepID, Failure: *rec.failure}
		}
		return Output(rawJSON(rec.output)), nil
	}
	if s.lease.isInterrupted() {
		return nil, s.lease.err()
	}
	started := time.Now()
	value, fnErr := s.call(ctx, stepID, fn)
	for try := 1; fnErr != nil && try <= retries && !IsNonRetryable(fnErr) && !IsInterrupted(fnErr) && !s.lease.isInterrupted(); try++ {
		delay := stepRetryDelay(base, try)
		if s.logs != nil {
			prev := s.logs.setStep(stepID)
			(&Logger{sink: s.logs}).Warn(fmt.Sprintf("step %s failed (try %d of %d): %s; retrying in %dms",
				stepID, try, retries+1, fnErr.Error(), delay.Milliseconds()))
			s.logs.setStep(prev)
		}
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-s.lease.done:
			timer.Stop()
			return nil, s.lease.err()
		}
		if s.lease.isInterrupted() {
			return nil, s.lease.err()
		}
		value, fnErr = s.call(ctx, stepID, fn)
	}
	if fnErr != nil {
		if IsNonRetryable(fnErr) && !IsInterrupted(fnErr) {
			f := failureFromError(fnErr)
			f.NonRetryable = true
			if err := s.record(ctx, stepID, &pb.CompleteStepRequest_Failure{Failure: f.toPB()}, started); err != nil {
				return nil, err
			}
		}
		return nil, fnErr
	}
	out, err := marshalJSON(value, "the output of step "+stepID)
	if err != nil {
		return nil, NonRetryable(err)
	}
	if err := s.record(ctx, stepID, &pb.CompleteStepRequest_Output{Output: out}, started); err != nil {
		return nil, err
	}
	return Output(out), nil
}

// call runs a step body with the logger's current step set to stepID.
func (s *Step) call(ctx context.Context, stepID string, fn func(ctx context.Context) (any, error)) (any, error) {
	if s.logs != nil {
		prev := s.logs.setStep(stepID)
		defer s.logs.setStep(prev)
	}
	return fn(ctx)
}

// RunStep is the typed form of Step.Run: fn returns a T, and so does the replay.
func RunStep[T any](ctx context.Context, step *Step, id string, fn func(ctx context.Context) (T, error)) (T, error) {
	return RunStepWithOptions(ctx, step, id, StepOptions{}, fn)
}

// RunStepWithOptions is the typed form of Step.RunWithOptions.
func RunStepWithOptions[T any](ctx context.Context, step *Step, id string, opts StepOptions, fn func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	out, err := step.RunWithOptions(ctx, id, opts, func(ctx context.Context) (any, error) { return fn(ctx) })
	if err != nil {
		return zero, err
	}
	var v T
	if err := json.Unmarshal(out, &v); err != nil {
		return zero, NonRetryablef("the recorded output of step %s does not match the expected type: %v", id, err)
	}
	return v, nil
}

func (s *Step) record(ctx context.Context, stepID string, outcome any, started time.Time) error {
	l := s.lease
	req := &pb.CompleteStepRequest{RunId: l.runID, LeaseToken: l.token, StepId: stepID, StartedAt: timestamppb.New(started)}
	switch o := outcome.(type) {
	case *pb.CompleteStepRequest_Output:
		req.Outcome = o
	case *pb.CompleteStepRequest_Failure:
		req.Outcome = o
	}
	_, werr := write(l, "CompleteStep", func(cctx context.Context) (*pb.CompleteStepResponse, error) {
		return s.client.CompleteStep(cctx, req)
	})
	switch {
	case werr == nil:
		return nil
	case werr.kind == writeInterrupted:
		return werr.interrupted
	case werr.kind == writeGaveUp:
		l.interrupt("the server stayed unreachable until the lease expired (" + werr.status.Message + ")")
		return l.err()
	default:
		switch werr.status.Code {
		case codes.InvalidArgument, codes.ResourceExhausted, codes.OutOfRange:
			return NonRetryable(fmt.Errorf("could not record step %s: %w", stepID, werr.status))
		}
		return fmt.Errorf("could not record step %s: %w", stepID, werr.status)
	}
}

// MarshalJSON returns the output as is, so a step's output can be returned from a handler or
// nested in another value without being re-encoded.
func (o Output) MarshalJSON() ([]byte, error) {
	if len(o) == 0 {
		return []byte("null"), nil
	}
	return o, nil
}
