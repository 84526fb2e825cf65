package stackshift

// Logger is the handler's run-scoped logger (JobContext.Log). Lines carry a level, a message
// and structured fields, and are tied to the run, the attempt and the step executing when they
// were logged. They are buffered and sent in batches (AppendLogs): when 100 lines are waiting,
// one second after the first waiting line, and always before the attempt reports its outcome
// or suspends. Logging never fails the handler: lines that cannot be sent (the lease is gone,
// the server is unreachable) are dropped. The server keeps at most 1,000 lines and 1 MiB per
// run, then stores one truncation marker (docs/observability.md).

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

const (
	logFlushLines    = 100
	logFlushInterval = time.Second
	maxLogsPerAppend = 1000
)

// LogLevel is the severity of a run's log line.
type LogLevel string

// The log levels.
const (
	LevelDebug LogLevel = "debug"
	LevelInfo  LogLevel = "info"
	LevelWarn  LogLevel = "warn"
	LevelError LogLevel = "error"
)

var levelToPB = map[LogLevel]pb.LogLevel{
	LevelDebug: pb.LogLevel_LOG_LEVEL_DEBUG, LevelInfo: pb.LogLevel_LOG_LEVEL_INFO,
	LevelWarn: pb.LogLevel_LOG_LEVEL_WARN, LevelError: pb.LogLevel_LOG_LEVEL_ERROR,
}

func levelFromPB(l pb.LogLevel) LogLevel {
	for k, v := range levelToPB {
		if v == l {
			return k
		}
	}
	return LevelInfo
}

// logSink buffers one attempt's lines and sends them.
type logSink struct {
	client pb.WorkerServiceClient
	lease  *lease
	log    *slog.Logger

	mu      sync.Mutex
	lines   []*pb.LogEntry
	timer   *time.Timer
	step    string     // the step executing now ("" outside steps)
	sending sync.Mutex // keeps batches in order
}

// Logger logs lines into the run (JobContext.Log); Run.Logs shows them. Lines carry a level,
// a message and structured fields, and are tied to the run, the attempt and the step executing
// when they were logged. They are sent in batches: at 100 lines, one second after the first
// buffered line, and always before the attempt reports its outcome or suspends. Logging never
// fails the handler: lines that cannot be sent are dropped. Fields are given like log/slog:
// alternating keys and values ("rows", 42, "file", id), or slog.Attr. Safe for concurrent use.
type Logger struct {
	sink   *logSink
	fields map[string]any
}

func newLogger(client pb.WorkerServiceClient, l *lease, log *slog.Logger) *Logger {
	return &Logger{sink: &logSink{client: client, lease: l, log: log}}
}

// With returns a logger that adds these fields to every line.
func (lg *Logger) With(args ...any) *Logger {
	fields := make(map[string]any, len(lg.fields)+len(args)/2)
	for k, v := range lg.fields {
		fields[k] = v
	}
	addFields(fields, args)
	return &Logger{sink: lg.sink, fields: fields}
}

// Debug logs at debug level.
func (lg *Logger) Debug(msg string, args ...any) { lg.Log(LevelDebug, msg, args...) }

// Info logs at info level.
func (lg *Logger) Info(msg string, args ...any) { lg.Log(LevelInfo, msg, args...) }

// Warn logs at warn level.
func (lg *Logger) Warn(msg string, args ...any) { lg.Log(LevelWarn, msg, args...) }

// Error logs at error level.
func (lg *Logger) Error(msg string, args ...any) { lg.Log(LevelError, msg, args...) }

// addFields adds slog-style arguments to fields.
func addFields(fields map[string]any, args []any) {
	for len(args) > 0 {
		switch a := args[0].(type) {
		case slog.Attr:
			fields[a.Key] = a.Value.Any()
			args = args[1:]
		case string:
			if len(args) == 1 {
				fields["!BADKEY"] = a
				return
			}
			fields[a] = args[1]
			args = args[2:]
		default:
			fields["!BADKEY"] = a
			args = args[1:]
		}
	}
}

// Log logs a line at level.
func (lg *Logger) Log(level LogLevel, msg string, args ...any) {
	pbLevel, ok := levelToPB[level]
	if !ok {
		pbLevel = pb.LogLevel_LOG_LEVEL_INFO
	}
	var body []byte
	if len(lg.fields) > 0 || len(args) > 0 {
		fields := make(map[string]any, len(lg.fields)+len(args)/2)
		for k, v := range lg.fields {
			fields[k] = v
		}
		addFields(fields, args)
		b, err := json.Marshal(fields)
		if err != nil {
			b, _ = json.Marshal(map[string]string{"!UNSERIALIZABLE": fmt.Sprint(err)})
		}
		body = b
	}
	s := lg.sink
	s.mu.Lock()
	s.lines = append(s.lines, &pb.LogEntry{Level: pbLevel, Message: msg, Fields: body, StepId: s.step, At: timestamppb.Now()})
	full := len(s.lines) >= logFlushLines
	if !full && s.timer == nil {
		s.timer = time.AfterFunc(logFlushInterval, s.flush)
	}
	s.mu.Unlock()
	if full {
		go s.flush()
	}
}

// Flush sends the buffered lines now (the worker also does so before the attempt ends).
func (lg *Logger) Flush() { lg.sink.flush() }

// setStep records the step executing now and returns the previous one.
func (s *logSink) setStep(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.step
	s.step = id
	return prev
}

// flush sends every buffered line, in batches, in order. Lines that cannot be sent are dropped.
func (s *logSink) flush() {
	s.sending.Lock()
	defer s.sending.Unlock()
	s.mu.Lock()
	lines := s.lines
	s.lines = nil
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.mu.Unlock()
	for len(lines) > 0 {
		batch := lines[:min(len(lines), maxLogsPerAppend)]
		lines = lines[len(batch):]
		resp, werr := write(s.lease, "AppendLogs", func(ctx context.Context) (*pb.AppendLogsResponse, error) {
			return s.client.AppendLogs(ctx, &pb.AppendLogsRequest{RunId: s.lease.runID, LeaseToken: s.lease.token, Entries: batch})
		})
		if werr != nil {
			s.log.Debug("log lines could not be sent; dropped", "run_id", s.lease.runID, "lines", len(batch)+len(lines))
			return
		}
		if resp.GetDropped() > 0 {
			s.log.Debug("log lines dropped by the run's log cap", "run_id", s.lease.runID, "dropped", resp.GetDropped())
		}
	}
}
