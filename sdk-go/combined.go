package stackshift

// Step.WaitForAny and Step.WaitForAll: one durable wait over several items (events and
// sleeps), with an optional timeout for the whole wait. Event items follow the inbox rules of
// Step.WaitForEvent (an event published after the run was created and before the wait still
// matches), and one event is taken by at most one item of a wait. See docs/events.md.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// WaitItem is one item of Step.WaitForAny / Step.WaitForAll: build it with EventItem,
// SleepItem or SleepUntilItem.
type WaitItem struct {
	item *pb.WaitItem
}

// EventItem resolves with the first event name with exactly correlationKey from the run's
// inbox (empty key = only events published without one).
func EventItem(name, correlationKey string) WaitItem {
	return WaitItem{&pb.WaitItem{Item: &pb.WaitItem_Event{Event: &pb.EventMatch{EventName: name, CorrelationKey: correlationKey}}}}
}

// SleepItem resolves after d, counted from when the server receives the wait.
func SleepItem(d time.Duration) WaitItem {
	return WaitItem{&pb.WaitItem{Item: &pb.WaitItem_Sleep{Sleep: &pb.SleepWait{Duration: durationpb.New(d)}}}}
}

// SleepUntilItem resolves at t (a time in the past resolves at once).
func SleepUntilItem(t time.Time) WaitItem {
	return WaitItem{&pb.WaitItem{Item: &pb.WaitItem_Sleep{Sleep: &pb.SleepWait{Until: timestamppb.New(t)}}}}
}

// ItemResult is what one item of a combined wait resolved with: the event of an event item,
// or nil Event for a sleep item whose time came.
type ItemResult struct {
	// Event is the event that resolved an event item; nil for a sleep item.
	Event *Event
}

// Slept reports whether a sleep item resolved (rather than an event item).
func (r *ItemResult) Slept() bool { return r.Event == nil }

// AnyResult is the result of Step.WaitForAny.
type AnyResult struct {
	// TimedOut is true when the whole wait's timeout passed before any item resolved
	// (Index and Result are then unset).
	TimedOut bool
	// Index is the position, in the list given, of the item that resolved first.
	Index int
	// Result is what that item resolved with.
	Result *ItemResult
}

// AllResult is the result of Step.WaitForAll.
type AllResult struct {
	// TimedOut is true when the whole wait's timeout passed before every item resolved.
	TimedOut bool
	// Items holds each item's result in the order given; nil for an item that had not
	// resolved at the timeout.
	Items []*ItemResult
}

// CombinedWaitOptions are the options of Step.WaitForAny and Step.WaitForAll. Pass nil for no
// timeout (allowed only when a sleep item bounds the wait: ANY with a sleep item, or ALL of
// sleeps only; otherwise the server refuses the wait with INVALID_ARGUMENT).
type CombinedWaitOptions struct {
	// Timeout bounds the whole wait (0 to 365 days; 0 resolves from the inbox or times out
	// at once).
	Timeout time.Duration
}

// WaitForAny waits durably until the first of items resolves, or until the timeout of opts
// (nil: none) passes. When several items can resolve at once, the lowest index wins; event
// items of other indexes do not consume their events. While nothing resolved, the run is
// waiting and holds no worker slot; ids, replay and the *InterruptedError on suspension
// behave as for Sleep.
//
//	got, err := jc.Step.WaitForAny(ctx, "approval-or-reminder", []stackshift.WaitItem{
//		stackshift.EventItem("order.approved", orderID),
//		stackshift.SleepItem(24 * time.Hour),
//	}, nil)
//	if err != nil {
//		return nil, err
//	}
//	if got.Result.Slept() {
//		// a day passed: send a reminder
//	}
func (s *Step) WaitForAny(ctx context.Context, id string, items []WaitItem, opts *CombinedWaitOptions) (*AnyResult, error) {
	wait, err := combinedWait(id, items, opts)
	if err != nil {
		return nil, err
	}
	out, err := s.suspend(id, pb.JournalEntryKind_JOURNAL_ENTRY_KIND_ANY, &pb.SuspendRunRequest_Any{Any: wait}, "waiting for any of several items")
	if err != nil {
		return nil, err
	}
	res, err := anyFromJournal(out)
	if err != nil {
		return nil, NonRetryablef("the recorded result of wait %s: %v", id, err)
	}
	return res, nil
}

// WaitForAll waits durably until every one of items resolved, or until the timeout of opts
// (nil: none, allowed only when every item is a sleep) passes. Two items for the same event
// name and key take two successive events. Otherwise like WaitForAny.
//
//	all, err := jc.Step.WaitForAll(ctx, "both-signatures", []stackshift.WaitItem{
//		stackshift.EventItem("contract.signed", buyer),
//		stackshift.EventItem("contract.signed", seller),
//	}, &stackshift.CombinedWaitOptions{Timeout: 7 * 24 * time.Hour})
func (s *Step) WaitForAll(ctx context.Context, id string, items []WaitItem, opts *CombinedWaitOptions) (*AllResult, error) {
	wait, err := combinedWait(id, items, opts)
	if err != nil {
		return nil, err
	}
	out, err := s.suspend(id, pb.JournalEntryKind_JOURNAL_ENTRY_KIND_ALL, &pb.SuspendRunRequest_All{All: wait}, "waiting for all of several items")
	if err != nil {
		return nil, err
	}
	res, err := allFromJournal(out)
	if err != nil {
		return nil, NonRetryablef("the recorded result of wait %s: %v", id, err)
	}
	return res, nil
}

func combinedWait(id string, items []WaitItem, opts *CombinedWaitOptions) (*pb.CombinedWait, error) {
	wait := &pb.CombinedWait{Items: make([]*pb.WaitItem, 0, len(items))}
	for i, it := range items {
		if it.item == nil {
			return nil, NonRetryablef("wait %q: item %d is empty (build items with EventItem, SleepItem or SleepUntilItem)", id, i)
		}
		wait.Items = append(wait.Items, it.item)
	}
	if opts != nil {
		if opts.Timeout < 0 {
			return nil, NonRetryablef("wait %q: the timeout must not be negative", id)
		}
		wait.Timeout = durationpb.New(opts.Timeout)
	}
	return wait, nil
}

// itemResult decodes one item output: null for a sleep, an EVENT output for an event.
func itemResult(raw json.RawMessage) (*ItemResult, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return &ItemResult{}, nil
	}
	ev, err := eventFromJournal(raw)
	if err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, fmt.Errorf("an item recorded as timed out")
	}
	return &ItemResult{Event: ev}, nil
}

// anyFromJournal decodes an ANY output: {"timedOut":true} or {"timedOut":false,"index":I,"output":O}.
func anyFromJournal(out []byte) (*AnyResult, error) {
	var rec struct {
		TimedOut bool            `json:"timedOut"`
		Index    *int            `json:"index"`
		Output   json.RawMessage `json:"output"`
	}
	if err := json.Unmarshal(out, &rec); err != nil {
		return nil, err
	}
	if rec.TimedOut {
		return &AnyResult{TimedOut: true}, nil
	}
	if rec.Index == nil {
		return nil, fmt.Errorf("no index: %s", out)
	}
	r, err := itemResult(rec.Output)
	if err != nil {
		return nil, err
	}
	return &AnyResult{Index: *rec.Index, Result: r}, nil
}

// allFromJournal decodes an ALL output: {"timedOut":B,"outputs":[O,...],"resolved":[B,...]}.
func allFromJournal(out []byte) (*AllResult, error) {
	var rec struct {
		TimedOut bool              `json:"timedOut"`
		Outputs  []json.RawMessage `json:"outputs"`
		Resolved []bool            `json:"resolved"`
	}
	if err := json.Unmarshal(out, &rec); err != nil {
		return nil, err
	}
	if rec.Outputs == nil {
		return nil, fmt.Errorf("no outputs: %s", out)
	}
	res := &AllResult{TimedOut: rec.TimedOut, Items: make([]*ItemResult, len(rec.Outputs))}
	for i, o := range rec.Outputs {
		if i < len(rec.Resolved) && !rec.Resolved[i] {
			continue
		}
		r, err := itemResult(o)
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", i, err)
		}
		res.Items[i] = r
	}
	return res, nil
}
