// Command conformance is the Go SDK's conformance adapter: a worker built on the stackshift
// package that registers the fixed job catalogue (conf.script, conf.echo) and answers client
// commands on stdin, following the protocol in docs/conformance.md. Built and started by
// `cargo run -p stackshift-conformance -- --sdk go`.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stackshift/stackshift/sdk-go"
)

type obj = map[string]any

var ledgerMu sync.Mutex

// record appends one ledger line.
func record(path, runID, step string, attempt int32, phase string) {
	line, _ := json.Marshal(obj{"run_id": runID, "step": step, "attempt": attempt, "phase": phase, "t": float64(time.Now().UnixMicro()) / 1000})
	ledgerMu.Lock()
	defer ledgerMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(append(line, '\n'))
}

// decode parses JSON keeping numbers exact (json.Number).
func decode(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

func intOf(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := n.Int64()
	return i, err == nil
}

func sleepCtx(ctx context.Context, ms int64) error {
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type script struct {
	ledger  string
	outputs []any
	caught  []any
}

func (s *script) stepBody(ctx context.Context, jc *stackshift.JobContext, id string, op obj, try int64) (any, error) {
	record(s.ledger, jc.RunID, id, jc.Attempt, "start")
	if ms, ok := intOf(op["sleep_ms"]); ok {
		if err := sleepCtx(ctx, ms); err != nil {
			return nil, err
		}
	}
	message, _ := op["message"].(string)
	if n, ok := intOf(op["fail_until_attempt"]); ok && int64(jc.Attempt) <= n {
		if message == "" {
			message = fmt.Sprintf("step %s failed on attempt %d", id, jc.Attempt)
		}
		return nil, errors.New(message)
	}
	if n, ok := intOf(op["fail_until_try"]); ok && try <= n {
		if message == "" {
			message = fmt.Sprintf("step %s failed on try %d", id, try)
		}
		return nil, errors.New(message)
	}
	if op["non_retryable"] == true {
		if message == "" {
			message = fmt.Sprintf("step %s failed permanently", id)
		}
		return nil, stackshift.NonRetryable(errors.New(message))
	}
	record(s.ledger, jc.RunID, id, jc.Attempt, "end")
	if n, ok := intOf(op["output_bytes"]); ok {
		return strings.Repeat("x", int(n)), nil
	}
	if out, ok := op["output"]; ok {
		return out, nil
	}
	return obj{"step": id, "attempt": jc.Attempt}, nil
}

// errorKind: step_failed (a replayed terminal failure), non_retryable or error.
func errorKind(err error) (string, string) {
	var sf *stackshift.StepFailedError
	if errors.As(err, &sf) {
		return "step_failed", sf.Failure.Message
	}
	var nr *stackshift.NonRetryableError
	if errors.As(err, &nr) {
		return "non_retryable", nr.Err.Error()
	}
	return "error", err.Error()
}

func (s *script) run(ctx context.Context, jc *stackshift.JobContext, ops []any) error {
	for _, raw := range ops {
		op, _ := raw.(obj)
		switch {
		case op["step"] != nil:
			id, _ := op["step"].(string)
			var out stackshift.Output
			var err error
			if op["retries"] != nil || op["retry_delay_ms"] != nil {
				var opts stackshift.StepOptions
				if n, ok := intOf(op["retries"]); ok {
					opts.Retries = int(n)
				}
				if ms, ok := intOf(op["retry_delay_ms"]); ok {
					opts.RetryDelay = time.Duration(ms) * time.Millisecond
				}
				var tries int64
				out, err = jc.Step.RunWithOptions(ctx, id, opts, func(ctx context.Context) (any, error) {
					tries++
					return s.stepBody(ctx, jc, id, op, tries)
				})
			} else {
				out, err = jc.Step.Run(ctx, id, func(ctx context.Context) (any, error) { return s.stepBody(ctx, jc, id, op, 1) })
			}
			if err != nil {
				if op["catch"] != true || stackshift.IsInterrupted(err) {
					return err
				}
				kind, message := errorKind(err)
				s.caught = append(s.caught, obj{"step": id, "kind": kind, "message": message})
				continue
			}
			s.outputs = append(s.outputs, json.RawMessage(out))
		case op["repeat"] != nil:
			n, _ := intOf(op["repeat"])
			inner, _ := op["ops"].([]any)
			for range n {
				if err := s.run(ctx, jc, inner); err != nil {
					return err
				}
			}
		case op["fail"] != nil:
			message, _ := op["fail"].(string)
			until, bounded := intOf(op["until_attempt"])
			if !bounded || int64(jc.Attempt) <= until {
				if op["non_retryable"] == true {
					return stackshift.NonRetryable(errors.New(message))
				}
				return errors.New(message)
			}
		case op["sleep_ms"] != nil:
			ms, _ := intOf(op["sleep_ms"])
			if err := sleepCtx(ctx, ms); err != nil {
				return err
			}
		case op["sleep"] != nil:
			id, _ := op["sleep"].(string)
			ms, _ := intOf(op["ms"])
			if err := jc.Step.Sleep(ctx, id, time.Duration(ms)*time.Millisecond); err != nil {
				return err
			}
		case op["wait_event"] != nil:
			id, _ := op["wait_event"].(string)
			ms, _ := intOf(op["timeout_ms"])
			ev, err := jc.Step.WaitForEvent(ctx, id, stackshift.WaitOptions{Event: str(op, "event"), Key: str(op, "key"), Timeout: time.Duration(ms) * time.Millisecond})
			if err != nil {
				return err
			}
			if ev == nil {
				s.outputs = append(s.outputs, obj{"received": false})
			} else {
				s.outputs = append(s.outputs, obj{"received": true, "payload": ev.Payload})
			}
		case op["invoke"] != nil, op["invoke_all"] != nil, op["wait_any"] != nil, op["wait_all"] != nil:
			out, err := issue10Op(ctx, jc, op)
			if err != nil {
				return err
			}
			s.outputs = append(s.outputs, out)
		case op["state_set"] != nil, op["state_get"] != nil, op["state_incr"] != nil, op["state_delete"] != nil, op["lock"] != nil:
			if err := s.stateOp(ctx, jc, op); err != nil {
				var conflict *stackshift.ConflictError
				if op["catch"] != true || !errors.As(err, &conflict) {
					return err
				}
				key := str(op, "state_set") + str(op, "state_get") + str(op, "state_incr") + str(op, "state_delete") + str(op, "lock")
				s.caught = append(s.caught, obj{"step": key, "kind": "conflict", "reason": conflict.Reason})
			}
		case op["log"] != nil:
			message, _ := op["log"].(string)
			fields, _ := op["fields"].(obj)
			level := stackshift.LogLevel(str(op, "level"))
			if level == "" {
				level = stackshift.LevelInfo
			}
			if !logAt(jc.Log, level, message, fieldArgs(fields)) {
				return stackshift.NonRetryablef("unknown log level %q", level)
			}
		default:
			b, _ := json.Marshal(op)
			return stackshift.NonRetryablef("unknown script op %s", b)
		}
	}
	return nil
}

// logAt calls the logger method of level (Debug, Info, Warn or Error); false for another level.
func logAt(log *stackshift.Logger, level stackshift.LogLevel, message string, args []any) bool {
	switch level {
	case stackshift.LevelDebug:
		log.Debug(message, args...)
	case stackshift.LevelInfo:
		log.Info(message, args...)
	case stackshift.LevelWarn:
		log.Warn(message, args...)
	case stackshift.LevelError:
		log.Error(message, args...)
	default:
		return false
	}
	return true
}

// fieldArgs turns a JSON object into slog-style key/value arguments, keys sorted.
func fieldArgs(fields obj) []any {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, fields[k])
	}
	return args
}

func millis(v any) time.Duration {
	n, _ := intOf(v)
	return time.Duration(n) * time.Millisecond
}

// stateOp runs one state_* or lock script op through the handler's journaled state.
func (s *script) stateOp(ctx context.Context, jc *stackshift.JobContext, op obj) error {
	st := jc.State
	switch {
	case op["state_set"] != nil:
		_, err := st.Set(ctx, str(op, "state_set"), op["value"], &stackshift.SetOptions{TTL: millis(op["ttl_ms"])})
		return err
	case op["state_get"] != nil:
		e, err := st.GetEntry(ctx, str(op, "state_get"))
		if err != nil {
			return err
		}
		if e == nil {
			s.outputs = append(s.outputs, nil)
		} else {
			s.outputs = append(s.outputs, e.Value)
		}
	case op["state_incr"] != nil:
		var v int64
		var err error
		if by, ok := intOf(op["by"]); ok {
			v, err = st.IncrementBy(ctx, str(op, "state_incr"), by)
		} else {
			v, err = st.Increment(ctx, str(op, "state_incr"))
		}
		if err != nil {
			return err
		}
		s.outputs = append(s.outputs, v)
	case op["state_delete"] != nil:
		deleted, err := st.Delete(ctx, str(op, "state_delete"))
		if err != nil {
			return err
		}
		s.outputs = append(s.outputs, deleted)
	case op["lock"] != nil:
		lock, err := st.Lock(ctx, str(op, "lock"), stackshift.LockOptions{TTL: millis(op["ttl_ms"]), Wait: millis(op["wait_ms"])})
		if err != nil {
			return err
		}
		if lock == nil {
			s.outputs = append(s.outputs, obj{"granted": false})
			return nil
		}
		s.outputs = append(s.outputs, obj{"granted": true, "token": lock.Token})
		if err := sleepCtx(ctx, int64(millis(op["hold_ms"])/time.Millisecond)); err != nil {
			return err
		}
		if op["release"] != false {
			return lock.Release(ctx)
		}
	}
	return nil
}

func runJSON(run *stackshift.Run) obj {
	out := obj{"run_id": run.ID, "status": string(run.Status), "attempt": run.Attempt, "queue": run.Queue, "result": run.Result, "failure": nil}
	if run.Result == nil {
		out["result"] = nil
	}
	if run.Failure != nil {
		out["failure"] = obj{"message": run.Failure.Message, "non_retryable": run.Failure.NonRetryable}
	}
	timeline := []any{}
	for _, e := range run.Timeline {
		timeline = append(timeline, obj{"kind": string(e.Kind), "attempt": e.Attempt, "step_id": e.StepID})
	}
	logs := []any{}
	for _, l := range run.Logs {
		var fields any = obj{}
		if l.Fields != nil {
			fields = l.Fields
		}
		logs = append(logs, obj{"level": string(l.Level), "message": l.Message, "fields": fields, "step_id": l.StepID, "attempt": l.Attempt})
	}
	out["timeline"], out["logs"] = timeline, logs
	out["parent_run_id"] = run.ParentRunID
	return out
}

// optInt is n, or nil (JSON null) for 0 (no limit).
func optInt(n int32) any {
	if n == 0 {
		return nil
	}
	return n
}

func str(c obj, k string) string {
	s, _ := c[k].(string)
	return s
}

// clientOp performs one client command through the SDK's public API.
func clientOp(ctx context.Context, def *stackshift.Client, op string, c obj) (any, error) {
	client := def
	if key := str(c, "api_key"); key != "" {
		custom, err := stackshift.New(stackshift.Options{APIKey: key, Endpoint: def.Endpoint()})
		if err != nil {
			return nil, err
		}
		defer custom.Close()
		client = custom
	}
	runID := str(c, "run_id")
	switch op {
	case "start":
		opts := &stackshift.StartOptions{IdempotencyKey: str(c, "idempotency_key")}
		var err error
		if ttl := str(c, "idempotency_ttl"); ttl != "" {
			if opts.IdempotencyTTL, err = stackshift.ParseDuration(ttl); err != nil {
				return nil, err
			}
		}
		if lease := str(c, "lease_timeout"); lease != "" {
			if opts.LeaseTimeout, err = stackshift.ParseDuration(lease); err != nil {
				return nil, err
			}
		}
		if n, ok := intOf(c["max_attempts"]); ok {
			opts.RetryPolicy = &stackshift.RetryPolicy{MaxAttempts: int32(n)}
		}
		if ii := str(c, "initial_interval"); ii != "" {
			if opts.RetryPolicy == nil {
				opts.RetryPolicy = &stackshift.RetryPolicy{}
			}
			if opts.RetryPolicy.InitialInterval, err = stackshift.ParseDuration(ii); err != nil {
				return nil, err
			}
		}
		opts.Delay = millis(c["delay_ms"])
		if at := str(c, "run_at"); at != "" {
			if opts.RunAt, err = time.Parse(time.RFC3339Nano, at); err != nil {
				return nil, err
			}
		}
		if p, ok := intOf(c["priority"]); ok {
			opts.Priority = int32(p)
		}
		opts.ConcurrencyKey = str(c, "concurrency_key")
		payload := c["payload"]
		if n, ok := intOf(c["payload_bytes"]); ok {
			payload = strings.Repeat("x", int(n))
		}
		queue := str(c, "queue")
		if queue == "" {
			queue = "default"
		}
		var started *stackshift.StartedRun
		if c["via_queue"] == true {
			started, err = client.Queue(queue).Enqueue(ctx, str(c, "job"), payload, opts)
		} else {
			opts.QueueName = queue
			started, err = client.Start(ctx, str(c, "job"), payload, opts)
		}
		if err != nil {
			return nil, err
		}
		return obj{"run_id": started.ID, "duplicate": started.Duplicate, "status": string(started.Run.Status)}, nil
	case "get_run", "wait_run", "cancel_run", "retry_run":
		var run *stackshift.Run
		var err error
		switch op {
		case "get_run":
			run, err = client.GetRun(ctx, runID)
		case "wait_run":
			timeout := 20 * time.Second
			if t := str(c, "timeout"); t != "" {
				if timeout, err = stackshift.ParseDuration(t); err != nil {
					return nil, err
				}
			}
			run, err = client.WaitForRun(ctx, runID, timeout)
		case "cancel_run":
			run, err = client.CancelRun(ctx, runID, str(c, "reason"))
		default:
			run, err = client.RetryRun(ctx, runID)
		}
		if err != nil {
			return nil, err
		}
		return runJSON(run), nil
	case "list_runs":
		page, err := client.ListRuns(ctx, stackshift.ListRunsOptions{Queue: str(c, "queue"), Job: str(c, "job"), Status: stackshift.RunStatus(str(c, "status"))})
		if err != nil {
			return nil, err
		}
		ids := []string{}
		for _, r := range page.Runs {
			ids = append(ids, r.ID)
		}
		return obj{"run_ids": ids}, nil
	case "publish_event":
		res, err := client.Events().Publish(ctx, str(c, "name"), c["payload"], &stackshift.PublishOptions{ID: str(c, "event_id"), Key: str(c, "key")})
		if err != nil {
			return nil, err
		}
		started := res.StartedRunIDs
		if started == nil {
			started = []string{}
		}
		return obj{"event_id": res.Event.ID, "duplicate": res.Duplicate, "matched": res.ResumedRunCount, "started_run_ids": started}, nil
	case "state_get":
		e, err := client.State().GetEntry(ctx, str(c, "key"))
		if err != nil || e == nil {
			return nil, err
		}
		return e.Value, nil
	case "state_set":
		opts := &stackshift.SetOptions{TTL: millis(c["ttl_ms"])}
		if v, ok := intOf(c["expected_version"]); ok {
			opts.ExpectedVersion = stackshift.ExpectVersion(v)
		}
		version, err := client.State().Set(ctx, str(c, "key"), c["value"], opts)
		if err != nil {
			return nil, err
		}
		return obj{"version": version}, nil
	case "state_incr":
		if by, ok := intOf(c["by"]); ok {
			return client.State().IncrementBy(ctx, str(c, "key"), by)
		}
		return client.State().Increment(ctx, str(c, "key"))
	case "state_delete":
		return client.State().Delete(ctx, str(c, "key"))
	case "lock":
		lock, err := client.State().Lock(ctx, str(c, "key"), stackshift.LockOptions{TTL: millis(c["ttl_ms"]), Wait: millis(c["wait_ms"])})
		if err != nil {
			return nil, err
		}
		if lock == nil {
			return obj{"granted": false}, nil
		}
		return obj{"granted": true, "token": lock.Token}, nil
	case "release_lock":
		token, _ := intOf(c["token"])
		return nil, client.State().ReleaseLock(ctx, str(c, "key"), token)
	case "configure_queue", "pause_queue", "resume_queue", "get_queue":
		q := client.Queue(str(c, "queue"))
		var info *stackshift.QueueInfo
		var err error
		switch op {
		case "configure_queue":
			limit, _ := intOf(c["concurrency_limit"])
			keyLimit, _ := intOf(c["key_concurrency_limit"])
			info, err = q.Configure(ctx, stackshift.QueueConfig{ConcurrencyLimit: int32(limit), KeyConcurrencyLimit: int32(keyLimit)})
		case "pause_queue":
			info, err = q.Pause(ctx)
		case "resume_queue":
			info, err = q.Resume(ctx)
		default:
			info, err = q.Get(ctx)
		}
		if err != nil {
			return nil, err
		}
		return obj{"name": info.Name, "paused": info.Paused, "concurrency_limit": optInt(info.Config.ConcurrencyLimit), "key_concurrency_limit": optInt(info.Config.KeyConcurrencyLimit)}, nil
	}
	if result, handled, err := issue10ClientOp(ctx, client, op, c); handled {
		return result, err
	}
	return nil, fmt.Errorf("unknown op %s", op)
}

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
	ledger := os.Getenv("CONFORMANCE_LEDGER")
	concurrency, _ := strconv.Atoi(os.Getenv("CONFORMANCE_CONCURRENCY"))
	graceMs, _ := strconv.Atoi(os.Getenv("CONFORMANCE_SHUTDOWN_GRACE_MS"))
	client, err := stackshift.New(stackshift.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "go adapter:", err)
		os.Exit(1)
	}
	defer client.Close()

	worker := client.NewWorker(stackshift.WorkerOptions{
		Queues:        []string{os.Getenv("CONFORMANCE_QUEUE")},
		Concurrency:   concurrency,
		ShutdownGrace: time.Duration(graceMs) * time.Millisecond,
	})
	worker.Job("conf.script", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		p, err := decode(jc.Payload)
		if err != nil {
			return nil, stackshift.NonRetryable(err)
		}
		payload, _ := p.(obj)
		ops, _ := payload["ops"].([]any)
		s := &script{ledger: ledger, outputs: []any{}, caught: []any{}}
		if err := s.run(ctx, jc, ops); err != nil {
			return nil, err
		}
		if n, ok := intOf(payload["result_bytes"]); ok {
			return strings.Repeat("x", int(n)), nil
		}
		if result, ok := payload["result"]; ok {
			return result, nil
		}
		return obj{"outputs": s.outputs, "caught": s.caught}, nil
	})
	worker.Job("conf.echo", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		return jc.Payload, nil
	})
	// conf.on_event is declared with an event trigger: the worker creates it before polling.
	worker.Job("conf.on_event", func(ctx context.Context, jc *stackshift.JobContext) (any, error) {
		return jc.Payload, nil
	}, stackshift.JobOptions{Triggers: []stackshift.JobTrigger{{Event: "conf.triggered." + os.Getenv("CONFORMANCE_QUEUE")}}})
	if err := worker.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "go adapter:", err)
		os.Exit(1)
	}

	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(obj{"ready": true, "sdk": "go"})
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for scanner.Scan() {
		v, err := decode(scanner.Bytes())
		command, ok := v.(obj)
		if err != nil || !ok {
			continue
		}
		op := str(command, "op")
		if op == "shutdown" {
			break
		}
		result, err := clientOp(context.Background(), client, op, command)
		if err != nil {
			var typed *stackshift.Error
			var conflict *stackshift.ConflictError
			if errors.As(err, &conflict) {
				_ = out.Encode(obj{"id": command["id"], "error": obj{"code": "FAILED_PRECONDITION", "reason": conflict.Reason, "type": "*stackshift.ConflictError", "message": conflict.Message}})
			} else if errors.As(err, &typed) {
				_ = out.Encode(obj{"id": command["id"], "error": obj{"code": typed.Name(), "type": "*stackshift.Error", "message": typed.Message}})
			} else {
				_ = out.Encode(obj{"id": command["id"], "error": obj{"code": "UNKNOWN", "type": "", "message": err.Error()}})
			}
			continue
		}
		_ = out.Encode(obj{"id": command["id"], "ok": result})
	}
	_ = worker.Shutdown(context.Background())
}
