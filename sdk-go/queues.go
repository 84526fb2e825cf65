package stackshift

// Queue configuration and live statistics: Queue.Configure, Queue.Get, Queue.Pause,
// Queue.Resume and Client.ListQueues (docs/queues.md). A queue named in Start that does not
// exist yet is created with the defaults (no limits, not paused).

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// RateLimit bounds how many attempts a queue starts per sliding window of Period.
type RateLimit struct {
	// Limit is the attempts allowed per period (1-100000).
	Limit int32
	// Period is the window (1 s to 24 h).
	Period time.Duration
}

// QueueConfig is a queue's configuration. Zero fields mean "no limit" or "the server
// default".
type QueueConfig struct {
	// ConcurrencyLimit is the most runs holding a lease at once (1-100000; 0 = unlimited).
	ConcurrencyLimit int32
	// KeyConcurrencyLimit is the most runs holding a lease at once per concurrency key
	// (StartOptions.ConcurrencyKey; 1-100000; 0 = no per-key limit).
	KeyConcurrencyLimit int32
	// RateLimit bounds attempts started per period; nil = no rate limit.
	RateLimit *RateLimit
	// RetryPolicy applies to runs started without one (a start's own fields win).
	RetryPolicy *RetryPolicy
	// LeaseTimeout applies to runs that set none at start (1 s to 1 h).
	LeaseTimeout time.Duration
}

// KeyCount is the number of running runs of one concurrency key.
type KeyCount struct {
	Key     string
	Running int64
}

// QueueStats are a queue's live counts.
type QueueStats struct {
	Queued    int64
	Delayed   int64
	Running   int64
	Waiting   int64
	Completed int64
	Failed    int64
	Cancelled int64
	// OldestQueuedAge is how long the oldest deliverable queued run has waited; 0 when none.
	OldestQueuedAge time.Duration
	// RunningByKey are the keys with the most running runs (at most 20).
	RunningByKey []KeyCount
	// RateWindowStarted is the attempts started in the current rate-limit window.
	RateWindowStarted int64
}

// QueueInfo is a queue's configuration and state.
type QueueInfo struct {
	Name      string
	Config    QueueConfig
	Paused    bool
	Stats     QueueStats
	CreatedAt time.Time
	UpdatedAt time.Time
}

// QueuePage is one page of queues in name order.
type QueuePage struct {
	Queues []*QueueInfo
	// NextPageToken is empty at the end.
	NextPageToken string
}

// ListQueuesOptions page through ListQueues.
type ListQueuesOptions struct {
	// PageSize is 1-100 (0 = 50).
	PageSize  int32
	PageToken string
}

func optLimit(n int32) *int32 {
	if n == 0 {
		return nil
	}
	return &n
}

func (c QueueConfig) toPB() *pb.QueueConfig {
	out := &pb.QueueConfig{ConcurrencyLimit: optLimit(c.ConcurrencyLimit), KeyConcurrencyLimit: optLimit(c.KeyConcurrencyLimit)}
	if c.RateLimit != nil {
		out.RateLimit = &pb.RateLimit{Limit: c.RateLimit.Limit, Period: durationpb.New(c.RateLimit.Period)}
	}
	if c.RetryPolicy != nil {
		out.RetryPolicy = c.RetryPolicy.toPB()
	}
	if c.LeaseTimeout != 0 {
		out.LeaseTimeout = durationpb.New(c.LeaseTimeout)
	}
	return out
}

func queueFromPB(q *pb.Queue) (*QueueInfo, error) {
	if q == nil {
		return nil, &Error{Code: 13, Message: "unexpected response from server: no queue"}
	}
	c, s := q.GetConfig(), q.GetStats()
	info := &QueueInfo{
		Name: q.GetName(), Paused: q.GetPaused(), CreatedAt: q.GetCreatedAt().AsTime(), UpdatedAt: q.GetUpdatedAt().AsTime(),
		Config: QueueConfig{
			ConcurrencyLimit: c.GetConcurrencyLimit(), KeyConcurrencyLimit: c.GetKeyConcurrencyLimit(),
			RetryPolicy: retryPolicyFromPB(c.GetRetryPolicy()), LeaseTimeout: c.GetLeaseTimeout().AsDuration(),
		},
		Stats: QueueStats{
			Queued: s.GetQueued(), Delayed: s.GetDelayed(), Running: s.GetRunning(), Waiting: s.GetWaiting(),
			Completed: s.GetCompleted(), Failed: s.GetFailed(), Cancelled: s.GetCancelled(),
			OldestQueuedAge: s.GetOldestQueuedAge().AsDuration(), RateWindowStarted: s.GetRateWindowStarted(),
		},
	}
	if r := c.GetRateLimit(); r != nil {
		info.Config.RateLimit = &RateLimit{Limit: r.GetLimit(), Period: r.GetPeriod().AsDuration()}
	}
	for _, k := range s.GetRunningByKey() {
		info.Stats.RunningByKey = append(info.Stats.RunningByKey, KeyCount{Key: k.GetKey(), Running: k.GetRunning()})
	}
	return info, nil
}

// queueCall sends one QueuesService call with the call timeout.
func queueCall[T interface{ GetQueue() *pb.Queue }](ctx context.Context, call func(ctx context.Context) (T, error)) (*QueueInfo, error) {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := call(cctx)
	if err != nil {
		return nil, fromRPC(err)
	}
	return queueFromPB(resp.GetQueue())
}

// Configure creates the queue or replaces its whole configuration (fields left zero become
// unlimited or default). Runs already queued are delivered under the new limits from the next
// claim on. The pause switch is left as it is.
func (q *Queue) Configure(ctx context.Context, config QueueConfig) (*QueueInfo, error) {
	return queueCall(ctx, func(ctx context.Context) (*pb.UpsertQueueResponse, error) {
		return q.client.queues.UpsertQueue(ctx, &pb.UpsertQueueRequest{Name: q.Name, Config: config.toPB()})
	})
}

// Get returns the queue's configuration and live statistics (ErrNotFound for an unknown
// queue).
func (q *Queue) Get(ctx context.Context) (*QueueInfo, error) {
	return queueCall(ctx, func(ctx context.Context) (*pb.GetQueueResponse, error) {
		return q.client.queues.GetQueue(ctx, &pb.GetQueueRequest{Name: q.Name})
	})
}

// Pause stops delivery from the queue until Resume: polls get nothing from it, running runs
// continue, new starts are accepted and wait. The queue must exist.
func (q *Queue) Pause(ctx context.Context) (*QueueInfo, error) {
	return queueCall(ctx, func(ctx context.Context) (*pb.PauseQueueResponse, error) {
		return q.client.queues.PauseQueue(ctx, &pb.PauseQueueRequest{Name: q.Name})
	})
}

// Resume restarts delivery from a paused queue and wakes waiting workers at once.
func (q *Queue) Resume(ctx context.Context) (*QueueInfo, error) {
	return queueCall(ctx, func(ctx context.Context) (*pb.ResumeQueueResponse, error) {
		return q.client.queues.ResumeQueue(ctx, &pb.ResumeQueueRequest{Name: q.Name})
	})
}

// ListQueues returns one page of the namespace's queues in name order.
func (c *Client) ListQueues(ctx context.Context, opts ListQueuesOptions) (*QueuePage, error) {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.queues.ListQueues(cctx, &pb.ListQueuesRequest{PageSize: opts.PageSize, PageToken: opts.PageToken})
	if err != nil {
		return nil, fromRPC(err)
	}
	page := &QueuePage{NextPageToken: resp.GetNextPageToken()}
	for _, q := range resp.GetQueues() {
		info, err := queueFromPB(q)
		if err != nil {
			return nil, err
		}
		page.Queues = append(page.Queues, info)
	}
	return page, nil
}
