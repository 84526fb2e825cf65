#!/usr/bin/env bash
# Protobuf breaking-change check (buf breaking, rules from buf.yaml) against an earlier commit.
#
# Which commit is the baseline ("against")?
#   * STACKSHIFT_BUF_BREAKING_AGAINST, if set, is passed verbatim to `buf breaking --against`
#     (any buf input, e.g. '.git#branch=main' or a directory).
#   * Otherwise, with M = origin/main (or local main if there is no origin/main):
#     1. HEAD is not contained in M (feature branch / PR checkout): baseline = merge-base(HEAD, M),
#        i.e. the commit the branch forked from. This covers every change the branch introduces,
#        committed or not, and ignores unrelated later commits on main.
#     2. HEAD is on main (the CI case: a fresh `git clone` of main has HEAD == origin/main, so
#        comparing against `.git#branch=main` or HEAD would compare the tree with itself and
#        could never fail):
#        a. proto/ or buf.yaml have uncommitted changes -> baseline = HEAD (local edits vs the
#           last commit);
#        b. otherwise -> baseline = HEAD~1, the previous commit on main (first parent, so for
#           a merge commit it is the previous main tip). That checks the change that produced
#           HEAD, which is exactly what a post-push CI run on main should gate.
#   * The check is SKIPPED (exit 0, with a message) when there is no git repo, no commit yet,
#     no HEAD~1 (first commit; in a shallow clone we first try to deepen by one commit), or
#     the baseline commit does not contain buf.yaml + proto/**/*.proto yet.
#
# The baseline is materialised with `git archive` into a temp dir rather than buf's
# `.git#ref=...` input: buf clones the repo itself with a limited depth, which fails for
# refs like HEAD~1 in some setups and for merge-bases deeper than its clone depth, whereas
# `git archive` only needs the commit object to be present locally.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUF="$ROOT/node_modules/.bin/buf"

log() { printf 'buf-breaking: %s\n' "$*" >&2; }
skip() {
    log "SKIPPED: $*"
    exit 0
}

[ -x "$BUF" ] || {
    log "ERROR: $BUF not found; run 'npm ci' first"
    exit 1
}

if [ -n "${STACKSHIFT_BUF_BREAKING_AGAINST:-}" ]; then
    log "comparing against $STACKSHIFT_BUF_BREAKING_AGAINST (from STACKSHIFT_BUF_BREAKING_AGAINST)"
    exec "$BUF" breaking --against "$STACKSHIFT_BUF_BREAKING_AGAINST"
fi

command -v git >/dev/null 2>&1 || skip "git is not installed"
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    if [ -e .git ]; then
        # e.g. "detected dubious ownership" (safe.directory) - do not silently skip in that case.
        git rev-parse --is-inside-work-tree >&2 || true
        log "ERROR: $ROOT/.git exists but git cannot read it (see above)"
        exit 1
    fi
    skip "not a git work tree"
fi
HEAD_SHA="$(git rev-parse -q --verify 'HEAD^{commit}' 2>/dev/null)" || skip "the repository has no commits yet"

MAIN_REF=""
for r in refs/remotes/origin/main refs/heads/main; do
    if git rev-parse -q --verify "$r^{commit}" >/dev/null 2>&1; then
        MAIN_REF="$r"
        break
    fi
done

BASE=""
WHY=""
if [ -n "$MAIN_REF" ] && ! git merge-base --is-ancestor HEAD "$MAIN_REF" 2>/dev/null; then
    if BASE="$(git merge-base HEAD "$MAIN_REF" 2>/dev/null)"; then
        WHY="merge-base of HEAD and ${MAIN_REF#refs/}"
    else
        BASE=""
    fi
fi
if [ -z "$BASE" ] && [ -n "$(git status --porcelain -- proto buf.yaml buf.lock 2>/dev/null)" ]; then
    BASE="$HEAD_SHA"
    WHY="HEAD (uncommitted changes under proto/ or in buf.yaml)"
fi
if [ -z "$BASE" ]; then
    if ! git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null 2>&1; then
        if [ "$(git rev-parse --is-shallow-repository 2>/dev/null)" = "true" ]; then
            log "shallow clone without HEAD~1; trying 'git fetch --deepen=1'"
            timeout 120 git fetch -q --deepen=1 >/dev/null 2>&1 || true
        fi
    fi
    BASE="$(git rev-parse -q --verify 'HEAD~1^{commit}' 2>/dev/null)" ||
        skip "HEAD has no parent commit available (first commit or shallow clone); nothing to compare against"
    WHY="HEAD~1 (previous commit on main)"
fi

SHORT="$(git rev-parse --short "$BASE")"
git cat-file -e "$BASE:buf.yaml" 2>/dev/null || skip "baseline $SHORT ($WHY) has no buf.yaml"
git ls-tree -r --name-only "$BASE" -- proto | grep -q '\.proto$' ||
    skip "baseline $SHORT ($WHY) contains no proto/**/*.proto files yet"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/stackshift-buf-breaking.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
paths=(buf.yaml proto)
git cat-file -e "$BASE:buf.lock" 2>/dev/null && paths+=(buf.lock)
git archive --format=tar "$BASE" -- "${paths[@]}" | tar -x -C "$TMP"

log "comparing working tree against $SHORT = $WHY"
if "$BUF" breaking --against "$TMP"; then
    log "OK: no breaking changes against $SHORT"
else
    rc=$?
    log "FAILED: breaking protobuf changes against $SHORT (see above). If intentional, coordinate a new package version (stackshift.v2) instead."
    exit "$rc"
fi
