#!/usr/bin/env bash
# Drift check: regenerates every SDK's stubs into a temporary directory and compares them
# with the committed ones. Fails (exit 1, with a diff) when they differ, i.e. when someone
# changed proto/ or a generator version without running `bash sdk-gen/generate.sh`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/stackshift-sdk-gen.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
bash "$ROOT/sdk-gen/generate.sh" --out "$TMP"

# Compare generated files only: list them on both sides with the same patterns.
list() {
    (cd "$1" && {
        find sdk-typescript/src/gen sdk-go/gen -type f 2>/dev/null
        find sdk-python/src/stackshift/v1 -maxdepth 1 -type f \
            \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' -o -name '*_pb2_grpc.pyi' \) 2>/dev/null
    } | LC_ALL=C sort)
}
drift=0
if ! diff -u <(list "$ROOT") <(list "$TMP") >"$TMP.files"; then
    echo "sdk-gen: generated file set differs (- committed, + regenerated):" >&2
    cat "$TMP.files" >&2
    drift=1
fi
rm -f "$TMP.files"
while IFS= read -r f; do
    if [ -f "$ROOT/$f" ] && ! diff -u "$ROOT/$f" "$TMP/$f" >&2; then
        drift=1
    fi
done < <(list "$TMP")
if [ "$drift" -ne 0 ]; then
    echo "sdk-gen: DRIFT: the committed generated code is out of date; run 'bash sdk-gen/generate.sh' and commit the result" >&2
    exit 1
fi
echo "sdk-gen: OK: generated code is up to date ($(list "$TMP" | wc -l) files)"
