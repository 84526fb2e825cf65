#!/usr/bin/env bash
# Regenerates the gRPC/protobuf code of every SDK from proto/ (package stackshift.v1):
#
#   bash sdk-gen/generate.sh            # writes into the SDK folders of this checkout
#   bash sdk-gen/generate.sh --out DIR  # writes the same tree under DIR instead (drift check)
#
# Outputs (committed to git; never edit them by hand):
#   sdk-typescript/src/gen/stackshift/v1/*_pb.ts              @bufbuild/protoc-gen-es (v2)
#   sdk-python/src/stackshift/v1/*_pb2{,_grpc}.py{,i}         grpcio-tools + mypy-protobuf
#   sdk-go/gen/stackshift/v1/*.pb.go, *_grpc.pb.go            protoc-gen-go, protoc-gen-go-grpc
# The plugins are pinned and project-local (see sdk-gen/tools.sh); buf runs them from
# sdk-gen/buf.gen.yaml without any remote plugin or network access.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=sdk-gen/tools.sh
. "$ROOT/sdk-gen/tools.sh"

OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
    --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) sdk_gen_log "unknown argument: $1"; exit 2 ;;
    esac
done

sdk_gen_tools

# Generated locations, relative to the output root. Only generated files are removed first,
# so that stale outputs of a deleted .proto disappear; hand-written files stay.
clean_generated() {
    local base="$1"
    rm -rf "$base/sdk-typescript/src/gen" "$base/sdk-go/gen"
    if [ -d "$base/sdk-python/src/stackshift/v1" ]; then
        find "$base/sdk-python/src/stackshift/v1" -maxdepth 1 -type f \
            \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' -o -name '*_pb2_grpc.pyi' \) -delete
    fi
}

BUF="$ROOT/node_modules/.bin/buf"
args=(generate --template sdk-gen/buf.gen.yaml)
if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    OUT="$(cd "$OUT" && pwd)"
    clean_generated "$OUT"
    args+=(-o "$OUT")
else
    clean_generated "$ROOT"
fi
# mypy-protobuf reports every file it writes on stderr; keep the output to errors only.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "$BUF" "${args[@]}" 2>"$log"; then
    cat "$log" >&2
    sdk_gen_log "ERROR: buf generate failed"
    exit 1
fi
grep -v '^Writing mypy to ' "$log" >&2 || true
sdk_gen_log "generated TypeScript, Python and Go stubs from proto/${OUT:+ into $OUT}"
