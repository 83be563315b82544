#!/usr/bin/env bash
# action.yml, report step (runs even when the gate failed or was cancelled): append leakgate's
# summary.md to the job summary and set the action's outputs from verdict.json.
set -euo pipefail

workdir=${INPUT_WORKING_DIRECTORY:-.}
report_dir=${INPUT_REPORT_DIR:-.leakgate}
case $report_dir in
/*) ;;
*) report_dir="$(cd -- "$workdir" 2>/dev/null && pwd || echo "$PWD/$workdir")/$report_dir" ;;
esac

# Reports count only when the gate step ran this time: if an earlier step failed, files in the
# report directory are a previous run's (a self-hosted runner keeps its workspace).
ran=${GATE_EXIT_CODE:+yes}
verdict=error
if [ -n "$ran" ] && [ -f "$report_dir/verdict.json" ]; then
    verdict=$("${LEAKGATE_PYTHON:-python3}" -c '
import json, sys
status = json.load(open(sys.argv[1])).get("status")
print(status if status in ("pass", "fail", "error", "interrupted") else "error")
' "$report_dir/verdict.json" 2>/dev/null) || verdict=error
fi

# The step whose log says why there is no summary: the gate when it ran, else the first step
# that failed or was cancelled (the steps after it were skipped). Names as in action.yml.
failed_step() {
    if [ -n "$ran" ]; then
        echo "Run leakgate"
        return
    fi
    local step outcome
    for step in "${OUTCOME_PYTHON:-}:Set up Python" "${OUTCOME_INSTALL:-}:Install leakgate" \
        "${OUTCOME_GATE:-}:Run leakgate"; do
        outcome=${step%%:*}
        if [ "$outcome" = failure ] || [ "$outcome" = cancelled ]; then
            echo "${step#*:}"
            return
        fi
    done
}

summary="$report_dir/summary.md"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    # GitHub refuses a step summary over 1 MiB; leakgate keeps summary.md well under that.
    if [ -n "$ran" ] && [ -s "$summary" ] && [ "$(wc -c <"$summary")" -lt 1048576 ]; then
        cat -- "$summary" >>"$GITHUB_STEP_SUMMARY"
    else
        step=$(failed_step)
        why="the log of the step \"$step\" says why."
        [ -n "$step" ] || why="the job's log says why."
        printf '**leakgate**: %s (exit code %s), no summary.md to show: %s\n' \
            "$verdict" "${GATE_EXIT_CODE:-unknown}" "$why" >>"$GITHUB_STEP_SUMMARY"
    fi
fi

# The heredoc form, with a delimiter the value cannot contain, keeps any path on one output.
output() {
    local delimiter="leakgate_${RANDOM}${RANDOM}${RANDOM}"
    while [[ $2 == *"$delimiter"* ]]; do
        delimiter+=$RANDOM
    done
    printf '%s<<%s\n%s\n%s\n' "$1" "$delimiter" "$2" "$delimiter" >>"${GITHUB_OUTPUT:-/dev/null}"
}

junit="$report_dir/junit.xml"
[ -n "$ran" ] && [ -f "$junit" ] || junit=""
output verdict "$verdict"
output report-dir "$report_dir"
output junit "$junit"
