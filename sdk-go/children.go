package stackshift

// Child runs on Step: Invoke starts one child run and waits for its result, InvokeAll starts
// many (a fan-out) and waits until all of them are final, InvokeChild is Invoke with the
// child's options. Each sends one SuspendRun with a child wait: the server starts the
// children in the same transaction as the suspension (once per run and step id, so a replay
// never starts a second set), and the parent holds no worker slot while it waits. When the
// last child reaches a final status the server journals every child's outcome into the parent
// and queues it again; the replay returns the journaled outcomes at the same call. See
// docs/children.md.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// MaxChildRuns is the largest number of children one InvokeAll may start.
const MaxChildRuns = 1000

// ChildRun is one child run to start with Step.InvokeAll or Step.InvokeChild. Zero fields
// take the defaults of Client.Start, except the queue: a child runs on its parent's queue
// unless Queue is set.
type ChildRun struct {
	// Job is the child's job name (required).
	Job string
	// Payload is any JSON-serializable value (or json.RawMessage); nil is null.
	Payload any
	// Queue runs the child on this queue instead of the parent's.
	Queue string
	// RetryPolicy overrides the child's retry policy (unset fields: the queue's defaults).
	RetryPolicy *RetryPolicy
	// LeaseTimeout is the lease of the child's attempts (1 s to 1 h).
	LeaseTimeout time.Duration
	// Priority orders delivery within the queue, -1000 to 1000.
	Priority int32
	// ConcurrencyKey is what the queue's KeyConcurrencyLimit counts.
	ConcurrencyKey string
}

func (c ChildRun) toPB(i int) (*pb.ChildRunSpec, error) {
	body, err := marshalJSON(c.Payload, fmt.Sprintf("the payload of child %d (%s)", i, c.Job))
	if err != nil {
		return nil, NonRetryable(err)
	}
	spec := &pb.ChildRunSpec{Job: c.Job, Payload: body, Queue: c.Queue, Priority: c.Priority, ConcurrencyKey: c.ConcurrencyKey}
	if c.RetryPolicy != nil {
		spec.RetryPolicy = c.RetryPolicy.toPB()
	}
	if c.LeaseTimeout != 0 {
		spec.LeaseTimeout = durationpb.New(c.LeaseTimeout)
	}
	return spec, nil
}

// ChildOutcome is the recorded outcome of one child run.
type ChildOutcome struct {
	// RunID is the child's run id.
	RunID string
	// Job is the child's job.
	Job string
	// Status is StatusCompleted, StatusFailed or StatusCancelled.
	Status RunStatus
	// Result is the child's result as JSON when it completed; nil otherwise.
	Result json.RawMessage
	// Failure is the child's failure (or the cancellation reason) when it failed or was
	// cancelled; nil otherwise.
	Failure *Failure
}

// Err is nil for a completed child, else the *ChildFailedError describing the failure.
func (o *ChildOutcome) Err() error {
	if o.Status == StatusCompleted {
		return nil
	}
	f := Failure{}
	if o.Failure != nil {
		f = *o.Failure
	}
	return &ChildFailedError{RunID: o.RunID, Job: o.Job, Status: o.Status, Failure: f}
}

// Decode unmarshals the child's result into v, or returns a *ChildFailedError when the child
// failed or was cancelled.
func (o *ChildOutcome) Decode(v any) error {
	if err := o.Err(); err != nil {
		return err
	}
	if err := json.Unmarshal(rawJSON(o.Result), v); err != nil {
		return NonRetryablef("the result of child run %s (%s) does not decode: %v", o.RunID, o.Job, err)
	}
	return nil
}

// ChildFailedError is returned by Step.Invoke (and ChildOutcome.Decode / Err) instead of the
// child's result when the child failed or was cancelled. Test it with errors.As. Returned
// from the handler, it fails the parent without retries: the child's outcome is journaled,
// so a retry would see the same failure. To try again, invoke with a new id.
type ChildFailedError struct {
	// RunID is the child's run id.
	RunID string
	// Job is the child's job.
	Job string
	// Status is StatusFailed or StatusCancelled.
	Status RunStatus
	// Failure is the child's failure, or the cancellation reason.
	Failure Failure
}

// Error implements error: "child run ID (JOB) failed: MESSAGE" (or "was cancelled").
func (e *ChildFailedError) Error() string {
	how := "failed"
	if e.Status == StatusCancelled {
		how = "was cancelled"
	}
	return fmt.Sprintf("child run %s (%s) %s: %s", e.RunID, e.Job, how, e.Failure.Message)
}

// Invoke starts a child run of job with payload on the parent's queue and waits durably for
// its result (JSON). A failed or cancelled child returns a *ChildFailedError.
//
// The child is started once per run and id: a replay (after a worker crash, or when the
// parent is delivered again after the wait) finds the same child. While the child runs, the
// parent is waiting and holds no worker slot, so a worker with a single slot can run both.
// Ids follow the occurrence-suffix rules of Run and share its id space. When the run
// suspends, Invoke returns an *InterruptedError: return it from the handler. Cancelling the
// parent cancels the child.
func (s *Step) Invoke(ctx context.Context, id, job string, payload any) (Output, error) {
	outcome, err := s.InvokeChild(ctx, id, ChildRun{Job: job, Payload: payload})
	if err != nil {
		return nil, err
	}
	if err := outcome.Err(); err != nil {
		return nil, err
	}
	return Output(rawJSON(outcome.Result)), nil
}

// Invoke is the typed form of Step.Invoke: the child's result decoded as a T.
//
//	url, err := stackshift.Invoke[string](ctx, jc.Step, "thumbnail", "resize-image", img)
func Invoke[T any](ctx context.Context, step *Step, id, job string, payload any) (T, error) {
	var v T
	outcome, err := step.InvokeChild(ctx, id, ChildRun{Job: job, Payload: payload})
	if err != nil {
		return v, err
	}
	err = outcome.Decode(&v)
	return v, err
}

// InvokeChild is Invoke with the child's options (ChildRun), answering its raw outcome: a
// failed child is an outcome here, not an error.
func (s *Step) InvokeChild(ctx context.Context, id string, child ChildRun) (*ChildOutcome, error) {
	all, err := s.InvokeAll(ctx, id, []ChildRun{child})
	if err != nil {
		return nil, err
	}
	if len(all) != 1 {
		return nil, NonRetryablef("the recorded child wait %s has %d children, not 1", id, len(all))
	}
	return &all[0], nil
}

// InvokeAll is a fan-out: it starts every child (1 to 1,000) and waits durably until all of
// them are final. It returns their outcomes in the order given; a failed or cancelled child
// is an outcome (check ChildOutcome.Status, or Decode / Err), not an error.
//
//	children := make([]stackshift.ChildRun, 50)
//	for i := range children {
//		children[i] = stackshift.ChildRun{Job: "process-chunk", Payload: map[string]int{"chunk": i}}
//	}
//	outcomes, err := jc.Step.InvokeAll(ctx, "process-chunks", children)
func (s *Step) InvokeAll(ctx context.Context, id string, children []ChildRun) ([]ChildOutcome, error) {
	if len(children) == 0 {
		return nil, NonRetryablef("step.InvokeAll(%q) needs at least one child run", id)
	}
	if len(children) > MaxChildRuns {
		return nil, NonRetryablef("step.InvokeAll(%q): at most %d child runs, got %d", id, MaxChildRuns, len(children))
	}
	specs := make([]*pb.ChildRunSpec, 0, len(children))
	for i, c := range children {
		spec, err := c.toPB(i)
		if err != nil {
			return nil, err
		}
		specs = append(specs, spec)
	}
	wait := &pb.SuspendRunRequest_Child{Child: &pb.ChildWait{Children: specs}}
	out, err := s.suspend(id, pb.JournalEntryKind_JOURNAL_ENTRY_KIND_CHILD, wait, "waiting for child runs")
	if err != nil {
		return nil, err
	}
	outcomes, err := outcomesFromJournal(out)
	if err != nil {
		return nil, NonRetryablef("the recorded result of child wait %s: %v", id, err)
	}
	return outcomes, nil
}

// outcomesFromJournal decodes a CHILD journal output:
// {"children":[{"runId","job","status","result"?,"failure"?:{"message","errorType","nonRetryable"}}]}.
func outcomesFromJournal(out []byte) ([]ChildOutcome, error) {
	var rec struct {
		Children []struct {
			RunID   string          `json:"runId"`
			Job     string          `json:"job"`
			Status  string          `json:"status"`
			Result  json.RawMessage `json:"result"`
			Failure *struct {
				Message      string `json:"message"`
				ErrorType    string `json:"errorType"`
				NonRetryable bool   `json:"nonRetryable"`
			} `json:"failure"`
		} `json:"children"`
	}
	if err := json.Unmarshal(out, &rec); err != nil {
		return nil, err
	}
	outcomes := make([]ChildOutcome, 0, len(rec.Children))
	for _, c := range rec.Children {
		o := ChildOutcome{RunID: c.RunID, Job: c.Job}
		switch c.Status {
		case "completed":
			o.Status = StatusCompleted
			o.Result = rawJSON(c.Result)
		case "failed":
			o.Status = StatusFailed
		case "cancelled":
			o.Status = StatusCancelled
		default:
			return nil, fmt.Errorf("unknown child status %q", c.Status)
		}
		if c.Failure != nil {
			o.Failure = &Failure{Message: c.Failure.Message, Type: c.Failure.ErrorType, NonRetryable: c.Failure.NonRetryable}
		}
		outcomes = append(outcomes, o)
	}
	return outcomes, nil
}
