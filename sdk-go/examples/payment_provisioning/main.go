// Seed "Payment to provisioning workflow": provisionAfterPayment verifies the payment,
// provisions resources, enables the plan and sends a receipt, each in a step. Provisioning
// times out on the first attempt; the retry replays verify-payment from the journal instead
// of charging the payment provider again.
//
//	cd sdk-go && go run ./examples/payment_provisioning
package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/stackshift/stackshift/sdk-go"
	"github.com/stackshift/stackshift/sdk-go/examples/internal/check"
)

var (
	mu    sync.Mutex
	calls = map[string]int{}
)

func count(what string) int {
	mu.Lock()
	defer mu.Unlock()
	calls[what]++
	return calls[what]
}

type payment struct {
	ID            string `json:"id"`
	Status        string `json:"status"`
	CustomerEmail string `json:"customerEmail"`
}

func verifyPayment(id string) (payment, error) {
	count("verifyPayment")
	return payment{ID: id, Status: "paid", CustomerEmail: "ada@example.com"}, nil
}

func provisionCustomerResources(customerID string) (any, error) {
	if count("provisionCustomerResources") == 1 {
		return nil, fmt.Errorf("provisioning API timed out for %s (simulated)", customerID)
	}
	return map[string]string{"workspace": "ws_" + customerID}, nil
}

func enablePaidPlan(customerID string) (any, error) {
	count("enablePaidPlan")
	return map[string]string{"customerId": customerID, "plan": "pro"}, nil
}

func sendReceipt(email string) (any, error) {
	count("sendReceipt")
	return map[string]string{"to": email}, nil
}

type paymentConfirmed struct {
	PaymentID  string `json:"paymentId"`
	CustomerID string `json:"customerId"`
}

// provisionAfterPayment is the seed's handler, step for step.
func provisionAfterPayment(ctx context.Context, jc *stackshift.JobContext) (any, error) {
	var p paymentConfirmed
	if err := jc.Decode(&p); err != nil {
		return nil, stackshift.NonRetryable(err)
	}
	pay, err := stackshift.RunStep(ctx, jc.Step, "verify-payment", func(ctx context.Context) (payment, error) {
		return verifyPayment(p.PaymentID)
	})
	if err != nil {
		return nil, err
	}
	if pay.Status != "paid" {
		return nil, errors.New("Payment is not complete")
	}
	steps := []struct {
		id string
		fn func() (any, error)
	}{
		{"provision-customer-resources", func() (any, error) { return provisionCustomerResources(p.CustomerID) }},
		{"enable-plan", func() (any, error) { return enablePaidPlan(p.CustomerID) }},
		{"send-receipt", func() (any, error) { return sendReceipt(pay.CustomerEmail) }},
	}
	for _, s := range steps {
		if _, err := jc.Step.Run(ctx, s.id, func(context.Context) (any, error) { return s.fn() }); err != nil {
			return nil, err
		}
	}
	return map[string]bool{"provisioned": true}, nil
}

func main() {
	ctx := context.Background()
	client, err := stackshift.New(stackshift.Options{})
	if err != nil {
		check.Fatal(err)
	}
	defer client.Close()
	worker := client.NewWorker(stackshift.WorkerOptions{Queues: []string{"payments"}, ShutdownGrace: 5 * time.Second})
	worker.Job("provisionAfterPayment", provisionAfterPayment)
	worker.Start()

	paymentID := "pay_" + check.UniqueSuffix()
	started, err := client.Start(ctx, "provisionAfterPayment", paymentConfirmed{PaymentID: paymentID, CustomerID: "cus_42"}, &stackshift.StartOptions{
		QueueName:      "payments",
		IdempotencyKey: "provision:" + paymentID,
		IdempotencyTTL: stackshift.MustParseDuration("30d"),
		RetryPolicy:    &stackshift.RetryPolicy{MaxAttempts: 3, InitialInterval: 200 * time.Millisecond},
	})
	if err != nil {
		check.Fatal(err)
	}
	run, err := client.WaitForRun(ctx, started.ID, 20*time.Second)
	_ = worker.Shutdown(ctx)
	if err != nil {
		check.Fatal(err)
	}
	fmt.Printf("run %s is %s after %d attempt(s); result %s\n", run.ID, run.Status, run.Attempt, run.Result)
	for _, s := range run.Steps {
		fmt.Printf("  step %s recorded by attempt %d\n", s.ID, s.Attempt)
	}
	mu.Lock()
	defer mu.Unlock()
	check.That(run.Status == stackshift.StatusCompleted, "the run completed")
	check.That(run.Attempt == 2, "it took exactly two attempts")
	check.That(string(run.Result) == `{"provisioned":true}`, `the result is {"provisioned":true}`)
	check.That(calls["verifyPayment"] == 1, "verify-payment ran once (replayed on attempt 2)")
	check.That(calls["provisionCustomerResources"] == 2, "provisioning ran twice (failed, then succeeded)")
	check.That(calls["enablePaidPlan"] == 1 && calls["sendReceipt"] == 1, "enable-plan and send-receipt ran once")
	v := run.Step("verify-payment")
	check.That(v != nil && v.Attempt == 1, "verify-payment was recorded by attempt 1")
	check.Finish("payment_provisioning")
}
