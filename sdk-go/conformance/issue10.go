package main

// The adapter ops of docs/conformance.md "Ops for schedules, triggers, child runs and
// combined waits": the conf.script ops invoke, invoke_all, wait_any and wait_all, and the
// client ops for schedules and triggers.

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/stackshift/stackshift/sdk-go"
)

// childFailure renders a failed or cancelled child as the adapter's outcome.
func childFailure(status stackshift.RunStatus, f *stackshift.Failure) obj {
	message := ""
	if f != nil {
		message = f.Message
	}
	return obj{"status": string(status), "message": message}
}

// waitItems parses [{event, key?} | {sleep_ms}].
func waitItems(raw any) []stackshift.WaitItem {
	list, _ := raw.([]any)
	items := make([]stackshift.WaitItem, 0, len(list))
	for _, r := range list {
		it, _ := r.(obj)
		if name, ok := it["event"].(string); ok {
			items = append(items, stackshift.EventItem(name, str(it, "key")))
		} else {
			items = append(items, stackshift.SleepItem(millis(it["sleep_ms"])))
		}
	}
	return items
}

// itemOutput is {"name","key","payload"} for an event item's event, null for a sleep.
func itemOutput(r *stackshift.ItemResult) any {
	if r == nil || r.Slept() {
		return nil
	}
	return obj{"name": r.Event.Name, "key": r.Event.CorrelationKey, "payload": r.Event.Payload}
}

func combinedOptions(op obj) *stackshift.CombinedWaitOptions {
	if _, ok := intOf(op["timeout_ms"]); !ok {
		return nil
	}
	return &stackshift.CombinedWaitOptions{Timeout: millis(op["timeout_ms"])}
}

// issue10Op runs one invoke / invoke_all / wait_any / wait_all script op and returns what
// the script appends.
func issue10Op(ctx context.Context, jc *stackshift.JobContext, op obj) (any, error) {
	switch {
	case op["invoke"] != nil:
		out, err := jc.Step.Invoke(ctx, str(op, "invoke"), str(op, "job"), op["payload"])
		var failed *stackshift.ChildFailedError
		if errors.As(err, &failed) && op["propagate"] != true {
			res := childFailure(failed.Status, &failed.Failure)
			res["child_failed"] = true
			return res, nil
		}
		if err != nil {
			return nil, err
		}
		return json.RawMessage(out), nil
	case op["invoke_all"] != nil:
		list, _ := op["children"].([]any)
		children := make([]stackshift.ChildRun, 0, len(list))
		for _, r := range list {
			c, _ := r.(obj)
			children = append(children, stackshift.ChildRun{Job: str(c, "job"), Payload: c["payload"]})
		}
		outcomes, err := jc.Step.InvokeAll(ctx, str(op, "invoke_all"), children)
		if err != nil {
			return nil, err
		}
		res := make([]any, 0, len(outcomes))
		for _, o := range outcomes {
			if o.Status == stackshift.StatusCompleted {
				res = append(res, obj{"status": "completed", "result": o.Result})
			} else {
				res = append(res, childFailure(o.Status, o.Failure))
			}
		}
		return res, nil
	case op["wait_any"] != nil:
		r, err := jc.Step.WaitForAny(ctx, str(op, "wait_any"), waitItems(op["items"]), combinedOptions(op))
		if err != nil {
			return nil, err
		}
		if r.TimedOut {
			return obj{"timed_out": true}, nil
		}
		return obj{"timed_out": false, "index": r.Index, "output": itemOutput(r.Result)}, nil
	default:
		r, err := jc.Step.WaitForAll(ctx, str(op, "wait_all"), waitItems(op["items"]), combinedOptions(op))
		if err != nil {
			return nil, err
		}
		outputs, resolved := make([]any, len(r.Items)), make([]bool, len(r.Items))
		for i, it := range r.Items {
			outputs[i], resolved[i] = itemOutput(it), it != nil
		}
		return obj{"timed_out": r.TimedOut, "outputs": outputs, "resolved": resolved}, nil
	}
}

func scheduleJSON(s *stackshift.Schedule) obj {
	ids := s.RecentRunIDs
	if ids == nil {
		ids = []string{}
	}
	return obj{"schedule_id": s.ID, "job": s.Job, "paused": s.Paused, "recent_run_ids": ids}
}

// issue10ClientOp performs the schedule and trigger client ops; handled is false for
// another op.
func issue10ClientOp(ctx context.Context, client *stackshift.Client, op string, c obj) (any, bool, error) {
	id := str(c, "schedule_id")
	switch op {
	case "create_schedule":
		n := stackshift.NewSchedule{ID: id, Job: str(c, "job"), Queue: str(c, "queue"), Payload: c["payload"],
			CatchUp: stackshift.CatchUp(str(c, "catch_up")), Paused: c["paused"] == true,
			Spec: stackshift.ScheduleSpec{Cron: str(c, "cron"), TimeZone: str(c, "time_zone"), Every: millis(c["every_ms"])}}
		created, err := client.Schedules().Create(ctx, n)
		if err != nil {
			return nil, true, err
		}
		out := scheduleJSON(created.Schedule)
		out["created"] = created.Created
		return out, true, nil
	case "get_schedule", "pause_schedule", "resume_schedule":
		var s *stackshift.Schedule
		var err error
		switch op {
		case "get_schedule":
			s, err = client.Schedules().Get(ctx, id)
		case "pause_schedule":
			s, err = client.Schedules().Pause(ctx, id)
		default:
			s, err = client.Schedules().Resume(ctx, id)
		}
		if err != nil {
			return nil, true, err
		}
		return scheduleJSON(s), true, nil
	case "delete_schedule":
		return nil, true, client.Schedules().Delete(ctx, id)
	case "list_schedules":
		ids := []string{}
		token := ""
		for {
			page, err := client.Schedules().List(ctx, stackshift.ListSchedulesOptions{PageSize: 1000, PageToken: token})
			if err != nil {
				return nil, true, err
			}
			for _, s := range page.Schedules {
				ids = append(ids, s.ID)
			}
			if token = page.NextPageToken; token == "" {
				return obj{"schedule_ids": ids}, true, nil
			}
		}
	case "create_trigger":
		created, err := client.Triggers().Create(ctx, stackshift.NewEventTrigger{Event: str(c, "event"), CorrelationKey: str(c, "key"), Job: str(c, "job"), Queue: str(c, "queue")})
		if err != nil {
			return nil, true, err
		}
		return obj{"trigger_id": created.Trigger.ID, "created": created.Created}, true, nil
	case "list_triggers":
		ids := []string{}
		token := ""
		for {
			page, err := client.Triggers().List(ctx, stackshift.ListTriggersOptions{Event: str(c, "event"), Job: str(c, "job"), PageSize: 1000, PageToken: token})
			if err != nil {
				return nil, true, err
			}
			for _, t := range page.Triggers {
				ids = append(ids, t.ID)
			}
			if token = page.NextPageToken; token == "" {
				return obj{"trigger_ids": ids}, true, nil
			}
		}
	case "delete_trigger":
		return nil, true, client.Triggers().Delete(ctx, str(c, "trigger_id"))
	}
	return nil, false, nil
}
