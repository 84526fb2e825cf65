// Seed "Send verification email": enqueue sendVerificationEmail on the emails queue with an
// idempotency key, enqueue it again with the same key, and check that the second call is a
// duplicate of the same run and that exactly one email went out.
//
// Run against a server at STACKSHIFT_ENDPOINT (default http://127.0.0.1:7447):
//
//	cd sdk-go && go run ./examples/verification_email
package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/stackshift/stackshift/sdk-go"
	"github.com/stackshift/stackshift/sdk-go/examples/internal/check"
)

var (
	mu     sync.Mutex
	outbox = map[string]int{}
)

// sendMail stands in for the mail provider's API.
func sendMail(to, subject string) string {
	mu.Lock()
	defer mu.Unlock()
	outbox[to]++
	fmt.Printf("  mail provider: sent %q to %s\n", subject, to)
	return "msg_" + check.UniqueSuffix()
}

type signup struct {
	UserID string `json:"userId"`
	Email  string `json:"email"`
}

func main() {
	ctx := context.Background()
	client, err := stackshift.New(stackshift.Options{})
	if err != nil {
		check.Fatal(err)
	}
	defer client.Close()

	worker := client.NewWorker(stackshift.WorkerOptions{Queues: []string{"emails"}, ShutdownGrace: 5 * time.Second})
	worker.Job("sendVerificationEmail", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		var p signup
		if err := jc.Decode(&p); err != nil {
			return nil, stackshift.NonRetryable(err)
		}
		messageID, err := stackshift.RunStep(ctx, jc.Step, "send-verification-email", func(ctx context.Context) (string, error) {
			return sendMail(p.Email, "Verify your email address"), nil
		})
		if err != nil {
			return nil, err
		}
		return map[string]string{"messageId": messageID}, nil
	})
	worker.Start()

	userID := "user_" + check.UniqueSuffix()
	p := signup{UserID: userID, Email: userID + "@example.com"}
	// The seed, in Go:
	first, err := client.Queue("emails").Enqueue(ctx, "sendVerificationEmail", p, &stackshift.StartOptions{IdempotencyKey: "verify:" + userID})
	if err != nil {
		check.Fatal(err)
	}
	second, err := client.Queue("emails").Enqueue(ctx, "sendVerificationEmail", p, &stackshift.StartOptions{IdempotencyKey: "verify:" + userID})
	if err != nil {
		check.Fatal(err)
	}
	run, err := client.WaitForRun(ctx, first.ID, 20*time.Second)
	_ = worker.Shutdown(ctx)
	if err != nil {
		check.Fatal(err)
	}
	fmt.Printf("run %s is %s; result %s\n", run.ID, run.Status, run.Result)
	check.That(!first.Duplicate, "the first enqueue created a run")
	check.That(second.Duplicate && second.ID == first.ID, "the second enqueue is a duplicate of the same run")
	check.That(run.Status == stackshift.StatusCompleted, "the run completed")
	check.That(run.Queue == "emails", "the run ran on the emails queue")
	mu.Lock()
	check.That(outbox[p.Email] == 1, "exactly one email was sent")
	mu.Unlock()
	check.Finish("verification_email")
}
