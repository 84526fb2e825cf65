package stackshift

// What a run's detail shows besides its attempts and steps: what a waiting run waits for
// (RunWait), its timeline (TimelineEntry) and its logs (LogEntry), as GetRun returns them
// (docs/observability.md).

import (
	"encoding/json"
	"strings"
	"time"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// StepKind says what recorded a step entry.
type StepKind string

// The step kinds.
const (
	StepKindStep  StepKind = "step"
	StepKindSleep StepKind = "sleep"
	StepKindEvent StepKind = "event"
	StepKindState StepKind = "state"
	// StepKindChild is a child wait (Step.Invoke, InvokeAll, InvokeChild).
	StepKindChild StepKind = "child"
	// StepKindAny is a Step.WaitForAny.
	StepKindAny StepKind = "any"
	// StepKindAll is a Step.WaitForAll.
	StepKindAll StepKind = "all"
)

func stepKindFromPB(k pb.JournalEntryKind) StepKind {
	switch k {
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_SLEEP:
		return StepKindSleep
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_EVENT:
		return StepKindEvent
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_STATE:
		return StepKindState
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_CHILD:
		return StepKindChild
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_ANY:
		return StepKindAny
	case pb.JournalEntryKind_JOURNAL_ENTRY_KIND_ALL:
		return StepKindAll
	}
	return StepKindStep
}

// RunWait is what a waiting run is suspended on.
type RunWait struct {
	// StepID is the sleep's or wait's id, with its occurrence suffix.
	StepID string
	// Kind is StepKindSleep, StepKindEvent, StepKindChild, StepKindAny or StepKindAll.
	Kind StepKind
	// EventName and CorrelationKey are set for an event wait.
	EventName      string
	CorrelationKey string
	// WakeAt is when the sleep ends or the wait times out; zero for a child wait.
	WakeAt time.Time
	// Since is when the run suspended.
	Since time.Time
}

func runWaitFromPB(w *pb.RunWait) *RunWait {
	if w == nil {
		return nil
	}
	out := &RunWait{StepID: w.GetStepId(), Kind: stepKindFromPB(w.GetKind()), EventName: w.GetEventName(), CorrelationKey: w.GetCorrelationKey(), Since: w.GetSince().AsTime()}
	if w.GetWakeAt() != nil {
		out.WakeAt = w.GetWakeAt().AsTime()
	}
	return out
}

// TimelineKind names what happened at one instant of a run's timeline: the proto enum name
// without its TIMELINE_ENTRY_KIND_ prefix, e.g. "ATTEMPT_STARTED".
type TimelineKind string

// The timeline kinds.
const (
	TimelineCreated        TimelineKind = "CREATED"
	TimelineAttemptStarted TimelineKind = "ATTEMPT_STARTED"
	TimelineAttemptResumed TimelineKind = "ATTEMPT_RESUMED"
	TimelineStepCompleted  TimelineKind = "STEP_COMPLETED"
	TimelineStepFailed     TimelineKind = "STEP_FAILED"
	TimelineWaiting        TimelineKind = "WAITING"
	TimelineEventMatched   TimelineKind = "EVENT_MATCHED"
	TimelineTimerFired     TimelineKind = "TIMER_FIRED"
	TimelineWaitTimedOut   TimelineKind = "WAIT_TIMED_OUT"
	TimelineRetryScheduled TimelineKind = "RETRY_SCHEDULED"
	TimelineLeaseExpired   TimelineKind = "LEASE_EXPIRED"
	TimelineCompleted      TimelineKind = "COMPLETED"
	TimelineFailed         TimelineKind = "FAILED"
	TimelineCancelled      TimelineKind = "CANCELLED"
	TimelineRetried        TimelineKind = "RETRIED"
	TimelineLogsTruncated  TimelineKind = "LOGS_TRUNCATED"
	// TimelineTruncated marks the point where the server stopped recording this run's
	// timeline (--max-timeline-entries); how the run ended is still recorded after it.
	TimelineTruncated TimelineKind = "TIMELINE_TRUNCATED"
)

// TimelineEntry is one timestamped transition of a run.
type TimelineEntry struct {
	// ID orders entries (strictly increasing, not contiguous).
	ID   int64
	At   time.Time
	Kind TimelineKind
	// Attempt is the attempt it belongs to; 0 when none.
	Attempt int32
	// StepID is the step it concerns; empty when none.
	StepID string
	// ScheduledAt is, for RETRY_SCHEDULED, when the next attempt is due and, for WAITING,
	// when the sleep ends or the wait times out; nil otherwise.
	ScheduledAt *time.Time
	// Detail holds extra facts as a JSON object (e.g. {"error": "..."}); nil when none.
	Detail json.RawMessage
}

func timelineFromPB(entries []*pb.TimelineEntry) []TimelineEntry {
	var out []TimelineEntry
	for _, e := range entries {
		t := TimelineEntry{
			ID: e.GetId(), At: e.GetAt().AsTime(), Attempt: e.GetAttempt(), StepID: e.GetStepId(),
			Kind:        TimelineKind(strings.TrimPrefix(e.GetKind().String(), "TIMELINE_ENTRY_KIND_")),
			ScheduledAt: optTime(e.GetScheduledAt(), e.GetScheduledAt() != nil),
		}
		if len(e.GetDetail()) > 0 {
			t.Detail = json.RawMessage(e.GetDetail())
		}
		out = append(out, t)
	}
	return out
}

// LogEntry is one line a handler logged through JobContext.Log.
type LogEntry struct {
	ID      int64
	Level   LogLevel
	Message string
	// Fields is a JSON object; nil when the line has none.
	Fields json.RawMessage
	// StepID is the step that was executing; empty when none.
	StepID string
	// At is when the handler logged it (worker clock).
	At      time.Time
	Attempt int32
	// Truncated marks the single line the server stores when the run reached its log cap.
	Truncated bool
}

func logsFromPB(entries []*pb.LogEntry) []LogEntry {
	var out []LogEntry
	for _, e := range entries {
		l := LogEntry{ID: e.GetId(), Level: levelFromPB(e.GetLevel()), Message: e.GetMessage(), StepID: e.GetStepId(), At: e.GetAt().AsTime(), Attempt: e.GetAttempt(), Truncated: e.GetTruncated()}
		if len(e.GetFields()) > 0 {
			l.Fields = json.RawMessage(e.GetFields())
		}
		out = append(out, l)
	}
	return out
}
