package stackshift_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stackshift/stackshift/sdk-go"
)

var (
	serverOnce     sync.Once
	serverEndpoint string
	serverErr      error
	serverCmd      *exec.Cmd
	serverDir      string
)

// TestMain stops the test server after the tests (it would otherwise outlive the test binary
// and hold its output pipes open).
func TestMain(m *testing.M) {
	code := m.Run()
	if serverCmd != nil && serverCmd.Process != nil {
		_ = serverCmd.Process.Kill()
		_ = serverCmd.Wait()
	}
	if serverDir != "" {
		_ = os.RemoveAll(serverDir)
	}
	os.Exit(code)
}

// endpoint starts the real stackshift-server binary once per test binary
// ($STACKSHIFT_SERVER_BIN, else ../target/debug/stackshift-server) on a fresh SQLite file.
func endpoint(t *testing.T) string {
	t.Helper()
	serverOnce.Do(func() {
		bin := os.Getenv("STACKSHIFT_SERVER_BIN")
		if bin == "" {
			bin, _ = filepath.Abs("../target/debug/stackshift-server")
		}
		if _, err := os.Stat(bin); err != nil {
			serverErr = fmt.Errorf("%s does not exist: run 'cargo build -p stackshift-server' or set STACKSHIFT_SERVER_BIN", bin)
			return
		}
		dir, err := os.MkdirTemp("", "stackshift-go-test-")
		if err != nil {
			serverErr = err
			return
		}
		serverDir = dir
		cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--database-url", "sqlite://"+filepath.Join(dir, "test.db"), "--max-payload-bytes", "65536")
		cmd.Env = append(os.Environ(), "RUST_LOG=warn")
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			serverErr = err
			return
		}
		if err := cmd.Start(); err != nil {
			serverErr = err
			return
		}
		serverCmd = cmd
		scanner := bufio.NewScanner(out)
		for scanner.Scan() {
			if addr, ok := strings.CutPrefix(scanner.Text(), "stackshift-server listening on "); ok {
				serverEndpoint = "http://" + strings.TrimSpace(addr)
				go func() {
					for scanner.Scan() {
					}
				}()
				return
			}
		}
		serverErr = errors.New("stackshift-server exited before listening")
	})
	if serverErr != nil {
		t.Fatal(serverErr)
	}
	return serverEndpoint
}

func newClient(t *testing.T) *stackshift.Client {
	t.Helper()
	c, err := stackshift.New(stackshift.Options{Endpoint: endpoint(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func fast(queue string) *stackshift.StartOptions {
	return &stackshift.StartOptions{QueueName: queue, RetryPolicy: &stackshift.RetryPolicy{MaxAttempts: 3, InitialInterval: 50 * time.Millisecond}}
}

func TestStepsAreMemoizedAcrossRetries(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	var firstRuns, flakyRuns atomic.Int32
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{"memo"}})
	w.Job("memo", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		first, err := stackshift.RunStep(ctx, jc.Step, "first", func(ctx context.Context) (map[string]int32, error) {
			firstRuns.Add(1)
			return map[string]int32{"at": jc.Attempt}, nil
		})
		if err != nil {
			return nil, err
		}
		for i := range 3 {
			if _, err := jc.Step.Run(ctx, "loop", func(ctx context.Context) (any, error) { return i * 10, nil }); err != nil {
				return nil, err
			}
		}
		if _, err := jc.Step.Run(ctx, "flaky", func(ctx context.Context) (any, error) {
			flakyRuns.Add(1)
			if jc.Attempt == 1 {
				return nil, errors.New("transient")
			}
			return "ok", nil
		}); err != nil {
			return nil, err
		}
		return map[string]any{"first": first}, nil
	})
	w.Start()
	defer w.Shutdown(ctx)
	started, err := c.Start(ctx, "memo", nil, fast("memo"))
	if err != nil {
		t.Fatal(err)
	}
	run, err := c.WaitForRun(ctx, started.ID, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != stackshift.StatusCompleted || run.Attempt != 2 || string(run.Result) != `{"first":{"at":1}}` {
		t.Fatalf("run: %s attempt %d result %s", run.Status, run.Attempt, run.Result)
	}
	var ids []string
	for _, s := range run.Steps {
		ids = append(ids, s.ID)
	}
	if fmt.Sprint(ids) != "[first loop loop#2 loop#3 flaky]" || firstRuns.Load() != 1 || flakyRuns.Load() != 2 {
		t.Fatalf("steps %v, first ran %d, flaky ran %d", ids, firstRuns.Load(), flakyRuns.Load())
	}
}

func TestStepRetriedInPlace(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	var tries atomic.Int32
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{"inplace"}})
	w.Job("inplace", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		return stackshift.RunStepWithOptions(ctx, jc.Step, "flaky", stackshift.StepOptions{Retries: 3, RetryDelay: 10 * time.Millisecond},
			func(ctx context.Context) (int32, error) {
				if n := tries.Add(1); n < 3 {
					return 0, fmt.Errorf("transient %d", n)
				}
				return jc.Attempt, nil
			})
	})
	w.Start()
	defer w.Shutdown(ctx)
	started, err := c.Start(ctx, "inplace", nil, fast("inplace"))
	if err != nil {
		t.Fatal(err)
	}
	run, err := c.WaitForRun(ctx, started.ID, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != stackshift.StatusCompleted || run.Attempt != 1 || string(run.Result) != "1" || tries.Load() != 3 {
		t.Fatalf("run: %s attempt %d result %s tries %d", run.Status, run.Attempt, run.Result, tries.Load())
	}
	var warns []string
	for _, l := range run.Logs {
		warns = append(warns, l.Message)
	}
	want := "[step flaky failed (try 1 of 4): transient 1; retrying in 10ms step flaky failed (try 2 of 4): transient 2; retrying in 20ms]"
	if fmt.Sprint(warns) != want {
		t.Fatalf("logs %v", warns)
	}
}

func TestNonRetryableStepFailureIsRecordedAndReplayed(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{"nonretry"}})
	w.Job("nonretry", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		_, err := jc.Step.Run(ctx, "charge", func(ctx context.Context) (any, error) {
			return nil, &stackshift.NonRetryableError{Err: errors.New("card declined"), Details: map[string]int{"code": 51}}
		})
		return nil, err
	})
	w.Start()
	started, _ := c.Start(ctx, "nonretry", nil, fast("nonretry"))
	run, err := c.WaitForRun(ctx, started.ID, 20*time.Second)
	_ = w.Shutdown(ctx)
	if err != nil || run.Status != stackshift.StatusFailed || run.Attempt != 1 || !run.Failure.NonRetryable {
		t.Fatalf("run %+v err %v", run, err)
	}
	step := run.Step("charge")
	if step == nil || step.Failure == nil || step.Failure.Message != "card declined" || string(step.Failure.Details) != `{"code":51}` {
		t.Fatalf("step %+v", step)
	}

	var replayed error
	w2 := c.NewWorker(stackshift.WorkerOptions{Queues: []string{"nonretry"}})
	w2.Job("nonretry", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		_, replayed = jc.Step.Run(ctx, "charge", func(ctx context.Context) (any, error) { return "must not run", nil })
		return "done", nil
	})
	w2.Start()
	defer w2.Shutdown(ctx)
	if _, err := c.RetryRun(ctx, run.ID); err != nil {
		t.Fatal(err)
	}
	again, _ := c.WaitForRun(ctx, run.ID, 20*time.Second)
	var sf *stackshift.StepFailedError
	if again.Status != stackshift.StatusCompleted || !errors.As(replayed, &sf) || sf.Failure.Message != "card declined" {
		t.Fatalf("status %s replayed %v", again.Status, replayed)
	}
}

func TestCancelStopsTheHandler(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	entered := make(chan struct{})
	stopped := make(chan error, 1)
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{"cancel"}})
	w.Job("cancel", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		_, err := jc.Step.Run(ctx, "wait", func(ctx context.Context) (any, error) {
			close(entered)
			<-ctx.Done()
			stopped <- ctx.Err()
			return nil, ctx.Err()
		})
		return nil, err
	}, stackshift.JobOptions{LeaseTimeout: 1500 * time.Millisecond})
	w.Start()
	defer w.Shutdown(ctx)
	started, _ := c.Start(ctx, "cancel", nil, &stackshift.StartOptions{QueueName: "cancel"})
	<-entered
	if _, err := c.CancelRun(ctx, started.ID, "changed my mind"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context was not cancelled")
	}
	run, _ := c.GetRun(ctx, started.ID)
	if run.Status != stackshift.StatusCancelled || len(run.Steps) != 0 || run.Failure.Message != "changed my mind" {
		t.Fatalf("run %+v", run)
	}
}

func TestClientErrorsAreTyped(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	if _, err := c.GetRun(ctx, "01a1fe3c-5ee9-7389-ad76-75dfd472f0b9"); !errors.Is(err, stackshift.ErrNotFound) {
		t.Fatalf("got %v", err)
	}
	if _, err := c.GetRun(ctx, "not-a-uuid"); !errors.Is(err, stackshift.ErrInvalidArgument) {
		t.Fatalf("got %v", err)
	}
	if _, err := c.Start(ctx, "bad name!", nil, nil); !errors.Is(err, stackshift.ErrInvalidArgument) {
		t.Fatalf("got %v", err)
	}
	if _, err := c.Start(ctx, "job", map[string]string{"blob": strings.Repeat("x", 70_000)}, nil); !errors.Is(err, stackshift.ErrResourceExhausted) {
		t.Fatalf("got %v", err)
	}
	q := c.Queue("typed")
	first, err := q.Enqueue(ctx, "never-served", nil, &stackshift.StartOptions{IdempotencyKey: "typed-1", IdempotencyTTL: stackshift.MustParseDuration("30d")})
	if err != nil {
		t.Fatal(err)
	}
	dup, _ := q.Enqueue(ctx, "never-served", nil, &stackshift.StartOptions{IdempotencyKey: "typed-1"})
	if !dup.Duplicate || dup.ID != first.ID {
		t.Fatalf("duplicate %+v", dup)
	}
	if _, err := c.CancelRun(ctx, first.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CancelRun(ctx, first.ID, ""); !errors.Is(err, stackshift.ErrFailedPrecondition) {
		t.Fatalf("got %v", err)
	}
	if run, err := c.RetryRun(ctx, first.ID); err != nil || run.Status != stackshift.StatusQueued {
		t.Fatalf("retry: %v %v", run, err)
	}
	page, err := c.ListRuns(ctx, stackshift.ListRunsOptions{Queue: "typed", Status: stackshift.StatusQueued})
	if err != nil || len(page.Runs) != 1 || page.Runs[0].ID != first.ID {
		t.Fatalf("list: %+v %v", page, err)
	}
}

func TestShutdownLetsInFlightHandlersFinish(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	entered := make(chan struct{})
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{"graceful"}, ShutdownGrace: 5 * time.Second})
	w.Job("graceful", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		close(entered)
		time.Sleep(300 * time.Millisecond)
		return jc.Step.Run(ctx, "after-pause", func(ctx context.Context) (any, error) { return "done", nil })
	})
	w.Start()
	started, _ := c.Start(ctx, "graceful", nil, &stackshift.StartOptions{QueueName: "graceful"})
	<-entered
	if err := w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	run, _ := c.GetRun(ctx, started.ID)
	if run.Status != stackshift.StatusCompleted || string(run.Result) != `"done"` {
		t.Fatalf("run %s result %s", run.Status, run.Result)
	}
}
