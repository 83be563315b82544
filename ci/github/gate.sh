#!/usr/bin/env bash
# action.yml, gate step: turn the action's inputs into one leakgate command and run it. Inputs
# arrive only as environment variables and are only ever used quoted; every behaviour beyond
# choosing the command line lives in the leakgate CLI. Exits with leakgate's exit code.
set -euo pipefail

leakgate=${LEAKGATE_BIN:-leakgate}
mode=${INPUT_MODE:-check}
report_dir=${INPUT_REPORT_DIR:-.leakgate}

output() {
    printf '%s=%s\n' "$1" "$2" >>"${GITHUB_OUTPUT:-/dev/null}"
}

usage_error() {
    echo "::error title=leakgate::$1"
    output exit-code 4
    exit 4
}

# A pull request checkout (actions/checkout's default, fetch-depth: 1) holds only the merge
# commit: fetch the base commit (or origin/BRANCH) when it is missing. If that fails, leakgate
# itself reports the unknown ref (exit 4).
fetch_base() {
    if git rev-parse --verify --quiet --end-of-options "$1^{commit}" >/dev/null; then
        return 0
    fi
    local refspec=$1
    case $1 in
    origin/*) refspec="+refs/heads/${1#origin/}:refs/remotes/$1" ;;
    esac
    echo "leakgate: fetching the base commit $(printf '%q' "$1")"
    git fetch --no-tags --depth=1 --end-of-options origin "$refspec" ||
        echo "leakgate: could not fetch it; use actions/checkout with fetch-depth: 0"
}

workdir=${INPUT_WORKING_DIRECTORY:-.}
cd -- "$workdir" 2>/dev/null ||
    usage_error "working-directory $(printf '%q' "$workdir") does not exist"
# A verdict left over from an earlier run must not stand for this one (self-hosted runners keep
# the workspace): the report step reads these two files.
rm -f -- "$report_dir/verdict.json" "$report_dir/summary.md"

case $mode in
check)
    args=(check)
    if [ -n "${INPUT_BASELINE:-}" ]; then
        args+=(--baseline "$INPUT_BASELINE")
    fi
    ;;
compare)
    if [ -n "${INPUT_BASELINE:-}" ]; then
        usage_error "the baseline input is for mode: check; compare builds its own base side"
    fi
    base=${INPUT_BASE_REF:-${PR_BASE_SHA:-${MERGE_GROUP_BASE_SHA:-}}}
    if [ -z "$base" ] && [ -n "${GITHUB_BASE_REF:-}" ]; then
        base="origin/$GITHUB_BASE_REF"
    fi
    if [ -z "$base" ]; then
        usage_error "mode: compare needs base-ref outside pull_request and merge_group events"
    fi
    fetch_base "$base"
    args=(compare --base "$base")
    ;;
*)
    usage_error "mode must be check or compare, not $(printf '%q' "$mode")"
    ;;
esac

if [ -n "${INPUT_CONFIG:-}" ]; then
    args+=(--config "$INPUT_CONFIG")
fi
if [ -n "${INPUT_TRIALS:-}" ]; then
    args+=(--trials "$INPUT_TRIALS")
fi
if [ -n "${INPUT_DURATION:-}" ]; then
    args+=(--duration "$INPUT_DURATION")
fi
args+=(--out "$report_dir")
# Extra arguments: split on whitespace (newlines included) without globbing or any evaluation;
# a value with spaces in it belongs in leakgate.yml.
extra=()
read -r -d '' -a extra <<<"${INPUT_ARGS:-}" || true
args+=("${extra[@]}")

status=0
"$leakgate" "${args[@]}" || status=$?
output exit-code "$status"
exit "$status"
