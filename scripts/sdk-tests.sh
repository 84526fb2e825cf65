#!/usr/bin/env bash
# Builds and tests the TypeScript, Python and Go SDKs, runs their examples, and runs the
# conformance suite; scripts/test.sh calls it once per phase, and each command works alone:
#
#   bash scripts/sdk-tests.sh typescript        # npm ci, tsc build, node tests, npm pack + install check
#   bash scripts/sdk-tests.sh python            # venv, pip install -e .[dev], pytest, mypy, clean pip install check
#   bash scripts/sdk-tests.sh go                # go vet, go test, go build ./examples/...
#   bash scripts/sdk-tests.sh examples          # the seed flows in TS, Python, Go against $STACKSHIFT_ENDPOINT
#   bash scripts/sdk-tests.sh conformance SDK [runner args...]   # target/debug/stackshift-conformance --sdk SDK
#
# The tests start the real server binary: $STACKSHIFT_SERVER_BIN, else
# target/debug/stackshift-server (cargo build -p stackshift-server). Every command ends with a
# line `sdk-tests: N passed, N failed` that scripts/test.sh adds to its totals.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export STACKSHIFT_SERVER_BIN="${STACKSHIFT_SERVER_BIN:-$ROOT/target/debug/stackshift-server}"
export NPM_CONFIG_AUDIT=false NPM_CONFIG_FUND=false NPM_CONFIG_UPDATE_NOTIFIER=false
PASSED=0
FAILED=0
LOG="$(mktemp "${TMPDIR:-/tmp}/stackshift-sdk-tests.XXXXXX")"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/stackshift-sdk-tests.XXXXXX")"
trap 'rm -rf "$LOG" "$SCRATCH"; printf "sdk-tests: %d passed, %d failed\n" "$PASSED" "$FAILED"' EXIT

fail() {
    FAILED=$((FAILED + 1))
    printf 'sdk-tests: ERROR: %s\n' "$*" >&2
    exit 1
}
# Runs "$@" with output shown and kept in $LOG.
logged() { "$@" 2>&1 | tee "$LOG"; }

need_server() {
    [ -x "$STACKSHIFT_SERVER_BIN" ] ||
        fail "$STACKSHIFT_SERVER_BIN does not exist; run 'cargo build -p stackshift-server' (or set STACKSHIFT_SERVER_BIN)"
}

typescript() {
    need_server
    cd "$ROOT/sdk-typescript"
    npm ci --no-audit --no-fund
    npm run build
    logged npm test || { FAILED=$((FAILED + $(grep -aoE '^# fail [0-9]+' "$LOG" | awk '{print $3}' | tail -1 || echo 1))); fail "npm test failed"; }
    PASSED=$((PASSED + $(grep -aoE '^# pass [0-9]+' "$LOG" | awk '{print $3}' | tail -1)))

    # The package as a user installs it: npm pack, install the tarball into an empty project,
    # import it from JavaScript and type-check a TypeScript consumer against its .d.ts files.
    local tarball
    tarball="$(npm pack --silent --pack-destination "$SCRATCH" | tail -1)"
    mkdir -p "$SCRATCH/consumer"
    cd "$SCRATCH/consumer"
    printf '{ "name": "consumer", "version": "1.0.0", "private": true, "type": "module" }\n' >package.json
    npm install --no-audit --no-fund "$SCRATCH/$tarball" >/dev/null
    node --input-type=module -e "
        import { StackShift, NotFoundError, parseDuration } from '@stackshift-cloud/jobs';
        const s = new StackShift({ apiKey: 'ssk_test', endpoint: 'http://127.0.0.1:1' });
        s.job('x', async ({ step }) => step.run('a', () => 1));
        if (parseDuration('30d') !== 2592000000 || typeof NotFoundError !== 'function') process.exit(1);
        console.log('installed package imports: ok');"
    cat >consumer.ts <<'TS'
import { StackShift, type Run } from '@stackshift-cloud/jobs'
const stackshift = new StackShift({ apiKey: process.env.STACKSHIFT_API_KEY! })
stackshift.job<{ userId: string }>('welcome', async ({ payload, step }) => {
  const sent: { id: string } = await step.run('send', async () => ({ id: payload.userId }))
  return { sent: sent.id }
})
export async function main(): Promise<Run> {
  const started = await stackshift.start('welcome', { userId: 'u1' }, { queueName: 'emails', idempotencyKey: 'k', idempotencyTtl: '30d' })
  return stackshift.waitForRun(started.id, { timeout: '10s' })
}
TS
    "$ROOT/sdk-typescript/node_modules/.bin/tsc" --noEmit --strict --target es2022 --module nodenext \
        --moduleResolution nodenext --types node --typeRoots "$ROOT/sdk-typescript/node_modules/@types" consumer.ts ||
        fail "a TypeScript consumer of the installed package does not type-check"
    echo "installed package type-checks: ok"
    PASSED=$((PASSED + 2))
}

python() {
    need_server
    cd "$ROOT/sdk-python"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
    logged .venv/bin/python -m pytest -q -p no:cacheprovider ||
        { FAILED=$((FAILED + $(grep -aoE '[0-9]+ failed' "$LOG" | awk '{print $1}' | tail -1 || echo 1))); fail "pytest failed"; }
    PASSED=$((PASSED + $(grep -aoE '[0-9]+ passed' "$LOG" | awk '{print $1}' | tail -1)))
    .venv/bin/python -m mypy || fail "mypy (strict) found problems"
    PASSED=$((PASSED + 1))

    # The package as a user installs it: pip install ./sdk-python into a fresh venv.
    python3 -m venv "$SCRATCH/venv"
    "$SCRATCH/venv/bin/python" -m pip install -q --disable-pip-version-check "$ROOT/sdk-python"
    (cd "$SCRATCH" && "$SCRATCH/venv/bin/python" -c "
import importlib.resources as r
import stackshift
from stackshift.v1 import jobs_pb2, worker_pb2_grpc
assert (r.files('stackshift') / 'py.typed').is_file(), 'py.typed missing'
assert (r.files('stackshift.v1') / 'jobs_pb2.pyi').is_file(), 'generated stubs missing'
s = stackshift.StackShift(api_key='ssk_test', endpoint='http://127.0.0.1:1')
assert stackshift.parse_duration('30d').days == 30
print('installed package imports: ok')") || fail "the pip-installed package is broken"
    PASSED=$((PASSED + 1))
}

go_sdk() {
    need_server
    cd "$ROOT/sdk-go"
    go vet ./...
    logged go test -count=1 -v ./... ||
        { FAILED=$((FAILED + $(grep -ac -- '^--- FAIL' "$LOG" || echo 1))); fail "go test failed"; }
    PASSED=$((PASSED + $(grep -ac -- '^--- PASS' "$LOG")))
    go build -o "$SCRATCH/bin/" ./examples/...
}

examples() {
    [ -n "${STACKSHIFT_ENDPOINT:-}" ] || fail "STACKSHIFT_ENDPOINT is not set"
    local ex
    (cd "$ROOT/sdk-go" && go build -o "$SCRATCH/go-examples/" ./examples/...)
    (cd "$ROOT/sdk-typescript" && node_modules/.bin/tsc -p tsconfig.dev.json)
    for ex in verification_email payment_provisioning file_import; do
        echo "--- TypeScript example $ex"
        node "$ROOT/sdk-typescript/build/examples/$ex.js" || fail "TypeScript example $ex failed"
        PASSED=$((PASSED + 1))
        echo "--- Python example $ex"
        "$ROOT/sdk-python/.venv/bin/python" "$ROOT/sdk-python/examples/$ex.py" || fail "Python example $ex failed"
        PASSED=$((PASSED + 1))
        echo "--- Go example $ex"
        "$SCRATCH/go-examples/$ex" || fail "Go example $ex failed"
        PASSED=$((PASSED + 1))
    done
    # Go examples beyond the three seed flows.
    for ex in payment_confirmation state_store fan_out; do
        echo "--- Go example $ex"
        "$SCRATCH/go-examples/$ex" || fail "Go example $ex failed"
        PASSED=$((PASSED + 1))
    done
    echo "--- Python example payment_confirmation"
    "$ROOT/sdk-python/.venv/bin/python" "$ROOT/sdk-python/examples/payment_confirmation.py" ||
        fail "Python example payment_confirmation failed"
    PASSED=$((PASSED + 1))
    echo "--- Python example fan_out (triggers, child runs, wait_for_any, schedules)"
    "$ROOT/sdk-python/.venv/bin/python" "$ROOT/sdk-python/examples/fan_out.py" || fail "Python example fan_out failed"
    PASSED=$((PASSED + 1))
    # TypeScript-only examples (the other SDKs add theirs in their own loops).
    for ex in payment_confirmation; do
        echo "--- TypeScript example $ex"
        node "$ROOT/sdk-typescript/build/examples/$ex.js" || fail "TypeScript example $ex failed"
        PASSED=$((PASSED + 1))
    done
}

conformance() {
    local sdk="${1:?usage: sdk-tests.sh conformance SDK [runner args...]}"
    shift
    need_server
    local runner="$ROOT/target/debug/stackshift-conformance"
    [ -x "$runner" ] || fail "$runner does not exist; run 'cargo build -p stackshift-conformance'"
    local rc=0
    logged "$runner" --sdk "$sdk" --server-bin "$STACKSHIFT_SERVER_BIN" "$@" || rc=$?
    local line
    line="$(grep -aE '^[0-9]+ passed, [0-9]+ failed$' "$LOG" | tail -1)"
    PASSED=$((PASSED + $(echo "${line:-0 passed, 1 failed}" | awk '{print $1}')))
    FAILED=$((FAILED + $(echo "${line:-0 passed, 1 failed}" | awk '{print $3}')))
    [ "$rc" -eq 0 ] || { printf 'sdk-tests: conformance failed for %s\n' "$sdk" >&2; exit 1; }
}

case "${1:-}" in
typescript) typescript ;;
python) python ;;
go) go_sdk ;;
examples) examples ;;
conformance) shift && conformance "$@" ;;
*)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac
