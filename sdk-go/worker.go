package stackshift

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// Worker defaults.
const (
	DefaultConcurrency   = 10
	DefaultShutdownGrace = 30 * time.Second
	DefaultPollWait      = 30 * time.Second
	maxTasksPerPoll      = 100
	pollSlack            = 10 * time.Second
	abandonWait          = 2 * time.Second
)

// WorkerOptions configures a Worker. Zero fields take the defaults.
type WorkerOptions struct {
	// Queues to take tasks from (default ["default"]).
	Queues []string
	// Concurrency is the number of handlers that may run at once (default 10).
	Concurrency int
	// WorkerID is recorded on attempts (default <hostname>-<pid>-<random>).
	WorkerID string
	// ShutdownGrace is how long in-flight handlers may run after shutdown begins (default 30 s).
	ShutdownGrace time.Duration
	// PollWait is how long one poll waits on the server (default 30 s, 1 s to 60 s).
	PollWait time.Duration
	// Logger receives the worker's logs (default slog.Default()).
	Logger *slog.Logger
}

// JobOptions are per-job settings.
type JobOptions struct {
	// LeaseTimeout for runs that set none at start (default 30 s).
	LeaseTimeout time.Duration
	// Triggers are event triggers the worker creates for this job when it starts, before it
	// polls (an idempotent create; see JobTrigger). Publishing a matching event then starts a
	// run of this job whose payload is the event (JobContext.TriggeredEvent). A declaration
	// the server refuses (e.g. the same event, key and job exists with other options) makes
	// Start and Run fail with a *TriggerDeclarationError. Removing a declaration does not
	// delete its trigger: use Client.Triggers().Delete.
	Triggers []JobTrigger
}

// Worker long-polls the server for tasks of its registered jobs on its queues, never holding
// more tasks than it has concurrency slots, runs each handler (replaying recorded steps),
// heartbeats every third of the lease, and reports outcomes. Register jobs with Job, then Run
// (blocks until its context is cancelled, then shuts down gracefully) or Start + Shutdown.
type Worker struct {
	client *Client
	opts   WorkerOptions
	log    *slog.Logger

	mu      sync.Mutex
	jobs    map[string]registeredJob
	order   []string
	started bool
	stop    chan struct{}
	stopped chan struct{}
	abandon chan struct{}
	slots   chan struct{}
	running atomic.Int32
}

// NewWorker creates a worker that talks to the server through c.
func (c *Client) NewWorker(opts WorkerOptions) *Worker {
	if len(opts.Queues) == 0 {
		opts.Queues = []string{"default"}
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.WorkerID == "" {
		opts.WorkerID = defaultWorkerID()
	}
	if opts.ShutdownGrace == 0 {
		opts.ShutdownGrace = DefaultShutdownGrace
	}
	if opts.PollWait == 0 {
		opts.PollWait = DefaultPollWait
	}
	opts.PollWait = min(max(opts.PollWait, time.Second), 60*time.Second)
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Worker{client: c, opts: opts, log: log.With("worker_id", opts.WorkerID), jobs: map[string]registeredJob{},
		stop: make(chan struct{}), stopped: make(chan struct{}), abandon: make(chan struct{}), slots: make(chan struct{}, opts.Concurrency)}
}

// ID is the id this worker reports.
func (w *Worker) ID() string { return w.opts.WorkerID }

// Job registers handler for the job name (before Start). Registering a name twice keeps the
// last handler.
func (w *Worker) Job(name string, handler HandlerFunc, opts ...JobOptions) *Worker {
	w.mu.Lock()
	defer w.mu.Unlock()
	job := registeredJob{handler: handler}
	if len(opts) > 0 {
		job.leaseTimeout = opts[0].LeaseTimeout
		job.triggers = append([]JobTrigger(nil), opts[0].Triggers...)
	}
	if _, ok := w.jobs[name]; !ok {
		w.order = append(w.order, name)
	}
	w.jobs[name] = job
	return w
}

// Start creates the event triggers declared on the registered jobs (JobOptions.Triggers),
// then begins polling in the background. A refused declaration returns a
// *TriggerDeclarationError and the worker does not start (Start may be called again).
// Calling it again once started is a no-op.
func (w *Worker) Start() error { return w.StartContext(context.Background()) }

// StartContext is Start with a context for the trigger declarations' calls.
func (w *Worker) StartContext(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return nil
	}
	if err := w.declareTriggers(ctx); err != nil {
		return err
	}
	w.started = true
	jobs := make(map[string]registeredJob, len(w.jobs))
	specs := make([]*pb.JobSpec, 0, len(w.order))
	for _, name := range w.order {
		jobs[name] = w.jobs[name]
		spec := &pb.JobSpec{Name: name}
		if t := w.jobs[name].leaseTimeout; t > 0 {
			spec.LeaseTimeout = durationpb.New(t)
		}
		specs = append(specs, spec)
	}
	env := &taskEnv{client: w.client.worker, state: w.client.state, jobs: jobs, abandon: w.abandon, log: w.log}
	go w.pollLoop(env, specs)
	return nil
}

// declareTriggers creates every trigger declared on a registered job (idempotent on the
// server), in registration order.
func (w *Worker) declareTriggers(ctx context.Context) error {
	for _, name := range w.order {
		for _, t := range w.jobs[name].triggers {
			queue := t.Queue
			if queue == "" {
				queue = w.opts.Queues[0]
			}
			created, err := w.client.Triggers().Create(ctx, NewEventTrigger{
				Event: t.Event, CorrelationKey: t.CorrelationKey, Job: name, Queue: queue,
				RetryPolicy: t.RetryPolicy, LeaseTimeout: t.LeaseTimeout, Priority: t.Priority,
			})
			if err != nil {
				return &TriggerDeclarationError{Job: name, Event: t.Event, CorrelationKey: t.CorrelationKey, Err: err}
			}
			w.log.Info("event trigger declared", "job", name, "event", t.Event, "trigger_id", created.Trigger.ID, "created", created.Created)
		}
	}
	return nil
}

// Shutdown stops polling, lets in-flight handlers finish within the grace period, abandons the
// rest (redelivered when their leases expire), and returns once the worker stopped or ctx ends.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	started := w.started
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-w.stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run starts the worker and blocks until ctx is cancelled, then shuts down gracefully. It
// returns at once with Start's error when the worker cannot start.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.StartContext(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return w.Shutdown(context.Background())
}

// ActiveTasks is the number of tasks currently executing (a suspended run holds none).
func (w *Worker) ActiveTasks() int { return int(w.running.Load()) }

func (w *Worker) pollLoop(env *taskEnv, specs []*pb.JobSpec) {
	defer close(w.stopped)
	if len(specs) == 0 {
		w.log.Error("worker has no jobs registered; it will not poll")
		<-w.stop
		return
	}
	w.log.Info("worker started", "queues", w.opts.Queues, "jobs", len(specs), "concurrency", w.opts.Concurrency)
	pollCtx, cancelPoll := context.WithCancel(context.Background())
	defer cancelPoll()
	go func() {
		<-w.stop
		cancelPoll()
	}()
	var b backoff
	for {
		// Take one slot (waiting if all are busy), then every other free slot.
		select {
		case <-w.stop:
			w.drain()
			return
		case w.slots <- struct{}{}:
		}
		taken := 1
		for taken < maxTasksPerPoll {
			select {
			case w.slots <- struct{}{}:
				taken++
				continue
			default:
			}
			break
		}
		started := time.Now()
		ctx, cancel := context.WithTimeout(pollCtx, w.opts.PollWait+pollSlack)
		resp, err := w.client.worker.PollTask(ctx, &pb.PollTaskRequest{
			WorkerId: w.opts.WorkerID, Queues: w.opts.Queues, Jobs: specs, MaxTasks: int32(taken), Wait: durationpb.New(w.opts.PollWait),
		})
		cancel()
		var delay time.Duration
		if err == nil {
			b.reset()
			tasks := resp.GetTasks()
			if len(tasks) > taken {
				w.log.Error("server sent more tasks than asked for; dropping the extra ones", "asked", taken, "got", len(tasks))
				tasks = tasks[:taken]
			}
			for _, task := range tasks {
				w.running.Add(1)
				go func(task *pb.Task) {
					defer func() { <-w.slots }()
					defer w.running.Add(-1)
					execute(env, task)
				}(task)
			}
			for range taken - len(tasks) {
				<-w.slots
			}
			if len(tasks) == 0 && time.Since(started) < w.opts.PollWait/2 {
				delay = 50*time.Millisecond + time.Duration(rand.Int64N(int64(100*time.Millisecond)))
			}
		} else {
			for range taken {
				<-w.slots
			}
			if pollCtx.Err() != nil {
				continue // shutting down
			}
			delay = b.next()
			s, _ := status.FromError(err)
			if s.Code() == codes.Unauthenticated || s.Code() == codes.PermissionDenied {
				w.log.Error("server refused the worker's credentials; check STACKSHIFT_API_KEY", "error", s.Message(), "retry_in", delay)
			} else {
				w.log.Warn("poll failed; retrying", "code", CodeName(s.Code()), "error", s.Message(), "retry_in", delay)
			}
		}
		if delay > 0 {
			select {
			case <-w.stop:
			case <-time.After(delay):
			}
		}
	}
}

// drain waits up to the grace period for in-flight tasks, then abandons the rest.
func (w *Worker) drain() {
	waitIdle := func(d time.Duration) bool {
		deadline := time.Now().Add(d)
		for len(w.slots) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		return len(w.slots) == 0
	}
	if n := len(w.slots); n > 0 {
		w.log.Info("worker stopping; waiting for running handlers", "in_flight", n, "grace", w.opts.ShutdownGrace)
	}
	if !waitIdle(w.opts.ShutdownGrace) {
		w.log.Warn("shutdown grace period over; abandoning running handlers", "abandoned", len(w.slots))
		close(w.abandon)
		waitIdle(abandonWait)
	}
	w.log.Info("worker stopped")
}

func defaultWorkerID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return -1
	}, host)
	if len(host) > 100 {
		host = host[:100]
	}
	if host == "" {
		host = "worker"
	}
	var b [3]byte
	_, _ = crand.Read(b[:])
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}
