#!/usr/bin/env bash
# action.yml, install step: leakgate from the action's own checkout, so the CLI's version is the
# action ref's, in a venv of its own so the job's Python and packages stay as the user set them.
set -euo pipefail

"$LEAKGATE_PYTHON" -m venv "$LEAKGATE_VENV"
"$LEAKGATE_VENV/bin/python" -m pip install --disable-pip-version-check --quiet "$GITHUB_ACTION_PATH"
"$LEAKGATE_VENV/bin/leakgate" --version
