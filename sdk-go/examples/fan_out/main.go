// Issue 10 in Go: an event trigger declared on the job starts processOrder when
// "order.placed" is published; the handler invokes one child run (a thumbnail), fans out over
// 20 chunks with InvokeAll (one chunk fails: its outcome is reported, not raised), then waits
// for an approval event or a 30 s reminder timer, whichever comes first.
//
// Checks: the publish started one run, whose payload is the event; the child results come
// back in order; the failed chunk is a *ChildFailedError outcome; the approval event won the
// WaitForAny; the children point at their parent.
//
//	cd sdk-go && go run ./examples/fan_out
package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stackshift/stackshift/sdk-go"
	"github.com/stackshift/stackshift/sdk-go/examples/internal/check"
)

const chunks = 20

type order struct {
	OrderID string `json:"orderId"`
	Image   string `json:"image"`
}

type summary struct {
	Order     string `json:"order"`
	Thumbnail string `json:"thumbnail"`
	Total     int    `json:"total"`
	Failed    []int  `json:"failed"`
	Approved  bool   `json:"approved"`
	ChildRun  string `json:"childRun"`
}

func processOrder(approvalEvent string) stackshift.HandlerFunc {
	return func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		ev, err := jc.TriggeredEvent()
		if err != nil {
			return nil, err
		}
		var o order
		if err := ev.Decode(&o); err != nil {
			return nil, stackshift.NonRetryable(err)
		}
		thumb, err := stackshift.Invoke[string](ctx, jc.Step, "thumbnail", "resizeImage", o.Image)
		if err != nil {
			return nil, err // *InterruptedError while the child runs; *ChildFailedError fails the order
		}
		children := make([]stackshift.ChildRun, chunks)
		for i := range children {
			children[i] = stackshift.ChildRun{Job: "processChunk", Payload: i}
		}
		outcomes, err := jc.Step.InvokeAll(ctx, "chunks", children)
		if err != nil {
			return nil, err
		}
		s := summary{Order: o.OrderID, Thumbnail: thumb, Failed: []int{}, ChildRun: outcomes[0].RunID}
		for i, outcome := range outcomes {
			var n int
			var failed *stackshift.ChildFailedError
			if err := outcome.Decode(&n); errors.As(err, &failed) {
				jc.Log.Warn("chunk failed", "chunk", i, "error", failed.Failure.Message)
				s.Failed = append(s.Failed, i)
				continue
			} else if err != nil {
				return nil, err
			}
			s.Total += n
		}
		got, err := jc.Step.WaitForAny(ctx, "approval-or-reminder", []stackshift.WaitItem{
			stackshift.EventItem(approvalEvent, o.OrderID),
			stackshift.SleepItem(30 * time.Second),
		}, nil)
		if err != nil {
			return nil, err
		}
		s.Approved = !got.Result.Slept()
		return s, nil
	}
}

func main() {
	ctx := context.Background()
	client, err := stackshift.New(stackshift.Options{})
	if err != nil {
		check.Fatal(err)
	}
	defer client.Close()
	suffix := check.UniqueSuffix()
	queue, placed, approved := "fan-out-"+suffix, "order.placed."+suffix, "order.approved."+suffix

	worker := client.NewWorker(stackshift.WorkerOptions{Queues: []string{queue}, Concurrency: 4, ShutdownGrace: 5 * time.Second})
	worker.Job("processOrder", processOrder(approved), stackshift.JobOptions{Triggers: []stackshift.JobTrigger{{Event: placed}}})
	worker.Job("resizeImage", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		var image string
		if err := jc.Decode(&image); err != nil {
			return nil, stackshift.NonRetryable(err)
		}
		return "https://cdn.example.com/128/" + image, nil
	})
	worker.Job("processChunk", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		var i int
		if err := jc.Decode(&i); err != nil {
			return nil, stackshift.NonRetryable(err)
		}
		if i == 13 {
			return nil, stackshift.NonRetryablef("chunk %d is corrupt", i)
		}
		return i * 10, nil
	})
	if err := worker.Start(); err != nil { // creates the declared trigger, then polls
		check.Fatal(err)
	}
	defer func() { _ = worker.Shutdown(ctx) }()

	pub, err := client.Events().Publish(ctx, placed, order{OrderID: "ord_" + suffix, Image: "cat.png"}, nil)
	if err != nil {
		check.Fatal(err)
	}
	check.That(len(pub.StartedRunIDs) == 1, "publishing order.placed started one run through the declared trigger")
	if len(pub.StartedRunIDs) != 1 {
		check.Finish("fan_out")
	}
	runID := pub.StartedRunIDs[0]

	// Approve once the run waits (the inbox would also keep an early approval).
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		run, err := client.GetRun(ctx, runID)
		if err != nil {
			check.Fatal(err)
		}
		if run.Wait != nil && run.Wait.Kind == stackshift.StepKindAny {
			break
		}
	}
	if _, err := client.Events().Publish(ctx, approved, map[string]string{"by": "ops"}, &stackshift.PublishOptions{Key: "ord_" + suffix}); err != nil {
		check.Fatal(err)
	}
	run, err := client.WaitForRun(ctx, runID, 60*time.Second)
	if err != nil {
		check.Fatal(err)
	}
	fmt.Printf("run %s is %s; result %s\n", run.ID, run.Status, run.Result)
	var s summary
	_ = run.DecodeResult(&s)
	want := 0
	for i := range chunks {
		if i != 13 {
			want += i * 10
		}
	}
	check.That(run.Status == stackshift.StatusCompleted, "the order run completed")
	check.That(s.Thumbnail == "https://cdn.example.com/128/cat.png", "the thumbnail child's result came back")
	check.That(s.Total == want && fmt.Sprint(s.Failed) == "[13]", fmt.Sprintf("the fan-out summed %d and reported chunk 13 as failed", want))
	check.That(s.Approved, "the approval event won the WaitForAny")
	child, err := client.GetRun(ctx, s.ChildRun)
	check.That(err == nil && child.ParentRunID == runID && child.ParentStepID == "chunks", "the chunk runs point at their parent")
	check.Finish("fan_out")
}
