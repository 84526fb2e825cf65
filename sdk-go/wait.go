package stackshift

// Durable sleeps and event waits on Step: Sleep, SleepUntil and WaitForEvent (child runs are
// in children.go, combined waits in combined.go). Each sends
// SuspendRun; the server either resolves the wait at once (the sleep's time has passed, or a
// matching event is already in the run's inbox) and the handler continues, or stores the wait
// and releases the lease, in which case the call returns an *InterruptedError, the worker stops
// the handler, frees its slot and reports nothing. When the wait ends the run is delivered
// again (the same attempt), and the replay returns the journaled result at the same call.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

func kindName(k pb.JournalEntryKind) string {
	switch k {
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_STEP:
		return "step"
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_SLEEP:
		return "sleep"
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_EVENT:
		return "event wait"
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_STATE:
		return "state call"
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_CHILD:
		return "child wait"
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_ANY:
		return "wait for any"
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_ALL:
		return "wait for all"
	}
	return "journal entry of an unknown kind"
}

func kindMismatch(stepID string, found, want pb.JournalEntryKind) error {
	return NonRetryablef("step id %s is recorded as a %s in this run's journal, not as a %s: the handler no longer calls its steps in the recorded order", stepID, kindName(found), kindName(want))
}

// Sleep sleeps durably for d (at most 365 days), counted from when the server receives the
// call. The run turns waiting and holds no worker slot while it sleeps; it survives worker and
// server restarts and is delivered again when the sleep ends (the same attempt, so sleeping
// never uses up retries). In that execution, and every later replay, Sleep returns nil at once.
// The id follows the occurrence-suffix rules of Run and shares its id space.
//
// When the run suspends, Sleep returns an *InterruptedError: return it from the handler.
func (s *Step) Sleep(ctx context.Context, id string, d time.Duration) error {
	if d < 0 {
		return NonRetryablef("step.Sleep(%q): the duration must not be negative", id)
	}
	wait := &pb.SuspendRunRequest_Sleep{Sleep: &pb.SleepWait{Duration: durationpb.New(d)}}
	_, err := s.suspend(id, pb.JournalEntryKind_JOURNAL_ENTRY_KIND_SLEEP, wait, "sleeping")
	return err
}

// SleepUntil sleeps durably until t (at most 365 days ahead; a time in the past returns at
// once). Otherwise like Sleep.
func (s *Step) SleepUntil(ctx context.Context, id string, t time.Time) error {
	wait := &pb.SuspendRunRequest_Sleep{Sleep: &pb.SleepWait{Until: timestamppb.New(t)}}
	_, err := s.suspend(id, pb.JournalEntryKind_JOURNAL_ENTRY_KIND_SLEEP, wait, "sleeping")
	return err
}

// WaitOptions are the options of Step.WaitForEvent.
type WaitOptions struct {
	// Event is the event name to wait for (required).
	Event string
	// Key is the correlation key to match exactly; empty matches only events published
	// without a key.
	Key string
	// Timeout is how long to wait (0 to 365 days): 0 takes a matching event from the inbox
	// or times out at once.
	Timeout time.Duration
}

// WaitForEvent waits for the event opts.Event with exactly opts.Key, for at most
// opts.Timeout. It returns the event, or nil (and no error) once the timeout passed.
//
// The run's inbox decides: the first matching event published after the run was created that
// this run has not received yet matches, even when it was published before the handler reached
// this call (a webhook that lands early is never lost). Two waits for the same name receive two
// successive events. While no event is there, the run turns waiting and holds no worker slot;
// it is delivered again when an event arrives or the timeout passes. Ids, replay and the
// *InterruptedError on suspension behave as for Sleep.
func (s *Step) WaitForEvent(ctx context.Context, id string, opts WaitOptions) (*Event, error) {
	if opts.Timeout < 0 {
		return nil, NonRetryablef("step.WaitForEvent(%q): the timeout must not be negative", id)
	}
	wait := &pb.SuspendRunRequest_Event{Event: &pb.EventWait{EventName: opts.Event, CorrelationKey: opts.Key, Timeout: durationpb.New(opts.Timeout)}}
	out, err := s.suspend(id, pb.JournalEntryKind_JOURNAL_ENTRY_KIND_EVENT, wait, "waiting for event "+opts.Event)
	if err != nil {
		return nil, err
	}
	ev, err := eventFromJournal(out)
	if err != nil {
		return nil, NonRetryablef("the recorded result of wait %s: %v", id, err)
	}
	return ev, nil
}

// eventFromJournal decodes an EVENT journal output: {"timedOut":true} or
// {"timedOut":false,"event":{"id","name","correlationKey","payload","publishedAt":<epoch ms>}}.
func eventFromJournal(out []byte) (*Event, error) {
	var rec struct {
		TimedOut bool `json:"timedOut"`
		Event    *struct {
			ID             string          `json:"id"`
			Name           string          `json:"name"`
			CorrelationKey *string         `json:"correlationKey"`
			Payload        json.RawMessage `json:"payload"`
			PublishedAt    int64           `json:"publishedAt"`
		} `json:"event"`
	}
	if err := json.Unmarshal(out, &rec); err != nil {
		return nil, err
	}
	if rec.TimedOut {
		return nil, nil
	}
	if rec.Event == nil {
		return nil, fmt.Errorf("neither timed out nor an event: %s", out)
	}
	ev := &Event{ID: rec.Event.ID, Name: rec.Event.Name, Payload: rawJSON(rec.Event.Payload), PublishedAt: time.UnixMilli(rec.Event.PublishedAt).UTC()}
	if rec.Event.CorrelationKey != nil {
		ev.CorrelationKey = *rec.Event.CorrelationKey
	}
	return ev, nil
}

// suspend assigns the effective id, replays a journaled result, or sends SuspendRun. It
// returns the wait's journaled output; when the run suspends it stops the attempt (as
// suspended) and returns an *InterruptedError.
func (s *Step) suspend(id string, kind pb.JournalEntryKind, wait any, what string) ([]byte, error) {
	if id == "" {
		return nil, NonRetryablef("step id must not be empty")
	}
	s.mu.Lock()
	stepID, err := s.occurrences.next(id)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if rec, ok := s.journal[stepID]; ok {
		if rec.kind != kind {
			return nil, kindMismatch(stepID, rec.kind, kind)
		}
		return rawJSON(rec.output), nil
	}
	l := s.lease
	if l.isInterrupted() {
		return nil, l.err()
	}
	if s.logs != nil {
		s.logs.flush()
	}
	req := &pb.SuspendRunRequest{RunId: l.runID, LeaseToken: l.token, StepId: stepID}
	switch w := wait.(type) {
	case *pb.SuspendRunRequest_Sleep:
		req.Wait = w
	case *pb.SuspendRunRequest_Event:
		req.Wait = w
	case *pb.SuspendRunRequest_Child:
		req.Wait = w
	case *pb.SuspendRunRequest_Any:
		req.Wait = w
	case *pb.SuspendRunRequest_All:
		req.Wait = w
	}
	resp, werr := write(l, "SuspendRun", func(cctx context.Context) (*pb.SuspendRunResponse, error) {
		return s.client.SuspendRun(cctx, req)
	})
	if werr != nil {
		switch werr.kind {
		case writeInterrupted:
			return nil, werr.interrupted
		case writeGaveUp:
			l.interrupt("the server stayed unreachable until the lease expired (" + werr.status.Message + ")")
			return nil, l.err()
		}
		err := fmt.Errorf("could not start %s (%s): %w", what, stepID, werr.status)
		switch werr.status.Code {
		case codes.InvalidArgument, codes.ResourceExhausted, codes.OutOfRange:
			return nil, NonRetryable(err)
		}
		return nil, err
	}
	switch resp.GetOutcome() {
	case pb.SuspendOutcome_SUSPEND_OUTCOME_SATISFIED:
		entry := resp.GetEntry()
		if entry == nil {
			return nil, fmt.Errorf("SuspendRun answered SATISFIED without an entry")
		}
		if entry.GetKind() != kind {
			return nil, kindMismatch(stepID, entry.GetKind(), kind)
		}
		return rawJSON(entry.GetOutput()), nil
	case pb.SuspendOutcome_SUSPEND_OUTCOME_SUSPENDED:
		until := ""
		if n := len(resp.GetChildRunIds()); n > 0 {
			until = fmt.Sprintf(" for %d child run(s)", n)
		}
		if resp.GetWakeAt() != nil {
			until = " until " + resp.GetWakeAt().AsTime().Format(time.RFC3339)
		}
		l.suspend(fmt.Sprintf("the run is %s (%s)%s", what, stepID, until))
		return nil, l.err()
	}
	return nil, fmt.Errorf("SuspendRun answered an unknown outcome %v", resp.GetOutcome())
}
