package stackshift

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/stackshift/stackshift/sdk-go/gen/stackshift/v1"
)

// DefaultEndpoint is the endpoint used when none is configured.
const DefaultEndpoint = "http://127.0.0.1:7447"

// Version is the SDK version, sent in the user agent.
const Version = "0.1.0"

const (
	callTimeout    = 30 * time.Second
	maxServerWait  = 60 * time.Second
	longPollSlack  = 10 * time.Second
	maxRecvMessage = 64 << 20
)

// Options configures a Client. Empty fields come from the environment.
type Options struct {
	// APIKey is sent as "authorization: Bearer <key>". Default: STACKSHIFT_API_KEY.
	APIKey string
	// Endpoint is the server URL (http:// or https://). Default: STACKSHIFT_ENDPOINT, else
	// http://127.0.0.1:7447.
	Endpoint string
	// TLSCAPEM is the PEM CA certificate(s) trusted for an https:// endpoint instead of the
	// system roots. Default: the file named by STACKSHIFT_TLS_CA.
	TLSCAPEM []byte
	// TLSClientCertPEM and TLSClientKeyPEM are the client certificate and key presented
	// for mutual TLS (both or neither). Default: the files named by
	// STACKSHIFT_TLS_CLIENT_CERT and STACKSHIFT_TLS_CLIENT_KEY.
	TLSClientCertPEM []byte
	TLSClientKeyPEM  []byte
	// DialOptions are added to the gRPC client's options (advanced).
	DialOptions []grpc.DialOption
}

// pemOption returns the PEM bytes given, else the contents of the file named by env.
func pemOption(given []byte, env string) ([]byte, error) {
	if len(given) > 0 {
		return given, nil
	}
	path := strings.TrimSpace(os.Getenv(env))
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, invalidArgument("%s: cannot read %q: %v", env, path, err)
	}
	return b, nil
}

// tlsConfig builds the client TLS settings: the CA (else system roots) and the optional
// client identity for mutual TLS.
func tlsConfig(opts Options) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	ca, err := pemOption(opts.TLSCAPEM, "STACKSHIFT_TLS_CA")
	if err != nil {
		return nil, err
	}
	if ca != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, invalidArgument("invalid TLS settings: the CA certificate is not PEM")
		}
		cfg.RootCAs = pool
	}
	cert, err := pemOption(opts.TLSClientCertPEM, "STACKSHIFT_TLS_CLIENT_CERT")
	if err != nil {
		return nil, err
	}
	key, err := pemOption(opts.TLSClientKeyPEM, "STACKSHIFT_TLS_CLIENT_KEY")
	if err != nil {
		return nil, err
	}
	if (cert == nil) != (key == nil) {
		return nil, invalidArgument("invalid TLS settings: set both the client certificate and key for mutual TLS, or neither")
	}
	if cert != nil {
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, invalidArgument("invalid TLS settings: client certificate/key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// Client starts, inspects, waits for, lists, cancels and retries runs, and creates workers.
// It is safe for concurrent use; close it with Close.
type Client struct {
	conn      *grpc.ClientConn
	jobs      pb.JobsServiceClient
	worker    pb.WorkerServiceClient
	state     pb.StateServiceClient
	events    pb.EventsServiceClient
	queues    pb.QueuesServiceClient
	schedules pb.ScheduleServiceClient
	triggers  pb.TriggerServiceClient
	endpoint  string
}

var printableASCII = regexp.MustCompile(`^[\x21-\x7e]+$`)

// New creates a client. It connects lazily: it fails only for an invalid endpoint or API key.
func New(opts Options) (*Client, error) {
	endpoint := strings.TrimSpace(opts.Endpoint)
	if endpoint == "" {
		endpoint = strings.TrimSpace(os.Getenv("STACKSHIFT_ENDPOINT"))
	}
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	key := opts.APIKey
	if key == "" {
		key = strings.TrimSpace(os.Getenv("STACKSHIFT_API_KEY"))
	}
	if key != "" && !printableASCII.MatchString(key) {
		return nil, invalidArgument("the API key must be printable ASCII without spaces")
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, invalidArgument("invalid endpoint %q: expected e.g. http://127.0.0.1:7447", endpoint)
	}
	creds := insecure.NewCredentials()
	if u.Scheme == "https" {
		cfg, err := tlsConfig(opts)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(cfg)
	}
	auth := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, callOpts ...grpc.CallOption) error {
		if key != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
		}
		err := invoker(ctx, method, req, reply, cc, callOpts...)
		if u.Scheme == "https" {
			err = tlsHint(err)
		}
		return err
	}
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUnaryInterceptor(auth),
		grpc.WithUserAgent("stackshift-sdk-go/" + Version),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMessage)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	}, opts.DialOptions...)
	conn, err := grpc.NewClient(u.Host, dial...)
	if err != nil {
		return nil, invalidArgument("cannot create a client for %q: %v", endpoint, err)
	}
	return &Client{
		conn: conn, jobs: pb.NewJobsServiceClient(conn), worker: pb.NewWorkerServiceClient(conn),
		state: pb.NewStateServiceClient(conn), events: pb.NewEventsServiceClient(conn), queues: pb.NewQueuesServiceClient(conn),
		schedules: pb.NewScheduleServiceClient(conn), triggers: pb.NewTriggerServiceClient(conn),
		endpoint: endpoint,
	}, nil
}

// Close closes the connection (shut workers down first).
func (c *Client) Close() error { return c.conn.Close() }

// Endpoint is the server URL this client talks to.
func (c *Client) Endpoint() string { return c.endpoint }

// JobsService is the generated JobsService client (raw access; authenticated).
func (c *Client) JobsService() pb.JobsServiceClient { return c.jobs }

// WorkerService is the generated WorkerService client (raw access; authenticated).
func (c *Client) WorkerService() pb.WorkerServiceClient { return c.worker }

// State is the state store outside runs: every call applies directly and is not journaled
// (inside a handler use JobContext.State).
func (c *Client) State() *State { return &State{client: c.state} }

// StartOptions are the options of Start and Queue.Enqueue.
type StartOptions struct {
	// QueueName is the queue to run on (default "default"; ignored by Queue.Enqueue).
	QueueName string
	// IdempotencyKey makes a duplicate start within IdempotencyTTL return the existing run.
	IdempotencyKey string
	// IdempotencyTTL is how long the key is remembered (default 24 h; see ParseDuration for "30d").
	IdempotencyTTL time.Duration
	// RetryPolicy overrides the default retry policy.
	RetryPolicy *RetryPolicy
	// LeaseTimeout is the lease of this run's attempts (1 s to 1 h).
	LeaseTimeout time.Duration
	// Delay delays the first delivery (at most 365 days). Set at most one of Delay and RunAt.
	Delay time.Duration
	// RunAt delivers the run no earlier than this instant (at most 365 days ahead).
	RunAt time.Time
	// Priority orders delivery within the queue, -1000 to 1000 (default 0; higher first).
	Priority int32
	// ConcurrencyKey (e.g. a customer id) is what the queue's KeyConcurrencyLimit counts.
	ConcurrencyKey string
}

// StartedRun is what Start and Enqueue return.
type StartedRun struct {
	ID  string
	Run *Run
	// Duplicate is true when the idempotency key matched an existing run.
	Duplicate bool
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// Start starts a run of job with payload (any JSON-serializable value, or json.RawMessage).
func (c *Client) Start(ctx context.Context, job string, payload any, opts *StartOptions) (*StartedRun, error) {
	if opts == nil {
		opts = &StartOptions{}
	}
	body, err := marshalJSON(payload, "payload")
	if err != nil {
		return nil, err
	}
	req := &pb.StartRunRequest{Job: job, Payload: body, Queue: opts.QueueName, IdempotencyKey: opts.IdempotencyKey, Priority: opts.Priority, ConcurrencyKey: opts.ConcurrencyKey}
	if opts.Delay != 0 && !opts.RunAt.IsZero() {
		return nil, invalidArgument("set at most one of Delay and RunAt")
	}
	if opts.Delay != 0 {
		req.Delay = durationpb.New(opts.Delay)
	}
	if !opts.RunAt.IsZero() {
		req.RunAt = timestamppb.New(opts.RunAt)
	}
	if opts.IdempotencyTTL != 0 {
		req.IdempotencyTtl = durationpb.New(opts.IdempotencyTTL)
	}
	if opts.LeaseTimeout != 0 {
		req.LeaseTimeout = durationpb.New(opts.LeaseTimeout)
	}
	if p := opts.RetryPolicy; p != nil {
		req.RetryPolicy = p.toPB()
	}
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.jobs.StartRun(cctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	run, err := runFromPB(resp.GetRun())
	if err != nil {
		return nil, err
	}
	return &StartedRun{ID: run.ID, Run: run, Duplicate: resp.GetDuplicate()}, nil
}

// Queue is a named queue: Queue(name).Enqueue(job, payload, opts) is Start with the queue set.
type Queue struct {
	client *Client
	// Name is the queue's name.
	Name string
}

// Queue returns a handle on a named queue.
func (c *Client) Queue(name string) *Queue { return &Queue{client: c, Name: name} }

// Enqueue starts a run of job on this queue.
func (q *Queue) Enqueue(ctx context.Context, job string, payload any, opts *StartOptions) (*StartedRun, error) {
	o := StartOptions{}
	if opts != nil {
		o = *opts
	}
	o.QueueName = q.Name
	return q.client.Start(ctx, job, payload, &o)
}

// GetRun returns a run with its attempts and steps (ErrNotFound for an unknown id).
func (c *Client) GetRun(ctx context.Context, runID string) (*Run, error) {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.jobs.GetRun(cctx, &pb.GetRunRequest{RunId: runID})
	if err != nil {
		return nil, fromRPC(err)
	}
	return runFromPB(resp.GetRun())
}

// WaitForRun waits until the run is completed, failed or cancelled, or until timeout passes,
// and returns the run as it then is (check Status).
func (c *Client) WaitForRun(ctx context.Context, runID string, timeout time.Duration) (*Run, error) {
	until := time.Now().Add(timeout)
	for {
		wait := min(max(time.Until(until), 0), maxServerWait)
		req := &pb.GetRunRequest{RunId: runID}
		if wait > 0 {
			req.Wait = durationpb.New(wait)
		}
		cctx, cancel := withTimeout(ctx, wait+longPollSlack)
		resp, err := c.jobs.GetRun(cctx, req)
		cancel()
		if err != nil {
			return nil, fromRPC(err)
		}
		run, err := runFromPB(resp.GetRun())
		if err != nil || run.Status.Final() || !time.Now().Before(until) {
			return run, err
		}
		if wait < time.Second {
			select {
			case <-ctx.Done():
				return run, nil
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// ListRunsOptions filter ListRuns. Results are newest first.
type ListRunsOptions struct {
	Job       string
	Queue     string
	Status    RunStatus
	PageSize  int32
	PageToken string
}

// RunPage is one page of ListRuns.
type RunPage struct {
	Runs []*Run
	// NextPageToken is empty at the end.
	NextPageToken string
}

// ListRuns returns one page of runs.
func (c *Client) ListRuns(ctx context.Context, opts ListRunsOptions) (*RunPage, error) {
	status, err := statusToPB(opts.Status)
	if err != nil {
		return nil, err
	}
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.jobs.ListRuns(cctx, &pb.ListRunsRequest{Job: opts.Job, Queue: opts.Queue, Status: status, PageSize: opts.PageSize, PageToken: opts.PageToken})
	if err != nil {
		return nil, fromRPC(err)
	}
	page := &RunPage{NextPageToken: resp.GetNextPageToken()}
	for _, r := range resp.GetRuns() {
		run, err := runFromPB(r)
		if err != nil {
			return nil, err
		}
		page.Runs = append(page.Runs, run)
	}
	return page, nil
}

// CancelRun cancels a queued, running or waiting run (ErrFailedPrecondition when final).
func (c *Client) CancelRun(ctx context.Context, runID, reason string) (*Run, error) {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.jobs.CancelRun(cctx, &pb.CancelRunRequest{RunId: runID, Reason: reason})
	if err != nil {
		return nil, fromRPC(err)
	}
	return runFromPB(resp.GetRun())
}

// RetryRun gives a failed or cancelled run new attempts; its completed steps stay memoized.
func (c *Client) RetryRun(ctx context.Context, runID string) (*Run, error) {
	cctx, cancel := withTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.jobs.RetryRun(cctx, &pb.RetryRunRequest{RunId: runID})
	if err != nil {
		return nil, fromRPC(err)
	}
	return runFromPB(resp.GetRun())
}

// marshalJSON encodes v (json.RawMessage passes through; nil is null).
func marshalJSON(v any, what string) ([]byte, error) {
	if o, ok := v.(Output); ok {
		v = json.RawMessage(o)
	}
	if raw, ok := v.(json.RawMessage); ok {
		if len(raw) == 0 {
			return []byte("null"), nil
		}
		if !json.Valid(raw) {
			return nil, invalidArgument("%s is not valid JSON", what)
		}
		return raw, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, invalidArgument("%s is not JSON-serializable: %v", what, err)
	}
	return b, nil
}

// tlsHint adds what to check to a connection failure over TLS: a server that requires
// mutual TLS closes the connection of a client without an accepted certificate, which
// otherwise surfaces as a bare "broken pipe" or "connection reset".
func tlsHint(err error) error {
	s, ok := status.FromError(err)
	if !ok || s.Code() != codes.Unavailable {
		return err
	}
	msg := s.Message()
	lower := strings.ToLower(msg)
	for _, sign := range []string{"broken pipe", "connection reset", "tls", "certificate", "handshake", "eof"} {
		if strings.Contains(lower, sign) {
			return status.Error(codes.Unavailable, msg+" (the TLS connection failed or was closed by the server: "+
				"check the CA for the server certificate (TLSCAPEM or STACKSHIFT_TLS_CA), and, if the server requires "+
				"mutual TLS (--tls-client-ca), a client certificate and key signed by its client CA "+
				"(TLSClientCertPEM/TLSClientKeyPEM or STACKSHIFT_TLS_CLIENT_CERT/STACKSHIFT_TLS_CLIENT_KEY))")
		}
	}
	return err
}
