package stackshift

import (
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// RunStatus is a run's lifecycle state.
type RunStatus string

// The run statuses.
const (
	StatusQueued    RunStatus = "queued"
	StatusRunning   RunStatus = "running"
	StatusWaiting   RunStatus = "waiting"
	StatusCompleted RunStatus = "completed"
	StatusFailed    RunStatus = "failed"
	StatusCancelled RunStatus = "cancelled"
)

// Final reports whether the status changes only through RetryRun.
func (s RunStatus) Final() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

var statusFromPB = map[pb.RunStatus]RunStatus{
	pb.RunStatus_RUN_STATUS_QUEUED:    StatusQueued,
	pb.RunStatus_RUN_STATUS_RUNNING:   StatusRunning,
	pb.RunStatus_RUN_STATUS_WAITING:   StatusWaiting,
	pb.RunStatus_RUN_STATUS_COMPLETED: StatusCompleted,
	pb.RunStatus_RUN_STATUS_FAILED:    StatusFailed,
	pb.RunStatus_RUN_STATUS_CANCELLED: StatusCancelled,
}

func statusToPB(s RunStatus) (pb.RunStatus, error) {
	if s == "" {
		return pb.RunStatus_RUN_STATUS_UNSPECIFIED, nil
	}
	for k, v := range statusFromPB {
		if v == s {
			return k, nil
		}
	}
	return 0, invalidArgument("unknown run status %q", s)
}

// Failure is a structured error: why a step, an attempt or a run failed.
type Failure struct {
	Message      string
	Type         string
	NonRetryable bool
	// Details is optional JSON; nil when absent.
	Details    json.RawMessage
	StackTrace string
}

func failureFromPB(f *pb.Failure) *Failure {
	if f == nil {
		return nil
	}
	out := &Failure{Message: f.GetMessage(), Type: f.GetType(), NonRetryable: f.GetNonRetryable(), StackTrace: f.GetStackTrace()}
	if len(f.GetDetails()) > 0 {
		out.Details = json.RawMessage(f.GetDetails())
	}
	return out
}

func (f Failure) toPB() *pb.Failure {
	return &pb.Failure{Message: f.Message, Type: f.Type, NonRetryable: f.NonRetryable, Details: f.Details, StackTrace: f.StackTrace}
}

// AttemptInfo is one delivery of a run to a worker.
type AttemptInfo struct {
	Number    int32
	WorkerID  string
	StartedAt time.Time
	EndedAt   *time.Time
	Failure   *Failure
}

// StepInfo is a recorded step result.
type StepInfo struct {
	// ID is the step id with its occurrence suffix.
	ID string
	// Kind is what recorded it: a step, a sleep, an event wait or a state call.
	Kind        StepKind
	Attempt     int32
	StartedAt   *time.Time
	CompletedAt *time.Time
	OutputSize  int64
	// Output is the step's output as JSON; nil for a failed step.
	Output  json.RawMessage
	Failure *Failure
}

// RetryPolicy controls how failed attempts are retried; zero fields take the server defaults
// (5 attempts, 1 s, x2, 5 min).
type RetryPolicy struct {
	MaxAttempts        int32
	InitialInterval    time.Duration
	BackoffCoefficient float64
	MaximumInterval    time.Duration
}

func (p *RetryPolicy) toPB() *pb.RetryPolicy {
	out := &pb.RetryPolicy{MaxAttempts: p.MaxAttempts, BackoffCoefficient: p.BackoffCoefficient}
	if p.InitialInterval != 0 {
		out.InitialInterval = durationpb.New(p.InitialInterval)
	}
	if p.MaximumInterval != 0 {
		out.MaximumInterval = durationpb.New(p.MaximumInterval)
	}
	return out
}

func retryPolicyFromPB(p *pb.RetryPolicy) *RetryPolicy {
	if p == nil {
		return nil
	}
	return &RetryPolicy{MaxAttempts: p.GetMaxAttempts(), InitialInterval: p.GetInitialInterval().AsDuration(), BackoffCoefficient: p.GetBackoffCoefficient(), MaximumInterval: p.GetMaximumInterval().AsDuration()}
}

// Run is one execution of a job with a payload. JSON values are raw; decode them with
// encoding/json (or DecodeResult).
type Run struct {
	ID             string
	Job            string
	Queue          string
	Status         RunStatus
	Payload        json.RawMessage
	Result         json.RawMessage // set when completed
	Failure        *Failure
	Attempt        int32
	MaxAttempts    int32
	IdempotencyKey string
	LeaseTimeout   time.Duration
	CreatedAt      time.Time
	UpdatedAt      time.Time
	FinishedAt     *time.Time
	NextAttemptAt  *time.Time
	Priority       int32
	ConcurrencyKey string
	// ParentRunID is the run that started this one as a child run (Step.Invoke and
	// friends); empty for a run started by a client, a schedule or a trigger.
	ParentRunID string
	// ParentStepID is the parent's step id that started this child run; empty otherwise.
	ParentStepID string
	Attempts     []AttemptInfo // filled by GetRun / WaitForRun
	Steps        []StepInfo    // filled by GetRun / WaitForRun
	// Wait is what a waiting run is suspended on (filled by GetRun / WaitForRun).
	Wait *RunWait
	// Timeline is everything that happened to the run, oldest first (GetRun / WaitForRun).
	Timeline []TimelineEntry
	// Logs are the lines the handler logged through JobContext.Log, oldest first (GetRun /
	// WaitForRun; capped per run, see LogEntry.Truncated).
	Logs []LogEntry
}

// DecodeResult unmarshals the run's result into v.
func (r *Run) DecodeResult(v any) error {
	if r.Result == nil {
		return fmt.Errorf("run %s has no result (status %s)", r.ID, r.Status)
	}
	return json.Unmarshal(r.Result, v)
}

// Step returns the recorded step with this id (suffix included), or nil.
func (r *Run) Step(id string) *StepInfo {
	for i := range r.Steps {
		if r.Steps[i].ID == id {
			return &r.Steps[i]
		}
	}
	return nil
}

func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	return json.RawMessage(b)
}

func optTime(ts interface{ AsTime() time.Time }, present bool) *time.Time {
	if !present {
		return nil
	}
	t := ts.AsTime()
	return &t
}

func runFromPB(r *pb.Run) (*Run, error) {
	if r == nil {
		return nil, &Error{Code: 13, Message: "unexpected response from server: no run"}
	}
	status, ok := statusFromPB[r.GetStatus()]
	if !ok {
		return nil, &Error{Code: 13, Message: fmt.Sprintf("unexpected run status %v from the server", r.GetStatus())}
	}
	run := &Run{
		ID: r.GetId(), Job: r.GetJob(), Queue: r.GetQueue(), Status: status,
		Payload: rawJSON(r.GetPayload()), Failure: failureFromPB(r.GetFailure()),
		Attempt: r.GetAttempt(), MaxAttempts: r.GetMaxAttempts(), IdempotencyKey: r.GetIdempotencyKey(),
		LeaseTimeout: r.GetLeaseTimeout().AsDuration(), Priority: r.GetPriority(), ConcurrencyKey: r.GetConcurrencyKey(),
		ParentRunID: r.GetParentRunId(), ParentStepID: r.GetParentStepId(),
		CreatedAt: r.GetCreatedAt().AsTime(), UpdatedAt: r.GetUpdatedAt().AsTime(),
		FinishedAt:    optTime(r.GetFinishedAt(), r.GetFinishedAt() != nil),
		NextAttemptAt: optTime(r.GetNextAttemptAt(), r.GetNextAttemptAt() != nil),
	}
	if status == StatusCompleted {
		run.Result = rawJSON(r.GetResult())
	}
	for _, a := range r.GetAttempts() {
		run.Attempts = append(run.Attempts, AttemptInfo{
			Number: a.GetNumber(), WorkerID: a.GetWorkerId(), StartedAt: a.GetStartedAt().AsTime(),
			EndedAt: optTime(a.GetEndedAt(), a.GetEndedAt() != nil), Failure: failureFromPB(a.GetFailure()),
		})
	}
	for _, s := range r.GetSteps() {
		info := StepInfo{
			ID: s.GetId(), Kind: stepKindFromPB(s.GetKind()), Attempt: s.GetAttempt(), OutputSize: s.GetOutputSize(),
			StartedAt:   optTime(s.GetStartedAt(), s.GetStartedAt() != nil),
			CompletedAt: optTime(s.GetCompletedAt(), s.GetCompletedAt() != nil),
			Failure:     failureFromPB(s.GetFailure()),
		}
		if info.Failure == nil {
			info.Output = rawJSON(s.GetOutput())
		}
		run.Steps = append(run.Steps, info)
	}
	run.Wait = runWaitFromPB(r.GetWait())
	run.Timeline = timelineFromPB(r.GetTimeline())
	run.Logs = logsFromPB(r.GetLogs())
	return run, nil
}
