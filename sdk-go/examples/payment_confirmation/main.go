// Payment provisioning that waits for the payment provider's webhook: the job creates an
// invoice, then waits (durably, without holding a worker slot) for the event payment.confirmed
// correlated by the payment id, then provisions the customer. A payment that is not confirmed
// within the wait's timeout fails the run (Step.WaitForEvent returns nil on timeout).
//
// It runs the orders the webhook can arrive in, and its absence:
//  1. Before the wait is reached: the event is published right after the run starts, before
//     any worker ran the handler. The run's inbox keeps it and the wait returns it at once.
//  2. After the wait is reached: the run is waiting when the event is published; the publish
//     resumes exactly that run (and reports it).
//  3. Never: the wait times out and the run fails without provisioning.
//
// Checks: runs 1 and 2 completed on attempt 1 with the confirmed amount; the early publish
// resumed no run and the late one resumed exactly run 2; an event for another payment id
// resumed nothing; the webhook delivered twice was stored once; create-invoice ran once per
// run (replayed after the resume); run 3 failed after its timeout without provisioning.
//
//	cd sdk-go && go run ./examples/payment_confirmation
package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/stackshift/stackshift/sdk-go"
	"github.com/stackshift/stackshift/sdk-go/examples/internal/check"
)

const job = "provisionAfterPaymentConfirmed"

type order struct {
	PaymentID  string `json:"paymentId"`
	CustomerID string `json:"customerId"`
	// Timeout is how long to wait for the payment, as a duration string ("1h").
	Timeout string `json:"timeout"`
}

type paymentConfirmed struct {
	PaymentID string `json:"paymentId"`
	Amount    int64  `json:"amount"`
}

var (
	mu    sync.Mutex
	calls = map[string]int{}
)

func count(key string) {
	mu.Lock()
	defer mu.Unlock()
	calls[key]++
}

func callsOf(key string) int {
	mu.Lock()
	defer mu.Unlock()
	return calls[key]
}

func provisionAfterPayment(ctx context.Context, jc *stackshift.JobContext) (any, error) {
	var o order
	if err := jc.Decode(&o); err != nil {
		return nil, stackshift.NonRetryable(err)
	}
	timeout, err := stackshift.ParseDuration(o.Timeout)
	if err != nil {
		return nil, stackshift.NonRetryable(err)
	}
	if _, err := jc.Step.Run(ctx, "create-invoice", func(ctx context.Context) (any, error) {
		count("invoice:" + o.PaymentID)
		fmt.Printf("  billing: invoice created for %s\n", o.PaymentID)
		return "inv_" + o.PaymentID, nil
	}); err != nil {
		return nil, err
	}
	fmt.Printf("handler: run %s waits for payment %s\n", jc.RunID, o.PaymentID)
	event, err := jc.Step.WaitForEvent(ctx, "wait-for-payment", stackshift.WaitOptions{Event: "payment.confirmed", Key: o.PaymentID, Timeout: timeout})
	if err != nil {
		return nil, err
	}
	if event == nil {
		jc.Log.Warn("payment not confirmed in time", "paymentId", o.PaymentID, "timeout", o.Timeout)
		return nil, stackshift.NonRetryablef("the payment was not confirmed within %s", o.Timeout)
	}
	var payment paymentConfirmed
	if err := event.Decode(&payment); err != nil {
		return nil, stackshift.NonRetryable(err)
	}
	jc.Log.Info("payment confirmed", "paymentId", o.PaymentID, "amount", payment.Amount)
	if _, err := jc.Step.Run(ctx, "provision-customer-resources", func(ctx context.Context) (any, error) {
		count("provision:" + o.CustomerID)
		fmt.Printf("  infrastructure: provisioned %s\n", o.CustomerID)
		return "cl_" + o.CustomerID, nil
	}); err != nil {
		return nil, err
	}
	return map[string]any{"provisioned": true, "amount": payment.Amount}, nil
}

// confirmed publishes the provider's webhook; its event id makes a repeated delivery a no-op.
func confirmed(ctx context.Context, client *stackshift.Client, paymentID string, amount int64) (*stackshift.PublishResult, error) {
	return client.Events().Publish(ctx, "payment.confirmed", paymentConfirmed{PaymentID: paymentID, Amount: amount},
		&stackshift.PublishOptions{Key: paymentID, ID: "provider:" + paymentID})
}

func waitUntilWaiting(ctx context.Context, client *stackshift.Client, runID string) bool {
	for range 300 {
		run, err := client.GetRun(ctx, runID)
		if err != nil {
			check.Fatal(err)
		}
		if run.Status == stackshift.StatusWaiting {
			if w := run.Wait; w != nil {
				fmt.Printf("run %s is waiting at %s for %s %s\n", runID, w.StepID, w.EventName, w.CorrelationKey)
			}
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func report(run *stackshift.Run) {
	fmt.Printf("run %s is %s after %d attempt(s); result %s\n", run.ID, run.Status, run.Attempt, run.Result)
	for _, s := range run.Steps {
		fmt.Printf("  %s %s recorded by attempt %d\n", s.Kind, s.ID, s.Attempt)
	}
}

func main() {
	ctx := context.Background()
	client, err := stackshift.New(stackshift.Options{})
	if err != nil {
		check.Fatal(err)
	}
	defer client.Close()
	fmt.Println("server:", client.Endpoint())
	suffix := check.UniqueSuffix()
	newOrder := func(n int, timeout string) order {
		return order{PaymentID: fmt.Sprintf("pay_%s_%d", suffix, n), CustomerID: fmt.Sprintf("cus_%s_%d", suffix, n), Timeout: timeout}
	}
	start := func(o order) string {
		started, err := client.Start(ctx, job, o, nil)
		if err != nil {
			check.Fatal(err)
		}
		fmt.Printf("started run %s (payment %s)\n", started.ID, o.PaymentID)
		return started.ID
	}
	wait := func(id string) *stackshift.Run {
		run, err := client.WaitForRun(ctx, id, 30*time.Second)
		if err != nil {
			check.Fatal(err)
		}
		report(run)
		return run
	}

	// 1. The webhook arrives before the run reaches its wait (no worker runs it yet).
	early := newOrder(1, "1h")
	run1 := start(early)
	published, err := confirmed(ctx, client, early.PaymentID, 4200)
	if err != nil {
		check.Fatal(err)
	}
	fmt.Printf("webhook for %s published early: resumed %d run(s)\n", early.PaymentID, published.ResumedRunCount)
	check.That(published.ResumedRunCount == 0, "the early event resumed nothing (the run was not waiting yet)")

	worker := client.NewWorker(stackshift.WorkerOptions{Concurrency: 2, ShutdownGrace: 5 * time.Second})
	worker.Job(job, provisionAfterPayment)
	worker.Start()
	done1 := wait(run1)

	// 2. The webhook arrives after the run reached its wait.
	late := newOrder(2, "1h")
	run2 := start(late)
	check.That(waitUntilWaiting(ctx, client, run2), "run 2 is waiting for its payment")
	check.That(worker.ActiveTasks() == 0, "a waiting run holds no worker slot")
	other, err := confirmed(ctx, client, "pay_"+suffix+"_unrelated", 1)
	if err != nil {
		check.Fatal(err)
	}
	check.That(other.ResumedRunCount == 0, "an event for another payment id resumed nothing")
	published, err = confirmed(ctx, client, late.PaymentID, 9900)
	if err != nil {
		check.Fatal(err)
	}
	fmt.Printf("webhook for %s published late: resumed %v\n", late.PaymentID, published.ResumedRunIDs)
	check.That(slices.Equal(published.ResumedRunIDs, []string{run2}), "the late event resumed exactly run 2")
	again, err := confirmed(ctx, client, late.PaymentID, 9900)
	if err != nil {
		check.Fatal(err)
	}
	check.That(again.Duplicate && again.ResumedRunCount == 0, "the webhook delivered twice was stored once")
	done2 := wait(run2)

	// 3. The webhook never arrives: the wait times out.
	never := newOrder(3, "1s")
	done3 := wait(start(never))
	_ = worker.Shutdown(ctx)

	for n, c := range []struct {
		run    *stackshift.Run
		o      order
		amount int64
	}{{done1, early, 4200}, {done2, late, 9900}} {
		want := fmt.Sprintf(`{"amount":%d,"provisioned":true}`, c.amount)
		check.That(c.run.Status == stackshift.StatusCompleted && string(c.run.Result) == want, fmt.Sprintf("run %d completed with amount %d", n+1, c.amount))
		check.That(c.run.Attempt == 1 && len(c.run.Attempts) == 1, fmt.Sprintf("run %d took one attempt (waiting is not a retry)", n+1))
		step := c.run.Step("wait-for-payment")
		check.That(step != nil && step.Kind == stackshift.StepKindEvent, fmt.Sprintf("run %d's steps show the event it received", n+1))
		check.That(callsOf("invoice:"+c.o.PaymentID) == 1, fmt.Sprintf("run %d created its invoice once", n+1))
		check.That(len(c.run.Logs) == 1 && c.run.Logs[0].Message == "payment confirmed", fmt.Sprintf("run %d logged the confirmation", n+1))
	}
	check.That(done3.Status == stackshift.StatusFailed && done3.Failure != nil && done3.Failure.Message == "the payment was not confirmed within 1s",
		"run 3 failed when its wait timed out")
	check.That(callsOf("provision:"+never.CustomerID) == 0, "run 3 provisioned nothing")
	var timedOut bool
	for _, e := range done3.Timeline {
		timedOut = timedOut || e.Kind == stackshift.TimelineWaitTimedOut
	}
	check.That(timedOut, "run 3's timeline shows the wait timing out")
	check.Finish("payment_confirmation")
}
