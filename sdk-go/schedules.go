package stackshift

// Schedules (Client.Schedules): start a run of a job on a cron expression in a time zone or
// at a fixed interval, exactly once per scheduled time, with a catch-up policy for the times
// missed while no server ran. See docs/schedules.md.
//
//	created, err := client.Schedules().Create(ctx, stackshift.NewSchedule{
//		ID:   "morning-report",
//		Spec: stackshift.ScheduleSpec{Cron: "0 9 * * *", TimeZone: "Europe/Paris"},
//		Job:  "send-report",
//	})

import (
	"context"
	"encoding/json"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// ScheduleSpec is when a schedule fires: set exactly one of Cron and Every.
type ScheduleSpec struct {
	// Cron is a 5-field (or 6 with seconds first) cron expression, e.g. "0 9 * * *".
	Cron string
	// TimeZone is the IANA zone the cron expression is evaluated in (empty = UTC).
	TimeZone string
	// Every is a fixed interval (1 s to 366 days), aligned to the Unix epoch.
	Every time.Duration
}

func (s ScheduleSpec) toPB() (*pb.ScheduleSpec, error) {
	switch {
	case s.Cron != "" && s.Every != 0:
		return nil, invalidArgument("invalid schedule spec: set exactly one of Cron and Every, not both")
	case s.Cron != "":
		return &pb.ScheduleSpec{Spec: &pb.ScheduleSpec_Cron{Cron: &pb.CronSpec{Expression: s.Cron, TimeZone: s.TimeZone}}}, nil
	case s.Every != 0:
		if s.TimeZone != "" {
			return nil, invalidArgument("invalid schedule spec: TimeZone applies to a Cron spec only")
		}
		return &pb.ScheduleSpec{Spec: &pb.ScheduleSpec_Interval{Interval: &pb.IntervalSpec{Interval: durationpb.New(s.Every)}}}, nil
	}
	return nil, invalidArgument("invalid schedule spec: set one of Cron and Every")
}

func scheduleSpecFromPB(s *pb.ScheduleSpec) ScheduleSpec {
	if c := s.GetCron(); c != nil {
		return ScheduleSpec{Cron: c.GetExpression(), TimeZone: c.GetTimeZone()}
	}
	return ScheduleSpec{Every: s.GetInterval().GetInterval().AsDuration()}
}

// CatchUp is what a schedule does with the times it missed while no server ran.
type CatchUp string

// The catch-up policies.
const (
	// CatchUpLatest starts one run, for the most recent missed time (the default).
	CatchUpLatest CatchUp = "latest"
	// CatchUpSkip starts none, unless the most recent time is at most 5 s late.
	CatchUpSkip CatchUp = "skip"
	// CatchUpAll starts one run per missed time, oldest first, at most 100.
	CatchUpAll CatchUp = "all"
)

func catchUpToPB(c CatchUp) (pb.ScheduleCatchUp, error) {
	switch c {
	case "":
		return pb.ScheduleCatchUp_SCHEDULE_CATCH_UP_UNSPECIFIED, nil
	case CatchUpLatest:
		return pb.ScheduleCatchUp_SCHEDULE_CATCH_UP_LATEST, nil
	case CatchUpSkip:
		return pb.ScheduleCatchUp_SCHEDULE_CATCH_UP_SKIP, nil
	case CatchUpAll:
		return pb.ScheduleCatchUp_SCHEDULE_CATCH_UP_ALL, nil
	}
	return 0, invalidArgument("unknown catch-up policy %q (expected skip, latest or all)", c)
}

func catchUpFromPB(c pb.ScheduleCatchUp) CatchUp {
	switch c {
	case pb.ScheduleCatchUp_SCHEDULE_CATCH_UP_SKIP:
		return CatchUpSkip
	case pb.ScheduleCatchUp_SCHEDULE_CATCH_UP_ALL:
		return CatchUpAll
	}
	return CatchUpLatest
}

// NewSchedule is a schedule to create.
type NewSchedule struct {
	// ID is chosen by you: 1-128 characters of A-Z a-z 0-9 _ - . : / (unique per namespace).
	ID string
	// Spec is when it fires.
	Spec ScheduleSpec
	// Job is the job every firing starts.
	Job string
	// Payload is the payload of every run (any JSON-serializable value; nil is null).
	Payload any
	// Queue is the runs' queue (default "default").
	Queue string
	// RetryPolicy overrides the runs' retry policy.
	RetryPolicy *RetryPolicy
	// LeaseTimeout is the lease of the runs' attempts (1 s to 1 h).
	LeaseTimeout time.Duration
	// Priority orders the runs' delivery within the queue (-1000 to 1000).
	Priority int32
	// CatchUp is the catch-up policy (default CatchUpLatest).
	CatchUp CatchUp
	// Paused creates the schedule paused.
	Paused bool
}

// Schedule is a schedule as stored by the server.
type Schedule struct {
	ID string
	// Spec is when it fires (a cron spec always carries its time zone here).
	Spec ScheduleSpec
	// Job is the job it starts.
	Job string
	// Payload is the payload of every run, as JSON.
	Payload json.RawMessage
	// Queue is the runs' queue.
	Queue string
	// RetryPolicy is the runs' retry overrides (nil when none).
	RetryPolicy *RetryPolicy
	// LeaseTimeout is the runs' lease timeout (0 when unset).
	LeaseTimeout time.Duration
	// Priority is the runs' delivery priority.
	Priority int32
	// CatchUp is the catch-up policy.
	CatchUp CatchUp
	// Paused is true while paused.
	Paused bool
	// NextFireTime is the next scheduled time it fires at (while not paused).
	NextFireTime time.Time
	// LastFireTime is the scheduled time of the newest run it started; nil before the first.
	LastFireTime *time.Time
	// RecentRunIDs are the ids of the most recent runs it started, newest first (at most 10).
	RecentRunIDs []string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

func scheduleFromPB(s *pb.Schedule) (*Schedule, error) {
	if s == nil {
		return nil, &Error{Code: 13, Message: "unexpected response from server: no schedule"}
	}
	a := s.GetAction()
	out := &Schedule{
		ID: s.GetId(), Spec: scheduleSpecFromPB(s.GetSpec()), Job: a.GetJob(), Payload: rawJSON(a.GetPayload()),
		Queue: a.GetQueue(), RetryPolicy: retryPolicyFromPB(a.GetRetryPolicy()), Priority: a.GetPriority(),
		CatchUp: catchUpFromPB(s.GetCatchUp()), Paused: s.GetPaused(), RecentRunIDs: s.GetRecentRunIds(),
		NextFireTime: s.GetNextFireTime().AsTime(), CreatedAt: s.GetCreatedAt().AsTime(), UpdatedAt: s.GetUpdatedAt().AsTime(),
		LastFireTime: optTime(s.GetLastFireTime(), s.GetLastFireTime() != nil),
	}
	if a.GetLeaseTimeout() != nil {
		out.LeaseTimeout = a.GetLeaseTimeout().AsDuration()
	}
	return out, nil
}

// CreatedSchedule is what Schedules.Create answers.
type CreatedSchedule struct {
	// Schedule is the schedule as stored.
	Schedule *Schedule
	// Created is false when it already existed with the same definition.
	Created bool
}

// SchedulePage is one page of Schedules.List.
type SchedulePage struct {
	// Schedules are ordered by id.
	Schedules []*Schedule
	// NextPageToken is empty at the end.
	NextPageToken string
}

// ListSchedulesOptions page Schedules.List.
type ListSchedulesOptions struct {
	// PageSize is 1-1000 (0 = 50).
	PageSize  int32
	PageToken string
}

// Schedules manages schedules (Client.Schedules).
type Schedules struct {
	client pb.ScheduleServiceClient
}

// Schedules returns the schedules API.
func (c *Client) Schedules() *Schedules { return &Schedules{client: c.schedules} }

// Create creates a schedule. The same id with the same definition (everything but Paused)
// answers the stored schedule with Created false and changes nothing, so creating schedules
// at every deploy is safe; with a different definition it fails with ErrAlreadyExists
// (delete the old one first). A bad cron expression, zone or interval is ErrInvalidArgument.
func (s *Schedules) Create(ctx context.Context, n NewSchedule) (*CreatedSchedule, error) {
	spec, err := n.Spec.toPB()
	if err != nil {
		return nil, err
	}
	catchUp, err := catchUpToPB(n.CatchUp)
	if err != nil {
		return nil, err
	}
	body, err := marshalJSON(n.Payload, "the schedule payload")
	if err != nil {
		return nil, err
	}
	action := &pb.ScheduleAction{Job: n.Job, Payload: body, Queue: n.Queue, Priority: n.Priority}
	if n.RetryPolicy != nil {
		action.RetryPolicy = n.RetryPolicy.toPB()
	}
	if n.LeaseTimeout != 0 {
		action.LeaseTimeout = durationpb.New(n.LeaseTimeout)
	}
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := s.client.CreateSchedule(cctx, &pb.CreateScheduleRequest{ScheduleId: n.ID, Spec: spec, Action: action, CatchUp: catchUp, Paused: n.Paused})
	if err != nil {
		return nil, fromRPC(err)
	}
	sched, err := scheduleFromPB(resp.GetSchedule())
	if err != nil {
		return nil, err
	}
	return &CreatedSchedule{Schedule: sched, Created: resp.GetCreated()}, nil
}

// Get returns a schedule (ErrNotFound for an unknown id).
func (s *Schedules) Get(ctx context.Context, id string) (*Schedule, error) {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := s.client.GetSchedule(cctx, &pb.GetScheduleRequest{ScheduleId: id})
	if err != nil {
		return nil, fromRPC(err)
	}
	return scheduleFromPB(resp.GetSchedule())
}

// List returns one page of schedules, by id.
func (s *Schedules) List(ctx context.Context, opts ListSchedulesOptions) (*SchedulePage, error) {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := s.client.ListSchedules(cctx, &pb.ListSchedulesRequest{PageSize: opts.PageSize, PageToken: opts.PageToken})
	if err != nil {
		return nil, fromRPC(err)
	}
	page := &SchedulePage{NextPageToken: resp.GetNextPageToken()}
	for _, sc := range resp.GetSchedules() {
		sched, err := scheduleFromPB(sc)
		if err != nil {
			return nil, err
		}
		page.Schedules = append(page.Schedules, sched)
	}
	return page, nil
}

// Pause stops the schedule firing (pausing a paused schedule does nothing).
func (s *Schedules) Pause(ctx context.Context, id string) (*Schedule, error) {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := s.client.PauseSchedule(cctx, &pb.PauseScheduleRequest{ScheduleId: id})
	if err != nil {
		return nil, fromRPC(err)
	}
	return scheduleFromPB(resp.GetSchedule())
}

// Resume restarts a paused schedule from the first scheduled time after now (times that
// passed while paused are not caught up).
func (s *Schedules) Resume(ctx context.Context, id string) (*Schedule, error) {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := s.client.ResumeSchedule(cctx, &pb.ResumeScheduleRequest{ScheduleId: id})
	if err != nil {
		return nil, fromRPC(err)
	}
	return scheduleFromPB(resp.GetSchedule())
}

// Delete removes a schedule; the runs it started are kept (ErrNotFound for an unknown id).
func (s *Schedules) Delete(ctx context.Context, id string) error {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	_, err := s.client.DeleteSchedule(cctx, &pb.DeleteScheduleRequest{ScheduleId: id})
	return fromRPC(err)
}
