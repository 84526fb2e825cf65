package stackshift_test

// End-to-end tests of schedules, event triggers (client-created and job-declared), child runs
// and combined waits against the real server.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stackshift/stackshift/sdk-go"
)

// startWorker starts a worker on queue with the given jobs and shuts it down at the end.
func startWorker(t *testing.T, c *stackshift.Client, queue string, concurrency int, register func(w *stackshift.Worker)) {
	t.Helper()
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{queue}, Concurrency: concurrency, PollWait: time.Second})
	register(w)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Shutdown(context.Background()) })
}

func waitFinal(t *testing.T, c *stackshift.Client, runID string) *stackshift.Run {
	t.Helper()
	run, err := c.WaitForRun(context.Background(), runID, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !run.Status.Final() {
		t.Fatalf("run %s still %s", runID, run.Status)
	}
	return run
}

func TestSchedulesLifecycleAndIntervalFiring(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	s := c.Schedules()
	startWorker(t, c, "go-sched", 2, func(w *stackshift.Worker) {
		w.Job("go-tick", func(ctx context.Context, jc *stackshift.JobContext) (any, error) { return jc.Payload, nil })
	})
	def := stackshift.NewSchedule{ID: "go-every-second", Spec: stackshift.ScheduleSpec{Every: time.Second}, Job: "go-tick", Queue: "go-sched",
		Payload: map[string]int{"n": 1}, CatchUp: stackshift.CatchUpSkip}
	created, err := s.Create(ctx, def)
	if err != nil {
		t.Fatal(err)
	}
	if !created.Created || created.Schedule.Spec.Every != time.Second || created.Schedule.CatchUp != stackshift.CatchUpSkip || created.Schedule.Job != "go-tick" {
		t.Fatalf("created %+v", created.Schedule)
	}
	again, err := s.Create(ctx, def)
	if err != nil || again.Created {
		t.Fatalf("re-create with the same definition: created=%v err=%v", again != nil && again.Created, err)
	}
	other := def
	other.Payload = map[string]int{"n": 2}
	if _, err := s.Create(ctx, other); !errors.Is(err, stackshift.ErrAlreadyExists) {
		t.Fatalf("a different definition: %v", err)
	}
	if _, err := s.Create(ctx, stackshift.NewSchedule{ID: "go-bad-cron", Spec: stackshift.ScheduleSpec{Cron: "not a cron"}, Job: "go-tick"}); !errors.Is(err, stackshift.ErrInvalidArgument) {
		t.Fatalf("bad cron: %v", err)
	}
	cron, err := s.Create(ctx, stackshift.NewSchedule{ID: "go-paris", Spec: stackshift.ScheduleSpec{Cron: "0 9 * * *", TimeZone: "Europe/Paris"}, Job: "go-tick", Queue: "go-sched", Paused: true})
	if err != nil || !cron.Schedule.Paused || cron.Schedule.Spec.TimeZone != "Europe/Paris" {
		t.Fatalf("cron schedule %+v err %v", cron, err)
	}

	// The interval schedule fires: a run of go-tick completes with the schedule's payload.
	deadline := time.Now().Add(15 * time.Second)
	var fired *stackshift.Schedule
	for time.Now().Before(deadline) {
		if fired, err = s.Get(ctx, def.ID); err != nil {
			t.Fatal(err)
		}
		if len(fired.RecentRunIDs) > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(fired.RecentRunIDs) == 0 || fired.LastFireTime == nil {
		t.Fatalf("the interval schedule did not fire: %+v", fired)
	}
	run := waitFinal(t, c, fired.RecentRunIDs[0])
	if run.Status != stackshift.StatusCompleted || string(run.Result) != `{"n":1}` || !strings.HasPrefix(run.IdempotencyKey, "schedule:go-every-second:") {
		t.Fatalf("scheduled run %s result %s key %s", run.Status, run.Result, run.IdempotencyKey)
	}

	// List (paged), pause, resume, delete.
	var ids []string
	token := ""
	for {
		page, err := s.List(ctx, stackshift.ListSchedulesOptions{PageSize: 1, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, sc := range page.Schedules {
			ids = append(ids, sc.ID)
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	if !slices.Contains(ids, "go-every-second") || !slices.Contains(ids, "go-paris") {
		t.Fatalf("listed %v", ids)
	}
	paused, err := s.Pause(ctx, def.ID)
	if err != nil || !paused.Paused {
		t.Fatalf("pause: %+v %v", paused, err)
	}
	resumed, err := s.Resume(ctx, def.ID)
	if err != nil || resumed.Paused {
		t.Fatalf("resume: %+v %v", resumed, err)
	}
	for _, id := range []string{def.ID, "go-paris"} {
		if err := s.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get(ctx, def.ID); !errors.Is(err, stackshift.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestClientTriggerStartsRuns(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	startWorker(t, c, "go-trig", 2, func(w *stackshift.Worker) {
		w.Job("go-on-signup", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
			ev, err := jc.TriggeredEvent()
			if err != nil {
				return nil, err
			}
			var p struct{ User string }
			if err := ev.Decode(&p); err != nil {
				return nil, err
			}
			return map[string]any{"event": ev.Name, "key": ev.CorrelationKey, "user": p.User, "id": ev.ID, "recent": time.Since(ev.PublishedAt()) < time.Minute}, nil
		})
	})
	created, err := c.Triggers().Create(ctx, stackshift.NewEventTrigger{Event: "go.signed_up", Job: "go-on-signup", Queue: "go-trig"})
	if err != nil || !created.Created || created.Trigger.ID == "" {
		t.Fatalf("create: %+v %v", created, err)
	}
	again, err := c.Triggers().Create(ctx, stackshift.NewEventTrigger{Event: "go.signed_up", Job: "go-on-signup", Queue: "go-trig"})
	if err != nil || again.Created || again.Trigger.ID != created.Trigger.ID {
		t.Fatalf("re-create: %+v %v", again, err)
	}
	if _, err := c.Triggers().Create(ctx, stackshift.NewEventTrigger{Event: "go.signed_up", Job: "go-on-signup", Queue: "elsewhere"}); !errors.Is(err, stackshift.ErrAlreadyExists) {
		t.Fatalf("other options: %v", err)
	}
	page, err := c.Triggers().List(ctx, stackshift.ListTriggersOptions{Event: "go.signed_up"})
	if err != nil || len(page.Triggers) != 1 || page.Triggers[0].Job != "go-on-signup" || page.Triggers[0].Queue != "go-trig" {
		t.Fatalf("list: %+v %v", page, err)
	}
	pub, err := c.Events().Publish(ctx, "go.signed_up", map[string]string{"user": "ada"}, &stackshift.PublishOptions{Key: "u1"})
	if err != nil || len(pub.StartedRunIDs) != 1 {
		t.Fatalf("publish: %+v %v", pub, err)
	}
	run := waitFinal(t, c, pub.StartedRunIDs[0])
	want := fmt.Sprintf(`{"event":"go.signed_up","id":"%s","key":"u1","recent":true,"user":"ada"}`, pub.Event.ID)
	if run.Status != stackshift.StatusCompleted || string(run.Result) != want {
		t.Fatalf("triggered run %s %s, want %s", run.Status, run.Result, want)
	}
	if err := c.Triggers().Delete(ctx, created.Trigger.ID); err != nil {
		t.Fatal(err)
	}
	pub, err = c.Events().Publish(ctx, "go.signed_up", nil, nil)
	if err != nil || len(pub.StartedRunIDs) != 0 {
		t.Fatalf("publish after delete: %+v %v", pub, err)
	}
}

func TestJobDeclaredTrigger(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	echo := func(ctx context.Context, jc *stackshift.JobContext) (any, error) { return jc.Payload, nil }
	startWorker(t, c, "go-declared", 2, func(w *stackshift.Worker) {
		w.Job("go-on-order", echo, stackshift.JobOptions{Triggers: []stackshift.JobTrigger{{Event: "go.order.placed"}}})
	})
	// The worker created the trigger before polling, on its own queue.
	page, err := c.Triggers().List(ctx, stackshift.ListTriggersOptions{Job: "go-on-order"})
	if err != nil || len(page.Triggers) != 1 || page.Triggers[0].Queue != "go-declared" || page.Triggers[0].Event != "go.order.placed" {
		t.Fatalf("declared trigger: %+v %v", page, err)
	}
	pub, err := c.Events().Publish(ctx, "go.order.placed", map[string]int{"total": 42}, &stackshift.PublishOptions{Key: "order_7"})
	if err != nil || len(pub.StartedRunIDs) != 1 {
		t.Fatalf("publish: %+v %v", pub, err)
	}
	run := waitFinal(t, c, pub.StartedRunIDs[0])
	var ev stackshift.TriggeredEvent
	if err := json.Unmarshal(run.Result, &ev); err != nil || run.Status != stackshift.StatusCompleted || ev.Name != "go.order.placed" ||
		ev.CorrelationKey != "order_7" || string(ev.Payload) != `{"total":42}` || ev.ID != pub.Event.ID || ev.PublishedAtMillis == 0 {
		t.Fatalf("run %s result %s (%v)", run.Status, run.Result, err)
	}
	if run.Queue != "go-declared" {
		t.Fatalf("queue %s", run.Queue)
	}

	// A second worker declaring the same trigger with other options does not start.
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{"go-declared"}})
	w.Job("go-on-order", echo, stackshift.JobOptions{Triggers: []stackshift.JobTrigger{{Event: "go.order.placed", Priority: 5}}})
	err = w.Start()
	var decl *stackshift.TriggerDeclarationError
	if !errors.As(err, &decl) || !errors.Is(err, stackshift.ErrAlreadyExists) || decl.Job != "go-on-order" || decl.Event != "go.order.placed" {
		t.Fatalf("conflicting declaration: %v", err)
	}
	if err := w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// childJobs registers the child jobs of the invoke tests: go-double doubles its payload,
// go-boom fails non-retryably.
func childJobs(w *stackshift.Worker) {
	w.Job("go-double", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		var n int
		if err := jc.Decode(&n); err != nil {
			return nil, stackshift.NonRetryable(err)
		}
		return n * 2, nil
	})
	w.Job("go-boom", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		return nil, stackshift.NonRetryablef("boom %s", jc.Payload)
	})
}

func TestInvokeReturnsTheChildResultOrATypedFailure(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	var caught *stackshift.ChildFailedError
	// One slot: the waiting parent holds none, so its children run on the same worker.
	startWorker(t, c, "go-invoke", 1, func(w *stackshift.Worker) {
		childJobs(w)
		w.Job("go-parent", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
			doubled, err := stackshift.Invoke[int](ctx, jc.Step, "double", "go-double", 21)
			if err != nil {
				return nil, err
			}
			_, err = jc.Step.Invoke(ctx, "boom", "go-boom", "x")
			if !errors.As(err, &caught) {
				return nil, err
			}
			return map[string]any{"doubled": doubled, "caught": err.Error()}, nil
		})
		w.Job("go-parent-propagates", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
			_, err := jc.Step.Invoke(ctx, "boom", "go-boom", "y")
			return nil, err
		})
	})
	started, err := c.Start(ctx, "go-parent", nil, fast("go-invoke"))
	if err != nil {
		t.Fatal(err)
	}
	run := waitFinal(t, c, started.ID)
	var got struct {
		Doubled int
		Caught  string
	}
	if run.Status != stackshift.StatusCompleted || json.Unmarshal(run.Result, &got) != nil || got.Doubled != 42 {
		t.Fatalf("parent %s %s", run.Status, run.Result)
	}
	if caught == nil || caught.Status != stackshift.StatusFailed || caught.Job != "go-boom" || caught.Failure.Message != `boom "x"` ||
		got.Caught != fmt.Sprintf(`child run %s (go-boom) failed: boom "x"`, caught.RunID) {
		t.Fatalf("caught %+v, message %q", caught, got.Caught)
	}
	child, err := c.GetRun(ctx, caught.RunID)
	if err != nil || child.ParentRunID != started.ID || child.ParentStepID != "boom" || child.Queue != "go-invoke" {
		t.Fatalf("child %+v %v", child, err)
	}
	var kinds []stackshift.StepKind
	for _, s := range run.Steps {
		kinds = append(kinds, s.Kind)
	}
	if fmt.Sprint(kinds) != "[child child]" {
		t.Fatalf("parent steps %v", kinds)
	}

	// Propagated, the typed error fails the parent at once, without retries.
	started, err = c.Start(ctx, "go-parent-propagates", nil, fast("go-invoke"))
	if err != nil {
		t.Fatal(err)
	}
	run = waitFinal(t, c, started.ID)
	if run.Status != stackshift.StatusFailed || run.Attempt != 1 || run.Failure == nil || !run.Failure.NonRetryable ||
		run.Failure.Type != "ChildFailed" || !strings.Contains(run.Failure.Message, `(go-boom) failed: boom "y"`) {
		t.Fatalf("parent %s attempt %d failure %+v", run.Status, run.Attempt, run.Failure)
	}
}

func TestInvokeAllFansOutAndKeepsOrder(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	startWorker(t, c, "go-fanout", 4, func(w *stackshift.Worker) {
		childJobs(w)
		w.Job("go-fan", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
			var children []stackshift.ChildRun
			for i := range 6 {
				job := "go-double"
				if i == 3 {
					job = "go-boom"
				}
				children = append(children, stackshift.ChildRun{Job: job, Payload: i})
			}
			outcomes, err := jc.Step.InvokeAll(ctx, "chunks", children)
			if err != nil {
				return nil, err
			}
			var parts []string
			for _, o := range outcomes {
				var n int
				if err := o.Decode(&n); err != nil {
					var cf *stackshift.ChildFailedError
					if !errors.As(err, &cf) || cf.RunID != o.RunID {
						return nil, err
					}
					parts = append(parts, string(o.Status))
					continue
				}
				parts = append(parts, fmt.Sprint(n))
			}
			return strings.Join(parts, ","), nil
		})
	})
	started, err := c.Start(ctx, "go-fan", nil, fast("go-fanout"))
	if err != nil {
		t.Fatal(err)
	}
	run := waitFinal(t, c, started.ID)
	if run.Status != stackshift.StatusCompleted || string(run.Result) != `"0,2,4,failed,8,10"` {
		t.Fatalf("fan-out %s %s %+v", run.Status, run.Result, run.Failure)
	}
}

// combined runs a handler that returns the result of a combined wait, publishes events once
// the run is waiting, and returns the finished run.
func combinedRun(t *testing.T, c *stackshift.Client, queue string, handler stackshift.HandlerFunc, publish func(ctx context.Context) error) *stackshift.Run {
	t.Helper()
	ctx := context.Background()
	startWorker(t, c, queue, 2, func(w *stackshift.Worker) { w.Job(queue, handler) })
	started, err := c.Start(ctx, queue, nil, fast(queue))
	if err != nil {
		t.Fatal(err)
	}
	if publish != nil {
		deadline := time.Now().Add(10 * time.Second)
		for {
			run, err := c.GetRun(ctx, started.ID)
			if err != nil {
				t.Fatal(err)
			}
			if run.Status == stackshift.StatusWaiting {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("run never waited: %s", run.Status)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := publish(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return waitFinal(t, c, started.ID)
}

func describeAny(r *stackshift.AnyResult) string {
	if r.TimedOut {
		return "timed out"
	}
	if r.Result.Slept() {
		return fmt.Sprintf("%d slept", r.Index)
	}
	return fmt.Sprintf("%d %s %s %s", r.Index, r.Result.Event.Name, r.Result.Event.CorrelationKey, r.Result.Event.Payload)
}

func TestWaitForAny(t *testing.T) {
	c := newClient(t)
	cases := []struct {
		name    string
		items   []stackshift.WaitItem
		opts    *stackshift.CombinedWaitOptions
		publish string
		want    string
		atLeast time.Duration
	}{
		{"event-wins", []stackshift.WaitItem{stackshift.SleepItem(time.Hour), stackshift.EventItem("go.any.approved", "o1")}, nil, "o1", `1 go.any.approved o1 {"ok":true}`, 0},
		{"sleep-wins", []stackshift.WaitItem{stackshift.EventItem("go.any.never", ""), stackshift.SleepItem(300 * time.Millisecond)}, nil, "", "1 slept", 300 * time.Millisecond},
		{"timeout", []stackshift.WaitItem{stackshift.EventItem("go.any.never", ""), stackshift.EventItem("go.any.never", "k")}, &stackshift.CombinedWaitOptions{Timeout: 400 * time.Millisecond}, "", "timed out", 400 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var publish func(ctx context.Context) error
			if tc.publish != "" {
				publish = func(ctx context.Context) error {
					_, err := c.Events().Publish(ctx, "go.any.approved", map[string]bool{"ok": true}, &stackshift.PublishOptions{Key: tc.publish})
					return err
				}
			}
			began := time.Now()
			run := combinedRun(t, c, "go-any-"+tc.name, func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
				r, err := jc.Step.WaitForAny(ctx, "w", tc.items, tc.opts)
				if err != nil {
					return nil, err
				}
				return describeAny(r), nil
			}, publish)
			if run.Status != stackshift.StatusCompleted || string(run.Result) != fmt.Sprintf("%q", tc.want) {
				t.Fatalf("%s %s %+v, want %q", run.Status, run.Result, run.Failure, tc.want)
			}
			if elapsed := time.Since(began); elapsed < tc.atLeast {
				t.Fatalf("resolved after %s, before %s", elapsed, tc.atLeast)
			}
			if s := run.Step("w"); s == nil || s.Kind != stackshift.StepKindAny {
				t.Fatalf("step %+v", s)
			}
		})
	}
}

func describeAll(r *stackshift.AllResult) string {
	parts := []string{fmt.Sprint("timedOut=", r.TimedOut)}
	for _, it := range r.Items {
		switch {
		case it == nil:
			parts = append(parts, "unresolved")
		case it.Slept():
			parts = append(parts, "slept")
		default:
			parts = append(parts, it.Event.CorrelationKey+string(it.Event.Payload))
		}
	}
	return strings.Join(parts, " ")
}

func TestWaitForAll(t *testing.T) {
	c := newClient(t)
	// Both signatures and the sleep resolve; two items for the same name take two events.
	run := combinedRun(t, c, "go-all-both", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		r, err := jc.Step.WaitForAll(ctx, "sign", []stackshift.WaitItem{
			stackshift.EventItem("go.all.signed", "k"), stackshift.SleepItem(200 * time.Millisecond), stackshift.EventItem("go.all.signed", "k"),
		}, &stackshift.CombinedWaitOptions{Timeout: time.Minute})
		if err != nil {
			return nil, err
		}
		return describeAll(r), nil
	}, func(ctx context.Context) error {
		for i := 1; i <= 2; i++ {
			if _, err := c.Events().Publish(ctx, "go.all.signed", i, &stackshift.PublishOptions{Key: "k"}); err != nil {
				return err
			}
		}
		return nil
	})
	if run.Status != stackshift.StatusCompleted || string(run.Result) != `"timedOut=false k1 slept k2"` {
		t.Fatalf("%s %s %+v", run.Status, run.Result, run.Failure)
	}
	if s := run.Step("sign"); s == nil || s.Kind != stackshift.StepKindAll {
		t.Fatalf("step %+v", s)
	}

	// The timeout passes with one item unresolved.
	run = combinedRun(t, c, "go-all-timeout", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		r, err := jc.Step.WaitForAll(ctx, "sign", []stackshift.WaitItem{
			stackshift.SleepItem(100 * time.Millisecond), stackshift.EventItem("go.all.never", ""),
		}, &stackshift.CombinedWaitOptions{Timeout: 500 * time.Millisecond})
		if err != nil {
			return nil, err
		}
		return describeAll(r), nil
	}, nil)
	if run.Status != stackshift.StatusCompleted || string(run.Result) != `"timedOut=true slept unresolved"` {
		t.Fatalf("%s %s %+v", run.Status, run.Result, run.Failure)
	}

	// Without a timeout, a wait that could last forever is refused (non-retryable).
	run = combinedRun(t, c, "go-all-unbounded", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		_, err := jc.Step.WaitForAll(ctx, "sign", []stackshift.WaitItem{stackshift.EventItem("go.all.never", "")}, nil)
		return nil, err
	}, nil)
	if run.Status != stackshift.StatusFailed || run.Attempt != 1 || !strings.Contains(run.Failure.Message, "invalid argument") {
		t.Fatalf("%s attempt %d %+v", run.Status, run.Attempt, run.Failure)
	}
}
