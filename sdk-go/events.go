package stackshift

// Events: Client.Events() publishes events (which resume the runs waiting for them) and lists
// stored events; Event is an event as stored, and what Step.WaitForEvent returns.

import (
	"context"
	"encoding/json"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// Event is a published event.
type Event struct {
	ID   string
	Name string
	// CorrelationKey is empty when the event has none.
	CorrelationKey string
	// Payload is the event's JSON payload.
	Payload     json.RawMessage
	PublishedAt time.Time
}

// Decode unmarshals the event's payload into v.
func (e *Event) Decode(v any) error { return json.Unmarshal(e.Payload, v) }

func eventFromPB(e *pb.Event) *Event {
	return &Event{ID: e.GetId(), Name: e.GetName(), CorrelationKey: e.GetCorrelationKey(), Payload: rawJSON(e.GetPayload()), PublishedAt: e.GetPublishedAt().AsTime()}
}

// Events publishes and lists events (Client.Events).
type Events struct {
	client pb.EventsServiceClient
}

// Events returns the events API.
func (c *Client) Events() *Events { return &Events{client: c.events} }

// PublishOptions are the options of Events.Publish.
type PublishOptions struct {
	// ID deduplicates: publishing an id that is already stored does nothing and answers
	// Duplicate (e.g. the provider's webhook event id). Empty = the server assigns one.
	ID string
	// Key is the correlation key: the event only resumes waits for the same key. Empty = no
	// key (it matches waits without a key).
	Key string
}

// PublishResult tells what a published event did.
type PublishResult struct {
	// Event is the stored event (for a duplicate: the one stored first under this id).
	Event *Event
	// Duplicate is true when the id was already stored: nothing was stored or resumed.
	Duplicate bool
	// ResumedRunCount is how many waiting runs this event resumed.
	ResumedRunCount int64
	// ResumedRunIDs are the resumed runs' ids, at most 100 (oldest wait first).
	ResumedRunIDs []string
	// StartedRunIDs are the runs this event's triggers started (see Client.Triggers and
	// JobOptions.Triggers); empty for a duplicate.
	StartedRunIDs []string
}

// Publish stores the event name with payload (any JSON-serializable value) and resumes every
// run waiting for it, in one transaction. opts may be nil.
func (e *Events) Publish(ctx context.Context, name string, payload any, opts *PublishOptions) (*PublishResult, error) {
	body, err := marshalJSON(payload, "the event payload")
	if err != nil {
		return nil, err
	}
	req := &pb.PublishEventRequest{Name: name, Payload: body}
	if opts != nil {
		req.Id, req.CorrelationKey = opts.ID, opts.Key
	}
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := e.client.PublishEvent(cctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	if resp.GetEvent() == nil {
		return nil, &Error{Code: 13, Message: "unexpected response from server: no event"}
	}
	return &PublishResult{Event: eventFromPB(resp.GetEvent()), Duplicate: resp.GetDuplicate(), ResumedRunCount: resp.GetResumedRunCount(), ResumedRunIDs: resp.GetResumedRunIds(), StartedRunIDs: resp.GetStartedRunIds()}, nil
}

// ListEventsOptions filter Events.List. Results are newest first.
type ListEventsOptions struct {
	Name            string
	CorrelationKey  string
	PublishedAfter  time.Time
	PublishedBefore time.Time
	// PageSize is 1-1000 (0 = 50).
	PageSize  int32
	PageToken string
}

// EventPage is one page of events.
type EventPage struct {
	Events []*Event
	// NextPageToken is empty at the end.
	NextPageToken string
}

// List returns one page of stored events, newest first.
func (e *Events) List(ctx context.Context, opts ListEventsOptions) (*EventPage, error) {
	req := &pb.ListEventsRequest{Name: opts.Name, CorrelationKey: opts.CorrelationKey, PageSize: opts.PageSize, PageToken: opts.PageToken}
	if !opts.PublishedAfter.IsZero() {
		req.PublishedAfter = timestamppb.New(opts.PublishedAfter)
	}
	if !opts.PublishedBefore.IsZero() {
		req.PublishedBefore = timestamppb.New(opts.PublishedBefore)
	}
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := e.client.ListEvents(cctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	page := &EventPage{NextPageToken: resp.GetNextPageToken()}
	for _, ev := range resp.GetEvents() {
		page.Events = append(page.Events, eventFromPB(ev))
	}
	return page, nil
}
