# leakgate: build the command line from the LEAKGATE_* variables and run the gate
# shellcheck shell=bash
# The GitLab job's second script item, pasted verbatim into the template and the component
# like install.sh. Variables are only ever used quoted; every behaviour beyond choosing the
# command line lives in the CLI. Ends the job with leakgate's exit code.
set -euo pipefail

mode=${LEAKGATE_MODE:-auto}
base=${LEAKGATE_BASE_REF:-}
# Merge-request pipelines compare with the target branch: its head in merged-results pipelines
# (the checkout is the merge), else the merge base of the MR's diff.
if [ -z "$base" ]; then
    base=${CI_MERGE_REQUEST_TARGET_BRANCH_SHA:-${CI_MERGE_REQUEST_DIFF_BASE_SHA:-}}
fi
if [ "$mode" = auto ]; then
    mode=check
    [ -z "$base" ] || mode=compare
fi
report_dir="${CI_PROJECT_DIR:-$PWD}/${LEAKGATE_REPORT_DIR:-.leakgate}"

workdir=${LEAKGATE_DIR:-.}
if ! cd -- "$workdir" 2>/dev/null; then
    echo "leakgate: LEAKGATE_DIR $(printf '%q' "$workdir") does not exist" >&2
    exit 4
fi
# A verdict left over from an earlier run must not stand for this one.
rm -f -- "$report_dir/verdict.json" "$report_dir/summary.md"

case $mode in
check)
    args=(check)
    if [ -n "${LEAKGATE_BASELINE:-}" ]; then
        args+=(--baseline "$LEAKGATE_BASELINE")
    fi
    ;;
compare)
    if [ -z "$base" ]; then
        echo "leakgate: LEAKGATE_MODE=compare needs LEAKGATE_BASE_REF here" >&2
        exit 4
    fi
    # GitLab clones shallow (GIT_DEPTH): fetch the base commit when the clone lacks it.
    # If that fails, leakgate itself reports the unknown ref (exit 4).
    if ! git rev-parse --verify --quiet --end-of-options "$base^{commit}" >/dev/null; then
        echo "leakgate: fetching the base commit $(printf '%q' "$base")"
        git fetch --no-tags --depth=1 --end-of-options origin "$base" ||
            echo "leakgate: could not fetch it; set GIT_DEPTH: 0 for this job"
    fi
    args=(compare --base "$base")
    ;;
*)
    echo "leakgate: LEAKGATE_MODE is auto, check or compare, not $(printf '%q' "$mode")" >&2
    exit 4
    ;;
esac

if [ -n "${LEAKGATE_CONFIG:-}" ]; then
    args+=(--config "$LEAKGATE_CONFIG")
fi
if [ -n "${LEAKGATE_TRIALS:-}" ]; then
    args+=(--trials "$LEAKGATE_TRIALS")
fi
if [ -n "${LEAKGATE_DURATION:-}" ]; then
    args+=(--duration "$LEAKGATE_DURATION")
fi
args+=(--out "$report_dir")
# Extra arguments: split on whitespace (newlines included) without globbing or any evaluation;
# a value with spaces in it belongs in leakgate.yml.
extra=()
read -r -d '' -a extra <<<"${LEAKGATE_ARGS:-}" || true
args+=("${extra[@]}")

status=0
leakgate "${args[@]}" || status=$?
exit "$status"
