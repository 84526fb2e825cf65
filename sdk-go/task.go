package stackshift

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// defaultLeaseTimeout is assumed when a task names no lease timeout.
const defaultLeaseTimeout = 30 * time.Second

// registeredJob is a job registered on a worker.
type registeredJob struct {
	handler      HandlerFunc
	leaseTimeout time.Duration
	triggers     []JobTrigger
}

// taskEnv is what the worker shares with every task it executes.
type taskEnv struct {
	client  pb.WorkerServiceClient
	state   pb.StateServiceClient
	jobs    map[string]registeredJob
	abandon <-chan struct{} // closed when the shutdown grace period is over
	log     *slog.Logger
}

type handlerResult struct {
	value any
	err   error
}

// execute runs one task to its end: lease, heartbeats, handler, outcome. It returns when the
// handler finished or the attempt was interrupted (an interrupted handler that ignores its
// context keeps running in its goroutine, but nothing it does is recorded any more).
func execute(env *taskEnv, task *pb.Task) {
	log := env.log.With("run_id", task.GetRunId(), "job", task.GetJob(), "attempt", task.GetAttempt())
	timeout := task.GetLeaseTimeout().AsDuration()
	if timeout <= 0 && task.GetLeaseDeadline() != nil {
		timeout = time.Until(task.GetLeaseDeadline().AsTime())
	}
	if timeout <= 0 {
		timeout = defaultLeaseTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := newLease(task.GetRunId(), task.GetLeaseToken(), timeout, cancel, log)

	job, ok := env.jobs[task.GetJob()]
	if !ok {
		failRun(env, l, Failure{Message: "this worker has no handler for job " + task.GetJob()})
		return
	}
	logger := newLogger(env.client, l, log)
	jc := &JobContext{
		Payload: rawJSON(task.GetPayload()),
		Step:    &Step{client: env.client, lease: l, journal: journalOf(task), occurrences: newOccurrences(), logs: logger.sink},
		State:   &State{client: env.state, run: &runBinding{lease: l}},
		Log:     logger,
		RunID:   task.GetRunId(), Attempt: task.GetAttempt(), MaxAttempts: task.GetMaxAttempts(),
		Job: task.GetJob(), Queue: task.GetQueue(),
	}
	stopHeartbeat := make(chan struct{})
	go heartbeatLoop(env, l, stopHeartbeat)
	defer close(stopHeartbeat)

	results := make(chan handlerResult, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				results <- handlerResult{err: &panicError{value: p}}
			}
		}()
		v, err := job.handler(ctx, jc)
		results <- handlerResult{value: v, err: err}
	}()

	var res handlerResult
	select {
	case res = <-results:
	case <-l.done:
		logStopped(log, l)
		return
	case <-env.abandon:
		l.interrupt("the worker shut down before the handler finished; the run is redelivered when its lease expires")
		log.Warn("handler abandoned at shutdown")
		return
	}
	// Lines still buffered go out before the outcome (a no-op once the lease is gone).
	if !l.isInterrupted() {
		logger.sink.flush()
	}
	switch {
	case l.isInterrupted() || IsInterrupted(res.err):
		logStopped(log, l)
	case res.err != nil:
		f := failureFromError(res.err)
		var pe *panicError
		if errors.As(res.err, &pe) {
			f.Type = "panic"
		}
		log.Info("handler failed", "error", f.Message, "non_retryable", f.NonRetryable)
		failRun(env, l, f)
	default:
		body, err := marshalJSON(res.value, "the run's result")
		if err != nil {
			failRun(env, l, Failure{Message: err.Error(), Type: "ResultRejected", NonRetryable: true})
			return
		}
		completeRun(env, l, body)
	}
}

// logStopped logs why an attempt ended without reporting: suspended (not a failure: the
// server holds the wait and delivers the run again) or interrupted.
func logStopped(log *slog.Logger, l *lease) {
	if l.isSuspended() {
		log.Debug("run suspended; slot freed", "reason", l.err())
		return
	}
	log.Info("attempt interrupted; not reporting", "reason", l.err())
}

type panicError struct{ value any }

func (p *panicError) Error() string { return fmt.Sprintf("handler panicked: %v", p.value) }

// journalOf returns the journal's step and wait entries by id. State calls are replayed by the
// server (it answers a journaled call id with the recorded result), so they are skipped.
func journalOf(task *pb.Task) map[string]recorded {
	journal := map[string]recorded{}
	for _, e := range task.GetJournal() {
		switch e.GetKind() {
		case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_STEP:
			if f := e.GetFailure(); f != nil {
				journal[e.GetId()] = recorded{kind: e.GetKind(), failure: failureFromPB(f)}
			} else {
				journal[e.GetId()] = recorded{kind: e.GetKind(), output: e.GetOutput()}
			}
		case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_SLEEP, pb.JournalEntryKind_JOURNAL_ENTRY_KIND_EVENT,
			pb.JournalEntryKind_JOURNAL_ENTRY_KIND_CHILD, pb.JournalEntryKind_JOURNAL_ENTRY_KIND_ANY,
			pb.JournalEntryKind_JOURNAL_ENTRY_KIND_ALL:
			journal[e.GetId()] = recorded{kind: e.GetKind(), output: e.GetOutput()}
		default:
			continue // state calls, and kinds of later protocol versions
		}
	}
	return journal
}

// heartbeatLoop extends the lease every third of its timeout until stop is closed; it
// interrupts the attempt when the run was cancelled or the lease is lost.
func heartbeatLoop(env *taskEnv, l *lease, stop <-chan struct{}) {
	interval := max(l.timeout/3, 100*time.Millisecond)
	next := interval
	for {
		select {
		case <-stop:
			return
		case <-l.done:
			return
		case <-time.After(next):
		}
		sent := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), max(interval, time.Second))
		resp, err := env.client.Heartbeat(ctx, &pb.HeartbeatRequest{RunId: l.runID, LeaseToken: l.token})
		cancel()
		if err == nil {
			l.extended(sent)
			next = interval
			if resp.GetCancelRequested() {
				l.interrupt("the run was cancelled")
				return
			}
			continue
		}
		s, _ := status.FromError(err)
		if leaseLost(s.Code()) {
			l.interrupt(lostReason(s))
			return
		}
		if !time.Now().Before(l.currentDeadline()) {
			l.interrupt("the lease expired: no heartbeat reached the server in time (" + s.Message() + ")")
			return
		}
		env.log.Warn("heartbeat failed; retrying", "run_id", l.runID, "code", CodeName(s.Code()))
		next = max(interval/2, 100*time.Millisecond)
	}
}

func completeRun(env *taskEnv, l *lease, result []byte) {
	_, werr := write(l, "CompleteRun", func(ctx context.Context) (*pb.CompleteRunResponse, error) {
		return env.client.CompleteRun(ctx, &pb.CompleteRunRequest{RunId: l.runID, LeaseToken: l.token, Result: result})
	})
	if werr == nil {
		l.log.Info("run completed")
		return
	}
	if werr.kind == writeRejected && (werr.status.Code == codes.InvalidArgument || werr.status.Code == codes.ResourceExhausted) {
		// The result itself is unacceptable (e.g. over the size limit): retrying would produce
		// it again, so fail the run instead of leaving it to time out.
		failRun(env, l, Failure{Message: "the run's result could not be recorded: " + werr.status.Message, Type: "ResultRejected", NonRetryable: true})
		return
	}
	logWriteError(l, "CompleteRun", werr)
}

func failRun(env *taskEnv, l *lease, f Failure) {
	_, werr := write(l, "FailRun", func(ctx context.Context) (*pb.FailRunResponse, error) {
		return env.client.FailRun(ctx, &pb.FailRunRequest{RunId: l.runID, LeaseToken: l.token, Failure: f.toPB()})
	})
	if werr == nil {
		l.log.Info("attempt failure recorded")
		return
	}
	logWriteError(l, "FailRun", werr)
}

func logWriteError(l *lease, rpc string, werr *writeError) {
	switch werr.kind {
	case writeInterrupted:
		l.log.Info("outcome not recorded", "rpc", rpc, "reason", werr.interrupted)
	case writeGaveUp:
		l.log.Warn("server unreachable until the lease expired; the run will be redelivered", "rpc", rpc)
	default:
		l.log.Error("server rejected the outcome", "rpc", rpc, "error", werr.status)
	}
}
