#!/usr/bin/env bash
# Run the whole StackShift test suite: protobuf lint + breaking check, the SDK code-generation
# drift check, rustfmt, clippy, the Rust tests against a real PostgreSQL, the TypeScript, Python
# and Go SDK builds and tests, every SDK's examples against a real server, the web dashboard in
# a real headless Chromium, and the conformance suite for all four SDKs (SQLite; the Rust SDK
# on PostgreSQL too).
#
#   bash scripts/test.sh
#
# Prerequisites: Rust toolchain with rustfmt + clippy, Node.js >= 20 with npm (buf, the
# TypeScript SDK), Python >= 3.10 with venv + pip, Go >= 1.24 (newer toolchains are fetched
# through the Go module proxy when a go.mod asks for them), git, psql, openssl, and either
# PostgreSQL server binaries (scripts/pg.sh installs them via apt-get when run as root) or
# STACKSHIFT_TEST_POSTGRES_URL pointing at a server where the role may CREATE DATABASE.
#
# Environment knobs:
#   STACKSHIFT_TEST_POSTGRES_URL   use this PostgreSQL instead of starting scripts/pg.sh
#   STACKSHIFT_BUF_BREAKING_AGAINST  baseline for buf breaking (see scripts/buf-breaking.sh)
#   STACKSHIFT_TEST_TIMEOUT        limit for `cargo test`, seconds (default 2700)
#   STACKSHIFT_EXAMPLE_TIMEOUT     limit per SDK example run, seconds (default 300)
#                                  (both only apply when stdin is not a terminal, e.g. in CI:
#                                  `timeout` moves the command out of the terminal's process
#                                  group, which would make Ctrl-C ineffective interactively)
#   STACKSHIFT_SERVER_WAIT         seconds to wait for the example server to listen (default 30)
#   STACKSHIFT_CHROMIUM            Chromium for the dashboard browser test (default
#                                  /usr/bin/chromium; the test is skipped, loudly, when it is
#                                  missing and CI is not set; in CI a missing one fails)
#   STACKSHIFT_BROWSER_TIMEOUT     limit for the browser test, seconds (default 300)
#   STACKSHIFT_SDK_TIMEOUT         limit per SDK test / conformance phase, seconds (default 900)
#
# PostgreSQL started by this script is left running (fast re-runs); `scripts/pg.sh stop`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# In CI: Cargo.lock must be up to date (--locked) and no incremental artifacts (throwaway
# machine: less disk and I/O, same result). Locally, cargo may update Cargo.lock as usual.
LOCKED=() # expanded as ${LOCKED[@]+"${LOCKED[@]}"}: safe with set -u on bash < 4.4 (macOS)
if [ "${CI:-}" = "true" ]; then
    LOCKED=(--locked)
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

TEST_TIMEOUT="${STACKSHIFT_TEST_TIMEOUT:-2700}"
EXAMPLE_TIMEOUT="${STACKSHIFT_EXAMPLE_TIMEOUT:-300}"
SDK_TIMEOUT="${STACKSHIFT_SDK_TIMEOUT:-900}"
SERVER_WAIT="${STACKSHIFT_SERVER_WAIT:-30}"
EXAMPLES=(verification_email payment_provisioning file_import payment_confirmation)

# ---------------------------------------------------------------------------------------------
# Phase bookkeeping, summary and cleanup
# ---------------------------------------------------------------------------------------------
SCRIPT_START=$SECONDS
CURRENT_PHASE=""
PHASE_START=$SECONDS
DONE_PHASES=()

phase() {
    finish_phase
    CURRENT_PHASE="$1"
    PHASE_START=$SECONDS
    printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$CURRENT_PHASE"
}
finish_phase() {
    if [ -n "$CURRENT_PHASE" ]; then
        local dt=$((SECONDS - PHASE_START))
        DONE_PHASES+=("$CURRENT_PHASE (${dt}s)")
        printf '==> %s: ok (%ss)\n' "$CURRENT_PHASE" "$dt"
        CURRENT_PHASE=""
    fi
}
fail() {
    printf '\nERROR: %s\n' "$*" >&2
    exit 1
}

SERVER_PID=""
SERVER_LOG=""
WORK_DIR=""
# Totals over every `cargo test` binary and example, for the closing `N passed, N failed` line.
PASSED=0
FAILED=0
TEST_LOG="$(mktemp "${TMPDIR:-/tmp}/stackshift-cargo-test.XXXXXX")"

count_cargo_results() {
    local p f
    p=$(grep -aoE 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$TEST_LOG" |
        awk '{s += $4} END {print s + 0}')
    f=$(grep -aoE 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$TEST_LOG" |
        awk '{s += $6} END {print s + 0}')
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
}

# Runs `bash scripts/sdk-tests.sh "$@"` (see that script) and adds its closing
# `sdk-tests: N passed, N failed` line to the totals.
sdk_tests() {
    local out rc=0 line
    out="$(mktemp "${TMPDIR:-/tmp}/stackshift-sdk-tests-log.XXXXXX")"
    with_timeout "$SDK_TIMEOUT" "sdk-tests $*" bash scripts/sdk-tests.sh "$@" 2>&1 | tee "$out" || rc=$?
    line="$(grep -aE '^sdk-tests: [0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)"
    rm -f "$out"
    [ -n "$line" ] || line="sdk-tests: 0 passed, 1 failed"
    PASSED=$((PASSED + $(echo "$line" | awk '{print $2}')))
    FAILED=$((FAILED + $(echo "$line" | awk '{print $4}')))
    [ "$rc" -eq 0 ] || fail "sdk-tests $* failed"
}

stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        local _
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server did not exit after SIGTERM; sending SIGKILL" >&2
            kill -9 "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

on_exit() {
    local rc=$?
    set +e
    stop_server
    local total=$((SECONDS - SCRIPT_START))
    if [ "$rc" -eq 0 ]; then
        finish_phase
        [ -n "$WORK_DIR" ] && rm -rf "$WORK_DIR"
        printf '\n'
        printf '  %s\n' "${DONE_PHASES[@]}"
        printf 'test.sh: PASSED - all %d phases ok in %ds\n' "${#DONE_PHASES[@]}" "$total"
        rm -f "$TEST_LOG"
        printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
    else
        if [ -n "$SERVER_LOG" ] && [ -f "$SERVER_LOG" ]; then
            printf '\n----- stackshift-server log (%s) -----\n' "$SERVER_LOG" >&2
            tail -n 200 "$SERVER_LOG" >&2
            printf -- '----- end of server log -----\n' >&2
        fi
        printf '\n' >&2
        [ "${#DONE_PHASES[@]}" -gt 0 ] && printf '  ok: %s\n' "${DONE_PHASES[@]}" >&2
        printf 'test.sh: FAILED in phase "%s" (exit %d) after %ds\n' "${CURRENT_PHASE:-setup}" "$rc" "$total" >&2
        [ "$FAILED" -gt 0 ] || FAILED=1
        printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need() {
    command -v "$1" >/dev/null 2>&1 || fail "'$1' is not installed. $2"
}

# Run "$@" with a time limit (non-interactive runs only), failing clearly on timeout.
with_timeout() {
    local secs="$1" what="$2"
    shift 2
    if [ -t 0 ] || ! command -v timeout >/dev/null 2>&1; then
        "$@"
        return
    fi
    local rc=0
    timeout --kill-after=30 "$secs" "$@" || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        fail "$what timed out after ${secs}s"
    fi
    return "$rc"
}

# Print a free TCP port on 127.0.0.1.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local p _
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    fail "could not find a free TCP port"
}

# ---------------------------------------------------------------------------------------------
# (a) tools
# ---------------------------------------------------------------------------------------------
phase "tools"
need cargo "Install Rust via https://rustup.rs (toolchain from rust-toolchain/Cargo.toml rust-version)."
need git "Install git (apt-get install -y git)."
cargo fmt --version >/dev/null 2>&1 || fail "rustfmt is missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || fail "clippy is missing: rustup component add clippy"
if [ ! -x node_modules/.bin/buf ]; then
    need npm "Install Node.js + npm (e.g. apt-get install -y nodejs npm) so buf can be installed."
    echo "node_modules/.bin/buf missing; running npm ci"
    npm ci --no-audit --no-fund
fi
[ -x node_modules/.bin/buf ] || fail "npm ci did not install node_modules/.bin/buf"
BUF="$ROOT/node_modules/.bin/buf"
need node "Install Node.js >= 20 with npm."
need python3 "Install Python >= 3.10 with venv and pip (apt-get install -y python3 python3-venv python3-pip)."
python3 -c 'import venv, ensurepip' 2>/dev/null || fail "python3 lacks venv/ensurepip: apt-get install -y python3-venv"
need go "Install Go >= 1.24 (https://go.dev/dl/)."
need psql "Install the PostgreSQL client tools (apt-get install -y postgresql-client)."
need openssl "Install the openssl command (apt-get install -y openssl); the reliability suite's TLS scenario generates its certificates with it."
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || [ -n "${STACKSHIFT_LIBFAKETIME:-}" ] ||
    fail "libfaketime is missing: apt-get install -y faketime (the reliability suite's clock scenario preloads it), or set STACKSHIFT_LIBFAKETIME to libfaketime.so.1"
echo "$(cargo --version); $(rustc --version); buf $("$BUF" --version 2>&1)"
echo "node $(node --version); npm $(npm --version); $(python3 --version); $(go version)"

# ---------------------------------------------------------------------------------------------
# (b) protobuf: lint, build, breaking
# ---------------------------------------------------------------------------------------------
phase "buf lint"
"$BUF" lint || fail "buf lint failed (rules: buf.yaml). Fix the .proto files listed above."
"$BUF" build -o /dev/null || fail "buf build failed"

phase "buf breaking"
bash scripts/buf-breaking.sh || fail "buf breaking check failed (see above)"

phase "sdk-gen drift check"
bash sdk-gen/check.sh || fail "the generated SDK code is stale: run 'bash sdk-gen/generate.sh' and commit the result"

# ---------------------------------------------------------------------------------------------
# (c) formatting, (d) clippy
# ---------------------------------------------------------------------------------------------
phase "cargo fmt --check"
cargo fmt --all -- --check || fail "code is not rustfmt-formatted; run 'cargo fmt --all'"

phase "cargo clippy"
cargo clippy --workspace --all-targets ${LOCKED[@]+"${LOCKED[@]}"} -- -D warnings ||
    fail "clippy found problems (warnings are errors: -D warnings)"

# ---------------------------------------------------------------------------------------------
# (e) PostgreSQL
# ---------------------------------------------------------------------------------------------
phase "postgresql"
if [ -n "${STACKSHIFT_TEST_POSTGRES_URL:-}" ]; then
    echo "using STACKSHIFT_TEST_POSTGRES_URL from the environment"
else
    bash scripts/pg.sh start >/dev/null || fail "could not start the test PostgreSQL (scripts/pg.sh start)"
    STACKSHIFT_TEST_POSTGRES_URL="$(bash scripts/pg.sh url)"
    export STACKSHIFT_TEST_POSTGRES_URL
    echo "STACKSHIFT_TEST_POSTGRES_URL=$STACKSHIFT_TEST_POSTGRES_URL (left running; stop with scripts/pg.sh stop)"
fi
export STACKSHIFT_REQUIRE_POSTGRES=1

# ---------------------------------------------------------------------------------------------
# (f) cargo test
# ---------------------------------------------------------------------------------------------
phase "cargo test"
# Includes the short fuzz run (server/tests/fuzz_smoke.rs: the cargo-fuzz targets' entry points
# over the seed corpus and random mutations, 2 s per service; docs/reliability.md "Fuzzing").
test_rc=0
with_timeout "$TEST_TIMEOUT" "cargo test" cargo test --workspace ${LOCKED[@]+"${LOCKED[@]}"} 2>&1 |
    tee "$TEST_LOG" || test_rc=$?
count_cargo_results
[ "$test_rc" -eq 0 ] || fail "cargo test failed"

# ---------------------------------------------------------------------------------------------
# (g) SDK examples against a real server
# ---------------------------------------------------------------------------------------------
phase "build server + examples"
# Same feature unification as `cargo test --workspace` above, so this only links binaries
# (building single packages would resolve features differently and recompile dependencies).
cargo build --workspace --all-targets ${LOCKED[@]+"${LOCKED[@]}"} ||
    fail "building the workspace (server binary and SDK examples) failed"
SERVER_BIN="$ROOT/target/debug/stackshift-server"
[ -x "$SERVER_BIN" ] || fail "$SERVER_BIN was not produced by cargo build"
export STACKSHIFT_SERVER_BIN="$SERVER_BIN"

# ---------------------------------------------------------------------------------------------
# (h) TypeScript, Python and Go SDKs: build, tests against the real server, install checks
# ---------------------------------------------------------------------------------------------
phase "TypeScript SDK"
sdk_tests typescript

phase "Python SDK"
sdk_tests python

phase "Go SDK"
sdk_tests go

phase "examples"
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/stackshift-examples.XXXXXX")"
SERVER_LOG="$WORK_DIR/server.log"
PORT="$(free_port)"
DB_URL="sqlite://$WORK_DIR/examples.db"
echo "starting $SERVER_BIN --database-url $DB_URL --listen 127.0.0.1:$PORT (log: $SERVER_LOG)"
RUST_LOG="${RUST_LOG:-info}" "$SERVER_BIN" --database-url "$DB_URL" --listen "127.0.0.1:$PORT" \
    </dev/null >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

deadline=$((SECONDS + SERVER_WAIT))
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID" 2>/dev/null && src=0 || src=$?
        SERVER_PID=""
        fail "stackshift-server exited (status $src) before listening on 127.0.0.1:$PORT"
    fi
    [ "$SECONDS" -lt "$deadline" ] ||
        fail "stackshift-server did not accept TCP connections on 127.0.0.1:$PORT within ${SERVER_WAIT}s"
    sleep 0.2
done
echo "server is listening on 127.0.0.1:$PORT (pid $SERVER_PID)"

export STACKSHIFT_ENDPOINT="http://127.0.0.1:$PORT"
for ex in "${EXAMPLES[@]}"; do
    echo "--- example $ex (STACKSHIFT_ENDPOINT=$STACKSHIFT_ENDPOINT)"
    ex_start=$SECONDS
    [ -x "$ROOT/target/debug/examples/$ex" ] || fail "example binary target/debug/examples/$ex is missing"
    with_timeout "$EXAMPLE_TIMEOUT" "example $ex" "$ROOT/target/debug/examples/$ex" ||
        { FAILED=$((FAILED + 1)); fail "example $ex failed"; }
    PASSED=$((PASSED + 1))
    kill -0 "$SERVER_PID" 2>/dev/null || fail "stackshift-server died while running example $ex"
    echo "--- example $ex: ok ($((SECONDS - ex_start))s)"
done
sdk_tests examples
kill -0 "$SERVER_PID" 2>/dev/null || fail "stackshift-server died while running the SDK examples"
stop_server

# ---------------------------------------------------------------------------------------------
# (i) the web dashboard in a real headless Chromium
# ---------------------------------------------------------------------------------------------
phase "dashboard browser test"
CHROMIUM="${STACKSHIFT_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
    if [ "${CI:-}" = "true" ]; then
        fail "Chromium not found at $CHROMIUM: the dashboard browser test must run in CI (.ci/run installs the Debian chromium package)"
    fi
    printf '\n%s\n%s\n%s\n\n' \
        "!!!!! SKIPPING the dashboard browser test: no Chromium at $CHROMIUM" \
        "!!!!! install it (apt-get install -y chromium) or set STACKSHIFT_CHROMIUM;" \
        "!!!!! CI (CI=true) never skips it." >&2
else
    [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
    [ -x "$ROOT/target/debug/examples/dashboard_seed" ] || fail "target/debug/examples/dashboard_seed is missing"
    browser_rc=0
    STACKSHIFT_CHROMIUM="$CHROMIUM" with_timeout "${STACKSHIFT_BROWSER_TIMEOUT:-300}" "dashboard browser test" \
        node --test --test-reporter=spec dashboard-tests/ || browser_rc=$?
    if [ "$browser_rc" -ne 0 ]; then
        FAILED=$((FAILED + 1))
        fail "dashboard browser test failed (node --test dashboard-tests/)"
    fi
    PASSED=$((PASSED + 1))
fi

# ---------------------------------------------------------------------------------------------
# (j) conformance: the same cases against every SDK (fresh server per run)
# ---------------------------------------------------------------------------------------------
for sdk in rust typescript python go; do
    phase "conformance ($sdk)"
    sdk_tests conformance "$sdk"
done
phase "conformance (rust, PostgreSQL)"
sdk_tests conformance rust --postgres "$STACKSHIFT_TEST_POSTGRES_URL"

# ---------------------------------------------------------------------------------------------
# (k) benchmark smoke run: every scenario at tiny sizes (checks that it runs and prints its
#     JSON line; performance is measured by the bench binary, never asserted by tests)
# ---------------------------------------------------------------------------------------------
phase "bench smoke"
BENCH_BIN="$ROOT/target/debug/stackshift-bench"
[ -x "$BENCH_BIN" ] || fail "$BENCH_BIN was not produced by cargo build"
for scenario in throughput burndown latency resume waiting history replicas; do
    backend=sqlite
    [ "$scenario" = replicas ] && backend=postgres
    echo "--- bench $scenario --smoke --backend $backend"
    out="$(with_timeout "$EXAMPLE_TIMEOUT" "bench $scenario" "$BENCH_BIN" "$scenario" --smoke \
        --backend "$backend" --server-bin "$SERVER_BIN" \
        --postgres-url "$STACKSHIFT_TEST_POSTGRES_URL")" ||
        { printf '%s\n' "$out"; FAILED=$((FAILED + 1)); fail "bench $scenario failed"; }
    printf '%s\n' "$out"
    printf '%s\n' "$out" | tail -n 1 | grep -q "\"scenario\":\"$scenario\"" ||
        { FAILED=$((FAILED + 1)); fail "bench $scenario did not end with its JSON line"; }
    PASSED=$((PASSED + 1))
done

# ---------------------------------------------------------------------------------------------
# (l) reliability suite at CI size: the scenarios on SQLite (kill -9 soak, paused worker,
#     fencing, counters, herd, poison, auth, secrets, TLS, hostile input, flood, wall-clock
#     jumps under libfaketime, history limits), the crash
#     scenarios on PostgreSQL. `reaper-race` needs a server built with the `failpoints`
#     feature in its own target dir (minutes), so it runs on demand only.
#     Full size: cargo run -p stackshift-reliability -- --full (docs/reliability.md)
# ---------------------------------------------------------------------------------------------
phase "reliability suite"
REL_BIN="$ROOT/target/debug/stackshift-reliability"
[ -x "$REL_BIN" ] || fail "$REL_BIN was not produced by cargo build"
REL_SCENARIOS=()
for s in crash-soak paused-worker lock-fencing counters herd poison auth secrets tls hostile flood clock history-limits; do
    REL_SCENARIOS+=(--scenario "$s")
done
with_timeout "$EXAMPLE_TIMEOUT" "reliability (sqlite)" "$REL_BIN" --server-bin "$SERVER_BIN" \
    "${REL_SCENARIOS[@]}" ||
    { FAILED=$((FAILED + 1)); fail "reliability suite (sqlite) failed"; }
PASSED=$((PASSED + 1))
with_timeout "$EXAMPLE_TIMEOUT" "reliability (postgres)" "$REL_BIN" --server-bin "$SERVER_BIN" \
    --backend postgres --postgres-url "$STACKSHIFT_TEST_POSTGRES_URL" \
    --scenario crash-soak --scenario counters --scenario paused-worker ||
    { FAILED=$((FAILED + 1)); fail "reliability suite (postgres) failed"; }
PASSED=$((PASSED + 1))
