#!/usr/bin/env bash
# Installs the pinned code generators that sdk-gen/buf.gen.yaml runs, all project-local:
#   buf                       node_modules/.bin/buf                 (root package.json)
#   protoc-gen-es             sdk-typescript/node_modules/.bin/     (sdk-typescript/package.json)
#   grpcio-tools, mypy-protobuf  sdk-gen/.venv                      (sdk-gen/requirements.txt)
#   protoc-gen-go(-grpc)      sdk-gen/.bin                          (sdk-gen/go.mod `tool` lines)
# Sourced by generate.sh and check.sh; each step is skipped when already up to date, so a
# second run costs a second or two. Needs Node.js/npm, python3 (with venv) and Go.
set -euo pipefail

SDK_GEN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

sdk_gen_log() { printf 'sdk-gen: %s\n' "$*" >&2; }
sdk_gen_need() {
    command -v "$1" >/dev/null 2>&1 || { sdk_gen_log "ERROR: '$1' is not installed ($2)"; exit 1; }
}

sdk_gen_tools() {
    local root="$SDK_GEN_ROOT"
    sdk_gen_need npm "Node.js + npm: buf and protoc-gen-es are npm packages"
    sdk_gen_need python3 "Python 3 with venv: grpcio-tools and mypy-protobuf"
    sdk_gen_need go "Go >= 1.24: protoc-gen-go and protoc-gen-go-grpc"

    if [ ! -x "$root/node_modules/.bin/buf" ]; then
        sdk_gen_log "installing buf (npm ci in the repository root)"
        (cd "$root" && npm ci --no-audit --no-fund >&2)
    fi
    if [ ! -x "$root/sdk-typescript/node_modules/.bin/protoc-gen-es" ]; then
        sdk_gen_log "installing protoc-gen-es (npm ci in sdk-typescript)"
        (cd "$root/sdk-typescript" && npm ci --no-audit --no-fund --ignore-scripts >&2)
    fi

    # The venv is rebuilt when requirements.txt changes (its hash is stamped inside the venv).
    local venv="$root/sdk-gen/.venv" want have=""
    want="$(sha256sum "$root/sdk-gen/requirements.txt" | cut -d' ' -f1)"
    [ -f "$venv/.requirements.sha256" ] && have="$(cat "$venv/.requirements.sha256")"
    if [ ! -x "$venv/bin/python" ] || [ "$want" != "$have" ]; then
        sdk_gen_log "installing grpcio-tools + mypy-protobuf into sdk-gen/.venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/sdk-gen/requirements.txt" >&2
        echo "$want" >"$venv/.requirements.sha256"
    fi

    # `go install tool` is a no-op when the binaries are current (Go's build cache).
    (cd "$root/sdk-gen" && GOBIN="$root/sdk-gen/.bin" GOFLAGS=-mod=mod go install tool >&2)
}
