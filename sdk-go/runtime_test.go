package stackshift_test

// Tests of the runtime beyond steps, against the real server: state (direct and journaled),
// durable sleeps, event waits, run logs and timeline, queue management and start options.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stackshift/stackshift/sdk-go"
)

// unique returns a name unique to this test run (queues and keys outlive a test on one server).
func unique(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
}

func conflictReason(err error) string {
	var c *stackshift.ConflictError
	if errors.As(err, &c) {
		return c.Reason
	}
	return fmt.Sprintf("not a conflict: %v", err)
}

func waitDone(t *testing.T, c *stackshift.Client, id string) *stackshift.Run {
	t.Helper()
	run, err := c.WaitForRun(context.Background(), id, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return run
}

func TestStateOutsideRuns(t *testing.T) {
	ctx := context.Background()
	st := newClient(t).State()
	key := unique("progress")
	if found, err := st.Get(ctx, key, nil); err != nil || found {
		t.Fatalf("absent key: found %v err %v", found, err)
	}
	v1, err := st.Set(ctx, key, map[string]int{"processed": 100, "total": 500}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var progress struct{ Processed, Total int }
	if found, err := st.Get(ctx, key, &progress); err != nil || !found || progress.Processed != 100 || progress.Total != 500 {
		t.Fatalf("get: %v %v %+v", found, err, progress)
	}
	// Compare-and-set: a stale version is a typed conflict, also ErrFailedPrecondition.
	_, err = st.Set(ctx, key, "x", &stackshift.SetOptions{ExpectedVersion: stackshift.ExpectVersion(v1 + 100)})
	if conflictReason(err) != stackshift.ReasonVersionMismatch || !errors.Is(err, stackshift.ErrFailedPrecondition) {
		t.Fatalf("stale CAS: %v", err)
	}
	if _, err := st.Set(ctx, key, "x", &stackshift.SetOptions{ExpectedVersion: stackshift.ExpectVersion(v1)}); err != nil {
		t.Fatalf("CAS at the right version: %v", err)
	}
	if _, err := st.Increment(ctx, key); conflictReason(err) != stackshift.ReasonNotAnInteger {
		t.Fatalf("increment of a string: %v", err)
	}
	if deleted, err := st.Delete(ctx, key); err != nil || !deleted {
		t.Fatalf("delete: %v %v", deleted, err)
	}
	if deleted, _ := st.Delete(ctx, key); deleted {
		t.Fatal("a second delete deleted something")
	}

	counter := key + ":n"
	if n, err := st.Increment(ctx, counter); err != nil || n != 1 {
		t.Fatalf("increment: %d %v", n, err)
	}
	if n, err := st.IncrementBy(ctx, counter, 41); err != nil || n != 42 {
		t.Fatalf("increment by: %d %v", n, err)
	}
	if _, err := st.Set(ctx, key+":tmp", true, &stackshift.SetOptions{ExpiresAt: time.Now().Add(7 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	entry, err := st.GetEntry(ctx, key+":tmp")
	if err != nil || entry == nil || entry.ExpiresAt == nil || string(entry.Value) != "true" {
		t.Fatalf("entry with expiry: %+v %v", entry, err)
	}
	if _, err := st.Set(ctx, key+":gone", 1, &stackshift.SetOptions{TTL: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if found, _ := st.Get(ctx, key+":gone", nil); found {
		t.Fatal("an expired key is still readable")
	}
	page, err := st.List(ctx, key, nil)
	if err != nil || len(page.Keys) != 2 || page.Keys[0].Key != counter || page.Keys[1].Key != key+":tmp" {
		t.Fatalf("list: %+v %v", page, err)
	}
}

func TestLocksAndFencingTokens(t *testing.T) {
	ctx := context.Background()
	st := newClient(t).State()
	key := unique("lock")
	lock, err := st.Lock(ctx, key, stackshift.LockOptions{TTL: 5 * time.Second})
	if err != nil || lock == nil {
		t.Fatalf("lock: %v %v", lock, err)
	}
	attempt, err := st.TryLock(ctx, key, stackshift.LockOptions{TTL: 5 * time.Second})
	if err != nil || attempt.Lock != nil || attempt.HolderExpiresAt.IsZero() {
		t.Fatalf("busy lock: %+v %v", attempt, err)
	}
	if _, err := lock.Extend(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// A waiting acquire gets the lock as soon as the holder releases it.
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = lock.Release(ctx)
	}()
	next, err := st.Lock(ctx, key, stackshift.LockOptions{TTL: time.Second, Wait: 5 * time.Second})
	if err != nil || next == nil || next.Token <= lock.Token {
		t.Fatalf("waited lock: %+v %v (first token %d)", next, err, lock.Token)
	}
	if err := lock.Release(ctx); conflictReason(err) != stackshift.ReasonLockNotHeld {
		t.Fatalf("release with a stale token: %v", err)
	}
	if err := next.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStateInsideARunIsJournaled(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	queue := unique("state-run")
	key := unique("rows")
	var conflicts atomic.Value
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{queue}})
	w.Job("count", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		if !jc.State.Journaled() {
			return nil, errors.New("JobContext.State is not journaled")
		}
		n, err := jc.State.IncrementBy(ctx, key, 10)
		if err != nil {
			return nil, err
		}
		var read int64
		if _, err := jc.State.Get(ctx, key, &read); err != nil {
			return nil, err
		}
		// A refusal is a typed conflict inside a run too (and replayed as one).
		_, err = jc.State.Set(ctx, key, 0, &stackshift.SetOptions{ExpectedVersion: stackshift.ExpectVersion(0)})
		conflicts.Store(conflictReason(err))
		if jc.Attempt == 1 {
			return nil, errors.New("crash after the increment")
		}
		return map[string]int64{"n": n, "read": read}, nil
	})
	w.Start()
	defer w.Shutdown(ctx)
	started, err := c.Start(ctx, "count", nil, fast(queue))
	if err != nil {
		t.Fatal(err)
	}
	run := waitDone(t, c, started.ID)
	if run.Status != stackshift.StatusCompleted || run.Attempt != 2 || string(run.Result) != `{"n":10,"read":10}` {
		t.Fatalf("run %s attempt %d result %s", run.Status, run.Attempt, run.Result)
	}
	var now int64
	if _, err := c.State().Get(ctx, key, &now); err != nil || now != 10 {
		t.Fatalf("the increment was applied %d/10 times (err %v)", now, err)
	}
	if conflicts.Load() != stackshift.ReasonVersionMismatch {
		t.Fatalf("conflict inside a run: %v", conflicts.Load())
	}
	var ids []string
	for _, s := range run.Steps {
		if s.Kind == stackshift.StepKindState {
			ids = append(ids, s.ID)
		}
	}
	if !slices.Equal(ids, []string{"state:1", "state:2", "state:3"}) {
		t.Fatalf("journaled state calls %v", ids)
	}
}

func TestSleepSuspendsTheRunAndResumesIt(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	queue := unique("sleep")
	var before, after atomic.Int32
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{queue}})
	w.Job("nap", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		if _, err := jc.Step.Run(ctx, "before", func(ctx context.Context) (any, error) { return before.Add(1), nil }); err != nil {
			return nil, err
		}
		if err := jc.Step.Sleep(ctx, "nap", 1200*time.Millisecond); err != nil {
			return nil, err
		}
		if err := jc.Step.Sleep(ctx, "nap", 0); err != nil { // nap#2, resolved at once
			return nil, err
		}
		return jc.Step.Run(ctx, "after", func(ctx context.Context) (any, error) { return after.Add(1), nil })
	})
	w.Start()
	defer w.Shutdown(ctx)
	started, err := c.Start(ctx, "nap", nil, fast(queue))
	if err != nil {
		t.Fatal(err)
	}
	var waiting *stackshift.Run
	for range 50 {
		r, err := c.GetRun(ctx, started.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == stackshift.StatusWaiting {
			waiting = r
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if waiting == nil || waiting.Wait == nil || waiting.Wait.StepID != "nap" || waiting.Wait.Kind != stackshift.StepKindSleep {
		t.Fatalf("the run did not wait on its sleep: %+v", waiting)
	}
	if n := w.ActiveTasks(); n != 0 {
		t.Fatalf("a sleeping run holds %d worker slot(s)", n)
	}
	run := waitDone(t, c, started.ID)
	if run.Status != stackshift.StatusCompleted || run.Attempt != 1 || before.Load() != 1 || after.Load() != 1 {
		t.Fatalf("run %s attempt %d, before ran %d, after ran %d", run.Status, run.Attempt, before.Load(), after.Load())
	}
	var kinds []string
	for _, s := range run.Steps {
		kinds = append(kinds, s.ID+"="+string(s.Kind))
	}
	if !slices.Equal(kinds, []string{"before=step", "nap=sleep", "nap#2=sleep", "after=step"}) {
		t.Fatalf("steps %v", kinds)
	}
	var timeline []stackshift.TimelineKind
	for _, e := range run.Timeline {
		timeline = append(timeline, e.Kind)
	}
	for _, want := range []stackshift.TimelineKind{stackshift.TimelineCreated, stackshift.TimelineWaiting, stackshift.TimelineTimerFired, stackshift.TimelineAttemptResumed, stackshift.TimelineCompleted} {
		if !slices.Contains(timeline, want) {
			t.Fatalf("timeline %v lacks %s", timeline, want)
		}
	}
}

func TestWaitForEventReceivesOrTimesOut(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	queue := unique("events")
	name := "payment.confirmed"
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{queue}})
	w.Job("pay", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		var p struct {
			Key     string
			Timeout int64
		}
		if err := jc.Decode(&p); err != nil {
			return nil, stackshift.NonRetryable(err)
		}
		ev, err := jc.Step.WaitForEvent(ctx, "wait", stackshift.WaitOptions{Event: name, Key: p.Key, Timeout: time.Duration(p.Timeout) * time.Millisecond})
		if err != nil {
			return nil, err
		}
		if ev == nil {
			return "timed out", nil
		}
		return ev.Payload, nil
	})
	w.Start()
	defer w.Shutdown(ctx)
	events := c.Events()
	key := unique("pay")

	// Published before the run reaches its wait: the inbox keeps it.
	early, _ := c.Start(ctx, "pay", map[string]any{"Key": key + "-early", "Timeout": 60_000}, fast(queue))
	if res, err := events.Publish(ctx, name, map[string]int{"amount": 1}, &stackshift.PublishOptions{Key: key + "-early"}); err != nil || res.Duplicate {
		t.Fatalf("publish: %+v %v", res, err)
	}
	if run := waitDone(t, c, early.ID); run.Status != stackshift.StatusCompleted || string(run.Result) != `{"amount":1}` {
		t.Fatalf("early: %s %s", run.Status, run.Result)
	}

	// Published while the run waits: the publish resumes it.
	late, _ := c.Start(ctx, "pay", map[string]any{"Key": key + "-late", "Timeout": 60_000}, fast(queue))
	for range 100 {
		if r, _ := c.GetRun(ctx, late.ID); r.Status == stackshift.StatusWaiting {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	res, err := events.Publish(ctx, name, map[string]int{"amount": 2}, &stackshift.PublishOptions{Key: key + "-late", ID: key + "-evt"})
	if err != nil || res.ResumedRunCount != 1 || !slices.Equal(res.ResumedRunIDs, []string{late.ID}) || res.Event.CorrelationKey != key+"-late" {
		t.Fatalf("publish: %+v %v", res, err)
	}
	again, err := events.Publish(ctx, name, map[string]int{"amount": 2}, &stackshift.PublishOptions{Key: key + "-late", ID: key + "-evt"})
	if err != nil || !again.Duplicate || again.ResumedRunCount != 0 {
		t.Fatalf("duplicate publish: %+v %v", again, err)
	}
	run := waitDone(t, c, late.ID)
	if run.Status != stackshift.StatusCompleted || string(run.Result) != `{"amount":2}` || run.Attempt != 1 {
		t.Fatalf("late: %s %s attempt %d", run.Status, run.Result, run.Attempt)
	}

	// Nothing published: the wait times out and returns nil.
	quiet, _ := c.Start(ctx, "pay", map[string]any{"Key": key + "-quiet", "Timeout": 300}, fast(queue))
	if run := waitDone(t, c, quiet.ID); string(run.Result) != `"timed out"` {
		t.Fatalf("quiet: %s %s", run.Status, run.Result)
	}

	page, err := events.List(ctx, stackshift.ListEventsOptions{Name: name, CorrelationKey: key + "-late"})
	if err != nil || len(page.Events) != 1 || page.Events[0].ID != key+"-evt" {
		t.Fatalf("list: %+v %v", page, err)
	}
}

func TestRunLogsAreFlushedBeforeTheOutcome(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	queue := unique("logs")
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{queue}})
	w.Job("logs", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		jc.Log.Info("starting", "file", "f_1", "rows", 3)
		if _, err := jc.Step.Run(ctx, "import", func(ctx context.Context) (any, error) {
			jc.Log.With("batch", 1).Warn("slow batch")
			return nil, nil
		}); err != nil {
			return nil, err
		}
		jc.Log.Debug("done")
		if jc.Attempt == 1 {
			jc.Log.Error("failing on purpose")
			return nil, errors.New("boom")
		}
		return "ok", nil
	})
	w.Start()
	defer w.Shutdown(ctx)
	started, _ := c.Start(ctx, "logs", nil, fast(queue))
	run := waitDone(t, c, started.ID)
	var got []string
	for _, l := range run.Logs {
		got = append(got, fmt.Sprintf("%d %s %s %s %s", l.Attempt, l.Level, l.Message, l.StepID, l.Fields))
	}
	want := []string{
		`1 info starting  {"file":"f_1","rows":3}`, `1 warn slow batch import {"batch":1}`, `1 debug done  `, `1 error failing on purpose  `,
		`2 info starting  {"file":"f_1","rows":3}`, `2 debug done  `,
	}
	if !slices.Equal(got, want) {
		b, _ := json.MarshalIndent(got, "", " ")
		t.Fatalf("logs:\n%s", b)
	}
}

func TestQueueManagementAndStartOptions(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	name := unique("managed")
	q := c.Queue(name)
	if _, err := q.Get(ctx); !errors.Is(err, stackshift.ErrNotFound) {
		t.Fatalf("unknown queue: %v", err)
	}
	info, err := q.Configure(ctx, stackshift.QueueConfig{
		ConcurrencyLimit: 2, KeyConcurrencyLimit: 1,
		RateLimit:   &stackshift.RateLimit{Limit: 100, Period: time.Minute},
		RetryPolicy: &stackshift.RetryPolicy{MaxAttempts: 2}, LeaseTimeout: 10 * time.Second,
	})
	if err != nil || info.Name != name || info.Config.ConcurrencyLimit != 2 || info.Config.KeyConcurrencyLimit != 1 ||
		info.Config.RateLimit == nil || info.Config.RateLimit.Period != time.Minute || info.Config.LeaseTimeout != 10*time.Second || info.Paused {
		t.Fatalf("configure: %+v %v", info, err)
	}
	if info, err = q.Pause(ctx); err != nil || !info.Paused {
		t.Fatalf("pause: %+v %v", info, err)
	}
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{name}, PollWait: time.Second})
	w.Job("echo", func(ctx context.Context, jc *stackshift.JobContext) (any, error) { return jc.Payload, nil })
	w.Start()
	defer w.Shutdown(ctx)
	started, err := q.Enqueue(ctx, "echo", 7, &stackshift.StartOptions{Priority: 5, ConcurrencyKey: "cus_1"})
	if err != nil || started.Run.Priority != 5 || started.Run.ConcurrencyKey != "cus_1" {
		t.Fatalf("enqueue: %+v %v", started, err)
	}
	delayed, err := q.Enqueue(ctx, "echo", 8, &stackshift.StartOptions{Delay: time.Hour})
	if err != nil || delayed.Run.NextAttemptAt == nil || time.Until(*delayed.Run.NextAttemptAt) < 59*time.Minute {
		t.Fatalf("delayed: %+v %v", delayed, err)
	}
	at := time.Now().Add(2 * time.Hour)
	scheduled, err := q.Enqueue(ctx, "echo", 9, &stackshift.StartOptions{RunAt: at})
	if err != nil || scheduled.Run.NextAttemptAt == nil || scheduled.Run.NextAttemptAt.Sub(at).Abs() > time.Second {
		t.Fatalf("run at: %+v %v", scheduled, err)
	}
	if _, err := q.Enqueue(ctx, "echo", 9, &stackshift.StartOptions{RunAt: at, Delay: time.Hour}); !errors.Is(err, stackshift.ErrInvalidArgument) {
		t.Fatalf("delay and run at: %v", err)
	}
	time.Sleep(1500 * time.Millisecond)
	if r, _ := c.GetRun(ctx, started.ID); r.Status != stackshift.StatusQueued {
		t.Fatalf("a paused queue delivered a run (%s)", r.Status)
	}
	info, err = q.Get(ctx)
	if err != nil || info.Stats.Queued != 3 || info.Stats.Delayed != 2 {
		t.Fatalf("stats: %+v %v", info.Stats, err)
	}
	if info, err = q.Resume(ctx); err != nil || info.Paused {
		t.Fatalf("resume: %+v %v", info, err)
	}
	if run := waitDone(t, c, started.ID); run.Status != stackshift.StatusCompleted || string(run.Result) != "7" || run.MaxAttempts != 2 {
		t.Fatalf("after resume: %s %s max %d", run.Status, run.Result, run.MaxAttempts)
	}
	var names []string
	for token := ""; ; {
		page, err := c.ListQueues(ctx, stackshift.ListQueuesOptions{PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range page.Queues {
			names = append(names, q.Name)
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	if !slices.Contains(names, name) {
		t.Fatalf("ListQueues lacks %s: %v", name, names)
	}
}

func TestStateCallOfACancelledRunInterruptsTheAttempt(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	queue := unique("state-cancel")
	entered, cancelled := make(chan struct{}), make(chan struct{})
	result := make(chan error, 1)
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{queue}})
	w.Job("cancel", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		close(entered)
		<-cancelled // the heartbeat (every 10 s) has not noticed yet: the server answers ABORTED
		_, err := jc.State.Increment(ctx, unique("never"))
		result <- err
		return nil, err
	})
	w.Start()
	defer w.Shutdown(ctx)
	started, _ := c.Start(ctx, "cancel", nil, &stackshift.StartOptions{QueueName: queue, LeaseTimeout: 30 * time.Second})
	<-entered
	if _, err := c.CancelRun(ctx, started.ID, "stop"); err != nil {
		t.Fatal(err)
	}
	close(cancelled)
	err := <-result
	var conflict *stackshift.ConflictError
	if !stackshift.IsInterrupted(err) || errors.As(err, &conflict) {
		t.Fatalf("a state call of a cancelled run: %v", err)
	}
}
