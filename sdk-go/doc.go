// Package stackshift is the Go SDK for StackShift durable jobs: a client that starts,
// inspects and controls runs, and a worker that executes job handlers whose steps are
// memoized, so a retried attempt replays completed steps instead of running them again.
//
//	client, err := stackshift.New(stackshift.Options{APIKey: os.Getenv("STACKSHIFT_API_KEY")})
//	if err != nil { ... }
//	defer client.Close()
//
//	worker := client.NewWorker(stackshift.WorkerOptions{Queues: []string{"payments"}})
//	worker.Job("provisionAfterPayment", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
//		var p struct{ PaymentID, CustomerID string }
//		if err := jc.Decode(&p); err != nil {
//			return nil, stackshift.NonRetryable(err)
//		}
//		payment, err := stackshift.RunStep(ctx, jc.Step, "verify-payment", func(ctx context.Context) (Payment, error) {
//			return verifyPayment(ctx, p.PaymentID)
//		})
//		if err != nil {
//			return nil, err
//		}
//		if payment.Status != "paid" {
//			return nil, errors.New("Payment is not complete")
//		}
//		return map[string]bool{"provisioned": true}, nil
//	})
//	go worker.Run(ctx) // until ctx is cancelled, then a graceful shutdown
//
//	run, err := client.Start(ctx, "provisionAfterPayment", payload, &stackshift.StartOptions{
//		QueueName: "payments", IdempotencyKey: "provision:pay_1", IdempotencyTTL: 30 * 24 * time.Hour,
//	})
//
// Handlers also get jc.Step.Sleep / SleepUntil (durable sleeps), jc.Step.WaitForEvent (an
// event, or nil on timeout), jc.State (the state store, journaled in the run) and jc.Log (the
// run's logger), child runs (jc.Step.Invoke, InvokeAll, InvokeChild; a failed child is a
// *ChildFailedError) and combined waits (jc.Step.WaitForAny, WaitForAll over EventItem,
// SleepItem and SleepUntilItem). The client adds Events (publish, list), State (outside
// runs), queue management (Queue(name).Configure/Get/Pause/Resume, ListQueues), Schedules
// (cron or interval), Triggers (event triggers; jobs can also declare them with
// JobOptions.Triggers) and the run's Timeline and Logs on GetRun.
//
// # Guarantees
//
// Code inside a step that has not completed runs at least once; each step's recorded result,
// and the run's result, are recorded exactly once. Step.Run returns only once the server has
// stored the step's result.
//
// # Configuration
//
// Options left empty come from STACKSHIFT_ENDPOINT (default http://127.0.0.1:7447) and
// STACKSHIFT_API_KEY. The key is sent as "authorization: Bearer <key>".
package stackshift
