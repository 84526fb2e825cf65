// Seed "File processing pipeline": processUpload downloads a file, parses it into batches,
// imports each batch and counts its rows with state.IncrementBy("files:<fileId>:rows",
// len(batch)), and marks the file complete, returning {"rows": N}.
//
// Each batch import is a step with the same id, import-batch, so the SDK assigns occurrence
// suffixes: import-batch, import-batch#2, import-batch#3. The row counter is incremented through
// the handler's jc.State, so each increment is journaled like a step (state:1, state:2,
// state:3). The database connection drops during the third batch on the first attempt; the
// retry replays the download, the parse, the two imported batches and their two increments
// from the journal (the increments are not applied again) and continues with the third.
//
// Checks: the run completed on attempt 2 with the right row count, every batch was imported
// exactly once, the file was downloaded once, the step ids carry the occurrence suffixes, and
// the durable row counter equals the real row count (10, not the 18 a re-applied increment
// would give).
//
//	cd sdk-go && go run ./examples/file_import
package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stackshift/stackshift/sdk-go"
	"github.com/stackshift/stackshift/sdk-go/examples/internal/check"
)

const (
	batchSize = 4
	rows      = 10
)

var (
	mu          sync.Mutex
	downloads   int
	importCalls int
	imported    []int
	completed   int
)

type row struct {
	Email string `json:"email"`
	Plan  string `json:"plan"`
}

type parsedFile struct {
	Batches   [][]row `json:"batches"`
	TotalRows int     `json:"totalRows"`
}

func downloadFile(fileID string) (string, error) {
	mu.Lock()
	downloads++
	mu.Unlock()
	lines := []string{"email,plan"}
	for i := 1; i <= rows; i++ {
		plan := "free"
		if i%3 == 0 {
			plan = "pro"
		}
		lines = append(lines, fmt.Sprintf("user%d@example.com,%s", i, plan))
	}
	return strings.Join(lines, "\n"), nil
}

func parseCSV(csv string) (parsedFile, error) {
	var all []row
	for _, line := range strings.Split(csv, "\n")[1:] {
		email, plan, ok := strings.Cut(line, ",")
		if !ok {
			return parsedFile{}, stackshift.NonRetryablef("malformed row %q", line)
		}
		all = append(all, row{Email: email, Plan: plan})
	}
	var out parsedFile
	for chunk := range slices.Chunk(all, batchSize) {
		out.Batches = append(out.Batches, chunk)
	}
	out.TotalRows = len(all)
	return out, nil
}

func importRows(index int, batch []row) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	importCalls++
	if importCalls == 3 {
		return 0, errors.New("database connection reset (simulated crash)")
	}
	imported = append(imported, index)
	fmt.Printf("  database: imported batch %d (%d rows)\n", index+1, len(batch))
	return len(batch), nil
}

func processUpload(ctx context.Context, jc *stackshift.JobContext) (any, error) {
	var p struct {
		FileID string `json:"fileId"`
	}
	if err := jc.Decode(&p); err != nil {
		return nil, stackshift.NonRetryable(err)
	}
	file, err := stackshift.RunStep(ctx, jc.Step, "download-file", func(ctx context.Context) (string, error) { return downloadFile(p.FileID) })
	if err != nil {
		return nil, err
	}
	parsed, err := stackshift.RunStep(ctx, jc.Step, "parse-file", func(ctx context.Context) (parsedFile, error) { return parseCSV(file) })
	if err != nil {
		return nil, err
	}
	for index, batch := range parsed.Batches {
		if _, err := stackshift.RunStep(ctx, jc.Step, "import-batch", func(ctx context.Context) (int, error) { return importRows(index, batch) }); err != nil {
			return nil, err
		}
		if _, err := jc.State.IncrementBy(ctx, "files:"+p.FileID+":rows", int64(len(batch))); err != nil {
			return nil, err
		}
	}
	if _, err := jc.Step.Run(ctx, "mark-complete", func(ctx context.Context) (any, error) {
		mu.Lock()
		completed++
		mu.Unlock()
		return map[string]any{"fileId": p.FileID, "complete": true}, nil
	}); err != nil {
		return nil, err
	}
	return map[string]int{"rows": parsed.TotalRows}, nil
}

func main() {
	ctx := context.Background()
	client, err := stackshift.New(stackshift.Options{})
	if err != nil {
		check.Fatal(err)
	}
	defer client.Close()
	worker := client.NewWorker(stackshift.WorkerOptions{Concurrency: 4, ShutdownGrace: 5 * time.Second})
	worker.Job("processUpload", processUpload)
	worker.Start()

	fileID := "file_" + check.UniqueSuffix()
	started, err := client.Start(ctx, "processUpload", map[string]string{"fileId": fileID}, &stackshift.StartOptions{
		RetryPolicy: &stackshift.RetryPolicy{MaxAttempts: 3, InitialInterval: 200 * time.Millisecond},
	})
	if err != nil {
		check.Fatal(err)
	}
	run, err := client.WaitForRun(ctx, started.ID, 20*time.Second)
	_ = worker.Shutdown(ctx)
	if err != nil {
		check.Fatal(err)
	}
	var counted int64
	if _, err := client.State().Get(ctx, "files:"+fileID+":rows", &counted); err != nil {
		check.Fatal(err)
	}
	var ids, stateCalls []string
	for _, s := range run.Steps {
		if s.Kind == stackshift.StepKindState {
			stateCalls = append(stateCalls, fmt.Sprintf("%s@%d", s.ID, s.Attempt))
			continue
		}
		ids = append(ids, s.ID)
	}
	fmt.Printf("run %s is %s after %d attempt(s); result %s\n  steps: %s\n", run.ID, run.Status, run.Attempt, run.Result, strings.Join(ids, ", "))
	mu.Lock()
	defer mu.Unlock()
	check.That(run.Status == stackshift.StatusCompleted, "the run completed")
	check.That(run.Attempt == 2, "it took exactly two attempts")
	check.That(string(run.Result) == fmt.Sprintf(`{"rows":%d}`, rows), fmt.Sprintf(`the result is {"rows":%d}`, rows))
	check.That(downloads == 1, "the file was downloaded once")
	check.That(slices.Equal(imported, []int{0, 1, 2}), "every batch was imported exactly once, in order")
	check.That(completed == 1, "the file was marked complete once")
	check.That(slices.Equal(ids, []string{"download-file", "parse-file", "import-batch", "import-batch#2", "import-batch#3", "mark-complete"}),
		"step ids carry occurrence suffixes (import-batch, import-batch#2, import-batch#3)")
	fmt.Printf("  state: files:%s:rows = %d; journaled state calls %v\n", fileID, counted, stateCalls)
	check.That(counted == rows, fmt.Sprintf("the durable row counter is %d (each increment applied once)", rows))
	check.That(slices.Equal(stateCalls, []string{"state:1@1", "state:2@1", "state:3@2"}),
		"the increments are journaled as state:1, state:2 (attempt 1) and state:3 (attempt 2)")
	check.Finish("file_import")
}
