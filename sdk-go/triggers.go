package stackshift

// Event triggers: Client.Triggers subscribes jobs to events, and JobOptions.Triggers declares
// them on a worker's job registration (the worker creates them when it starts). Publishing a
// matching event starts one run of each subscribed job, in the same transaction as the event,
// with the event as payload (TriggeredEvent); a duplicate event id starts nothing. See
// docs/schedules.md.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// TriggeredEvent is the payload of a run started by an event trigger: the event, as JSON
// {"id","name","correlationKey","payload","publishedAt"}. Decode it with
// JobContext.TriggeredEvent (or JobContext.Decode).
type TriggeredEvent struct {
	// ID is the event's id.
	ID string `json:"id"`
	// Name is the event's name.
	Name string `json:"name"`
	// CorrelationKey is the event's correlation key (empty when none).
	CorrelationKey string `json:"correlationKey"`
	// Payload is the event's JSON payload.
	Payload json.RawMessage `json:"payload"`
	// PublishedAtMillis is when the event was published, in milliseconds since the Unix epoch.
	PublishedAtMillis int64 `json:"publishedAt"`
}

// PublishedAt is when the event was published.
func (e *TriggeredEvent) PublishedAt() time.Time { return time.UnixMilli(e.PublishedAtMillis).UTC() }

// Decode unmarshals the event's payload into v.
func (e *TriggeredEvent) Decode(v any) error { return json.Unmarshal(rawJSON(e.Payload), v) }

// TriggeredEvent decodes the payload of a run started by an event trigger.
func (jc *JobContext) TriggeredEvent() (*TriggeredEvent, error) {
	var ev TriggeredEvent
	if err := json.Unmarshal(jc.Payload, &ev); err != nil {
		return nil, NonRetryablef("the payload of run %s is not a triggered event: %v", jc.RunID, err)
	}
	if ev.ID == "" || ev.Name == "" {
		return nil, NonRetryablef("the payload of run %s is not a triggered event (no id or name)", jc.RunID)
	}
	return &ev, nil
}

// NewEventTrigger is a trigger to create: job subscribed to the event Event.
type NewEventTrigger struct {
	// Event is the event name (required).
	Event string
	// CorrelationKey, when set, matches only events published with exactly this key; empty
	// matches events with any key (or none).
	CorrelationKey string
	// Job is the job to start (required).
	Job string
	// Queue is the runs' queue (default "default").
	Queue string
	// RetryPolicy overrides the runs' retry policy.
	RetryPolicy *RetryPolicy
	// LeaseTimeout is the lease of the runs' attempts (1 s to 1 h).
	LeaseTimeout time.Duration
	// Priority orders the runs' delivery within the queue (-1000 to 1000).
	Priority int32
}

func (t NewEventTrigger) toPB() *pb.CreateEventTriggerRequest {
	req := &pb.CreateEventTriggerRequest{EventName: t.Event, CorrelationKey: t.CorrelationKey, Job: t.Job, Queue: t.Queue, Priority: t.Priority}
	if t.RetryPolicy != nil {
		req.RetryPolicy = t.RetryPolicy.toPB()
	}
	if t.LeaseTimeout != 0 {
		req.LeaseTimeout = durationpb.New(t.LeaseTimeout)
	}
	return req
}

// EventTrigger is a trigger as stored by the server.
type EventTrigger struct {
	// ID is assigned by the server (a UUIDv7); Triggers.Delete takes it.
	ID             string
	Event          string
	CorrelationKey string
	Job            string
	Queue          string
	RetryPolicy    *RetryPolicy
	// LeaseTimeout is 0 when unset.
	LeaseTimeout time.Duration
	Priority     int32
	CreatedAt    time.Time
}

func triggerFromPB(t *pb.EventTrigger) (*EventTrigger, error) {
	if t == nil {
		return nil, &Error{Code: 13, Message: "unexpected response from server: no trigger"}
	}
	out := &EventTrigger{ID: t.GetId(), Event: t.GetEventName(), CorrelationKey: t.GetCorrelationKey(), Job: t.GetJob(), Queue: t.GetQueue(),
		RetryPolicy: retryPolicyFromPB(t.GetRetryPolicy()), Priority: t.GetPriority(), CreatedAt: t.GetCreatedAt().AsTime()}
	if t.GetLeaseTimeout() != nil {
		out.LeaseTimeout = t.GetLeaseTimeout().AsDuration()
	}
	return out, nil
}

// CreatedEventTrigger is what Triggers.Create answers.
type CreatedEventTrigger struct {
	// Trigger is the trigger as stored.
	Trigger *EventTrigger
	// Created is false when it already existed with the same options.
	Created bool
}

// ListTriggersOptions filter and page Triggers.List.
type ListTriggersOptions struct {
	// Event keeps only the triggers of this event name.
	Event string
	// Job keeps only the triggers of this job.
	Job string
	// PageSize is 1-1000 (0 = 50).
	PageSize  int32
	PageToken string
}

// EventTriggerPage is one page of Triggers.List.
type EventTriggerPage struct {
	Triggers []*EventTrigger
	// NextPageToken is empty at the end.
	NextPageToken string
}

// Triggers manages event triggers (Client.Triggers).
type Triggers struct {
	client pb.TriggerServiceClient
}

// Triggers returns the event triggers API.
func (c *Client) Triggers() *Triggers { return &Triggers{client: c.triggers} }

// Create subscribes a job to an event. There is at most one trigger per (event, correlation
// key, job): creating it again with the same options answers the stored trigger with Created
// false; with other options it fails with ErrAlreadyExists. An event name may have at most
// 100 triggers (ErrResourceExhausted).
func (t *Triggers) Create(ctx context.Context, n NewEventTrigger) (*CreatedEventTrigger, error) {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := t.client.CreateEventTrigger(cctx, n.toPB())
	if err != nil {
		return nil, fromRPC(err)
	}
	trigger, err := triggerFromPB(resp.GetTrigger())
	if err != nil {
		return nil, err
	}
	return &CreatedEventTrigger{Trigger: trigger, Created: resp.GetCreated()}, nil
}

// List returns one page of triggers.
func (t *Triggers) List(ctx context.Context, opts ListTriggersOptions) (*EventTriggerPage, error) {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := t.client.ListEventTriggers(cctx, &pb.ListEventTriggersRequest{EventName: opts.Event, Job: opts.Job, PageSize: opts.PageSize, PageToken: opts.PageToken})
	if err != nil {
		return nil, fromRPC(err)
	}
	page := &EventTriggerPage{NextPageToken: resp.GetNextPageToken()}
	for _, tr := range resp.GetTriggers() {
		trigger, err := triggerFromPB(tr)
		if err != nil {
			return nil, err
		}
		page.Triggers = append(page.Triggers, trigger)
	}
	return page, nil
}

// Delete removes a trigger by id (ErrNotFound for an unknown id).
func (t *Triggers) Delete(ctx context.Context, id string) error {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	_, err := t.client.DeleteEventTrigger(cctx, &pb.DeleteEventTriggerRequest{TriggerId: id})
	return fromRPC(err)
}

// JobTrigger declares an event trigger on a job registration (JobOptions.Triggers): the
// worker creates it when it starts, before it polls.
type JobTrigger struct {
	// Event is the event name (required).
	Event string
	// CorrelationKey, when set, matches only events with exactly this key; empty matches
	// any key.
	CorrelationKey string
	// Queue is the runs' queue; empty = the worker's first queue.
	Queue string
	// RetryPolicy overrides the runs' retry policy.
	RetryPolicy *RetryPolicy
	// LeaseTimeout is the lease of the runs' attempts; 0 = unset (the job's LeaseTimeout
	// option then applies when a worker of this job takes the run).
	LeaseTimeout time.Duration
	// Priority orders the runs' delivery within the queue (-1000 to 1000).
	Priority int32
}

// TriggerDeclarationError means the server refused an event trigger declared on a job
// registration (or could not be reached), so the worker did not start. Err is the call's
// *Error: test it with errors.Is (e.g. ErrAlreadyExists when a trigger for the same event,
// key and job exists with other options: delete it or align the declaration; ErrUnavailable
// when the server could not be reached: start again later).
type TriggerDeclarationError struct {
	// Job is the job that declared the trigger.
	Job string
	// Event and CorrelationKey are the declaration's.
	Event          string
	CorrelationKey string
	// Err is the refusal.
	Err error
}

// Error implements error.
func (e *TriggerDeclarationError) Error() string {
	key := ""
	if e.CorrelationKey != "" {
		key = fmt.Sprintf(" (correlation key %q)", e.CorrelationKey)
	}
	return fmt.Sprintf("the worker could not create the event trigger of job %s on event %s%s: %v", e.Job, e.Event, key, e.Err)
}

// Unwrap returns the server's error.
func (e *TriggerDeclarationError) Unwrap() error { return e.Err }
