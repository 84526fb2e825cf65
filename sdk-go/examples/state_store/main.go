// Seed "State": durable job memory without a table per workflow concern. The handler of
// importContacts tracks progress with State.Set/Get/Delete, leaves a temporary webhook marker
// with an expiry (SetOptions.ExpiresAt), counts processed rows with State.Increment, and takes
// a short lock to own a shared resource (the fencing token goes to the protected system). A
// webhook is deduplicated with an idempotency key on queue("webhooks").
//
// The first attempt fails after the counters moved; the retry replays the journaled state
// calls (state:1, state:2, ...), so every counter is applied once.
//
// Checks: the run completed on attempt 2; the processed counter equals the row count; the
// progress key is deleted at the end; the webhook marker carries its expiry; the lock was
// released; the duplicate webhook enqueue returned the same run.
//
//	cd sdk-go && go run ./examples/state_store
package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stackshift/stackshift/sdk-go"
	"github.com/stackshift/stackshift/sdk-go/examples/internal/check"
)

const rows = 250

type progress struct {
	Processed int `json:"processed"`
	Total     int `json:"total"`
}

// publishProgress stands in for a notification. It is not a step, so a replayed attempt calls
// it again for the rows it replays (the seed's snippet has the same shape).
func publishProgress(importID string, processed int64) {
	fmt.Printf("  progress: import %s processed %d rows\n", importID, processed)
}

func importContacts(ctx context.Context, jc *stackshift.JobContext) (any, error) {
	var p struct {
		ImportID string `json:"importId"`
	}
	if err := jc.Decode(&p); err != nil {
		return nil, stackshift.NonRetryable(err)
	}
	state := jc.State

	// A short lock: one owner rebuilds the customer search index at a time.
	lock, err := state.Lock(ctx, "search-index:"+p.ImportID, stackshift.LockOptions{TTL: 30 * time.Second, Wait: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	if lock == nil {
		return nil, errors.New("the search index is being rebuilt elsewhere; retry later")
	}
	jc.Log.Info("search index locked", "fencingToken", lock.Token)

	progressKey := "imports:" + p.ImportID + ":progress"
	if _, err := state.Set(ctx, progressKey, progress{Processed: 0, Total: rows}, nil); err != nil {
		return nil, err
	}
	var processed int64
	for range rows {
		if processed, err = state.Increment(ctx, "imports:"+p.ImportID+":processed"); err != nil {
			return nil, err
		}
		if processed%100 == 0 {
			publishProgress(p.ImportID, processed)
		}
		if processed == 120 && jc.Attempt == 1 {
			return nil, errors.New("contacts API timed out (simulated)")
		}
	}
	if _, err := state.Set(ctx, progressKey, progress{Processed: int(processed), Total: rows}, nil); err != nil {
		return nil, err
	}
	var current progress
	if _, err := state.Get(ctx, progressKey, &current); err != nil {
		return nil, err
	}
	if current.Processed == current.Total {
		if _, err := state.Delete(ctx, progressKey); err != nil {
			return nil, err
		}
	}
	// A temporary marker that expires by itself in 7 days.
	if _, err := state.Set(ctx, "webhooks:stripe:evt_"+p.ImportID, map[string]bool{"processed": true},
		&stackshift.SetOptions{ExpiresAt: time.Now().Add(7 * 24 * time.Hour)}); err != nil {
		return nil, err
	}
	if err := lock.Release(ctx); err != nil {
		return nil, err
	}
	return map[string]int64{"processed": processed}, nil
}

func main() {
	ctx := context.Background()
	client, err := stackshift.New(stackshift.Options{})
	if err != nil {
		check.Fatal(err)
	}
	defer client.Close()
	importID := "imp_" + check.UniqueSuffix()

	worker := client.NewWorker(stackshift.WorkerOptions{Queues: []string{"default", "webhooks"}, ShutdownGrace: 5 * time.Second})
	worker.Job("importContacts", importContacts)
	worker.Job("processStripeWebhook", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		return map[string]bool{"handled": true}, nil
	})
	worker.Start()

	started, err := client.Start(ctx, "importContacts", map[string]string{"importId": importID}, &stackshift.StartOptions{
		RetryPolicy: &stackshift.RetryPolicy{MaxAttempts: 3, InitialInterval: 200 * time.Millisecond},
	})
	if err != nil {
		check.Fatal(err)
	}
	run, err := client.WaitForRun(ctx, started.ID, 60*time.Second)
	if err != nil {
		check.Fatal(err)
	}
	fmt.Printf("run %s is %s after %d attempt(s); result %s\n", run.ID, run.Status, run.Attempt, run.Result)

	// Webhook deduplication: the provider delivers the same event twice.
	event := map[string]string{"eventId": "evt_" + importID, "type": "invoice.paid"}
	first, err := client.Queue("webhooks").Enqueue(ctx, "processStripeWebhook", event, &stackshift.StartOptions{IdempotencyKey: "stripe:evt_" + importID})
	if err != nil {
		check.Fatal(err)
	}
	second, err := client.Queue("webhooks").Enqueue(ctx, "processStripeWebhook", event, &stackshift.StartOptions{IdempotencyKey: "stripe:evt_" + importID})
	if err != nil {
		check.Fatal(err)
	}
	webhook, err := client.WaitForRun(ctx, first.ID, 30*time.Second)
	if err != nil {
		check.Fatal(err)
	}
	_ = worker.Shutdown(ctx)

	st := client.State()
	var processed int64
	if _, err := st.Get(ctx, "imports:"+importID+":processed", &processed); err != nil {
		check.Fatal(err)
	}
	progressLeft, err := st.GetEntry(ctx, "imports:"+importID+":progress")
	if err != nil {
		check.Fatal(err)
	}
	marker, err := st.GetEntry(ctx, "webhooks:stripe:evt_"+importID)
	if err != nil {
		check.Fatal(err)
	}
	free, err := st.Lock(ctx, "search-index:"+importID, stackshift.LockOptions{TTL: time.Second})
	if err != nil {
		check.Fatal(err)
	}
	check.That(run.Status == stackshift.StatusCompleted && run.Attempt == 2, "the import completed on attempt 2")
	check.That(string(run.Result) == fmt.Sprintf(`{"processed":%d}`, rows), fmt.Sprintf(`the result is {"processed":%d}`, rows))
	check.That(processed == rows, fmt.Sprintf("the durable counter is %d (increments of the failed attempt applied once)", rows))
	check.That(progressLeft == nil, "the progress key was deleted once processed == total")
	check.That(marker != nil && marker.ExpiresAt != nil && time.Until(*marker.ExpiresAt) > 6*24*time.Hour, "the webhook marker expires in 7 days")
	check.That(free != nil, "the search-index lock was released")
	check.That(second.Duplicate && second.ID == first.ID && webhook.Status == stackshift.StatusCompleted, "the duplicate webhook was deduplicated")
	if free != nil {
		_ = free.Release(ctx)
	}
	check.Finish("state_store")
}
