package stackshift

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "1h30m": 90 * time.Minute, " 500ms ": 500 * time.Millisecond,
		"2w": 14 * 24 * time.Hour, "1d12h": 36 * time.Hour,
	}
	for in, want := range good {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "soon", "10", "5x", "1h 30m", "-1s"} {
		if _, err := ParseDuration(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParseDuration(%q) error = %v; want an InvalidArgument error", bad, err)
		}
	}
}

func TestStepOptionsAreValidated(t *testing.T) {
	for _, opts := range []StepOptions{{Retries: -1}, {Retries: 101}, {RetryDelay: -time.Second}} {
		if _, _, err := opts.validate(); !IsNonRetryable(err) {
			t.Fatalf("%+v: %v", opts, err)
		}
	}
	if n, d, err := (StepOptions{Retries: 3}).validate(); n != 3 || d != 200*time.Millisecond || err != nil {
		t.Fatalf("defaults: %d %s %v", n, d, err)
	}
}

func TestStepRetryDelayDoublesAndCaps(t *testing.T) {
	var got []time.Duration
	for k := 1; k <= 7; k++ {
		got = append(got, stepRetryDelay(200*time.Millisecond, k))
	}
	if fmt.Sprint(got) != "[200ms 400ms 800ms 1.6s 3.2s 5s 5s]" || stepRetryDelay(time.Second, 100) != 5*time.Second {
		t.Fatalf("delays %v", got)
	}
}

func TestOccurrenceSuffixes(t *testing.T) {
	o := newOccurrences()
	var got []string
	for _, id := range []string{"download", "import-batch", "import-batch", "import-batch", "mark"} {
		eff, err := o.next(id)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, eff)
	}
	if fmt.Sprint(got) != "[download import-batch import-batch#2 import-batch#3 mark]" {
		t.Fatalf("got %v", got)
	}
	c := newOccurrences()
	for _, id := range []string{"a#2", "a"} {
		if _, err := c.next(id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.next("a"); !IsNonRetryable(err) {
		t.Fatalf("a colliding id must be a non-retryable error, got %v", err)
	}
}

func TestErrorsAreTyped(t *testing.T) {
	err := fromRPC(status.Error(codes.NotFound, "run x not found"))
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("errors.Is mismatch for %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Name() != "NOT_FOUND" || e.Message != "run x not found" {
		t.Fatalf("got %#v", e)
	}
	if CodeName(codes.FailedPrecondition) != "FAILED_PRECONDITION" || CodeName(codes.Canceled) != "CANCELLED" {
		t.Fatal("CodeName")
	}
	wrapped := fmt.Errorf("charging: %w", NonRetryable(errors.New("declined")))
	if !IsNonRetryable(wrapped) || IsNonRetryable(errors.New("plain")) {
		t.Fatal("IsNonRetryable")
	}
	if !IsNonRetryable(&StepFailedError{Failure: Failure{NonRetryable: true}}) {
		t.Fatal("a replayed non-retryable failure stays non-retryable")
	}
}

func TestEventFromJournal(t *testing.T) {
	ev, err := eventFromJournal([]byte(`{"timedOut":true}`))
	if err != nil || ev != nil {
		t.Fatalf("timed out: %v %v", ev, err)
	}
	ev, err = eventFromJournal([]byte(`{"timedOut":false,"event":{"id":"e1","name":"n","correlationKey":"k","payload":{"a":1},"publishedAt":1700000000123}}`))
	if err != nil || ev.ID != "e1" || ev.CorrelationKey != "k" || string(ev.Payload) != `{"a":1}` || ev.PublishedAt.UnixMilli() != 1700000000123 {
		t.Fatalf("received: %+v %v", ev, err)
	}
	if _, err := eventFromJournal([]byte(`{"timedOut":false}`)); err == nil {
		t.Fatal("an entry with neither outcome was accepted")
	}
}

func TestLogFieldsFollowSlogConventions(t *testing.T) {
	fields := map[string]any{}
	addFields(fields, []any{"a", 1, slog.String("b", "x"), "dangling"})
	if fmt.Sprint(fields) != "map[!BADKEY:dangling a:1 b:x]" {
		t.Fatalf("fields %v", fields)
	}
}

func TestConflictErrorMatchesFailedPrecondition(t *testing.T) {
	var err error = fmt.Errorf("wrapped: %w", &ConflictError{Reason: ReasonLockNotHeld, Message: "m"})
	var c *ConflictError
	if !errors.Is(err, ErrFailedPrecondition) || errors.Is(err, ErrNotFound) || !errors.As(err, &c) || c.Reason != ReasonLockNotHeld {
		t.Fatalf("conflict %v", err)
	}
	// Without the reason trailer, FAILED_PRECONDITION is not a conflict (a stale lease).
	if asConflict(status.Error(codes.FailedPrecondition, "stale lease"), nil) != nil {
		t.Fatal("a FAILED_PRECONDITION without reason became a conflict")
	}
}

func TestIssue10JournalOutputsDecode(t *testing.T) {
	ev := `{"timedOut":false,"event":{"id":"e1","name":"n","correlationKey":"k","payload":{"a":1},"publishedAt":1700000000000}}`
	anyRes, err := anyFromJournal([]byte(`{"timedOut":false,"index":1,"output":` + ev + `}`))
	if err != nil || anyRes.TimedOut || anyRes.Index != 1 || anyRes.Result.Slept() || anyRes.Result.Event.ID != "e1" || string(anyRes.Result.Event.Payload) != `{"a":1}` {
		t.Fatalf("any %+v %v", anyRes, err)
	}
	if r, err := anyFromJournal([]byte(`{"timedOut":true}`)); err != nil || !r.TimedOut {
		t.Fatalf("any timed out %+v %v", r, err)
	}
	if r, err := anyFromJournal([]byte(`{"timedOut":false,"index":0,"output":null}`)); err != nil || r.Index != 0 || !r.Result.Slept() {
		t.Fatalf("any slept %+v %v", r, err)
	}
	all, err := allFromJournal([]byte(`{"timedOut":true,"outputs":[` + ev + `,null,null],"resolved":[true,false,true]}`))
	if err != nil || !all.TimedOut || len(all.Items) != 3 || all.Items[0].Event.CorrelationKey != "k" || all.Items[1] != nil || !all.Items[2].Slept() {
		t.Fatalf("all %+v %v", all, err)
	}
	if _, err := allFromJournal([]byte(`{"timedOut":false}`)); err == nil {
		t.Fatal("an ALL output without outputs must not decode")
	}
	outs, err := outcomesFromJournal([]byte(`{"children":[{"runId":"a","job":"j","status":"completed","result":{"n":2}},
		{"runId":"b","job":"j","status":"failed","failure":{"message":"boom","errorType":"E","nonRetryable":true}},
		{"runId":"c","job":"j","status":"cancelled"}]}`))
	if err != nil || len(outs) != 3 {
		t.Fatalf("outcomes %+v %v", outs, err)
	}
	var v struct{ N int }
	if err := outs[0].Decode(&v); err != nil || v.N != 2 {
		t.Fatalf("completed child: %v %+v", err, v)
	}
	var cf *ChildFailedError
	err = outs[1].Decode(&v)
	if !errors.As(err, &cf) || cf.RunID != "b" || cf.Failure.Type != "E" || !IsNonRetryable(err) || err.Error() != "child run b (j) failed: boom" {
		t.Fatalf("failed child: %v", err)
	}
	if err := outs[2].Err(); err == nil || err.Error() != "child run c (j) was cancelled: " {
		t.Fatalf("cancelled child: %v", err)
	}
	if _, err := outcomesFromJournal([]byte(`{"children":[{"runId":"a","status":"exploded"}]}`)); err == nil {
		t.Fatal("an unknown child status must not decode")
	}
	f := failureFromError(fmt.Errorf("wrapped: %w", cf))
	if !f.NonRetryable || f.Type != "ChildFailed" || !strings.Contains(string(f.Details), `"runId":"b"`) {
		t.Fatalf("failure %+v", f)
	}
}

func TestScheduleSpecValidation(t *testing.T) {
	for _, spec := range []ScheduleSpec{{}, {Cron: "* * * * *", Every: time.Second}, {Every: time.Second, TimeZone: "UTC"}} {
		if _, err := spec.toPB(); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("%+v: %v", spec, err)
		}
	}
	if _, err := catchUpToPB("sometimes"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatal(err)
	}
	if got := scheduleSpecFromPB(mustSpec(t, ScheduleSpec{Cron: "0 9 * * *", TimeZone: "Europe/Paris"})); got.Cron != "0 9 * * *" || got.TimeZone != "Europe/Paris" {
		t.Fatalf("%+v", got)
	}
	if got := scheduleSpecFromPB(mustSpec(t, ScheduleSpec{Every: 90 * time.Second})); got.Every != 90*time.Second {
		t.Fatalf("%+v", got)
	}
}

func mustSpec(t *testing.T, s ScheduleSpec) *pb.ScheduleSpec {
	t.Helper()
	spec, err := s.toPB()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}
