# leakgate: install the CLI into a venv of its own ($LEAKGATE_INSTALL)
# shellcheck shell=bash
# The GitLab job's first script item. GitLab fetches only the one YAML file of a template
# or a component, so this file and run.sh are pasted verbatim into .gitlab-ci-template.yml
# and templates/leakgate.yml (tests/test_ci_integrations.py fails when a copy differs).
# LEAKGATE_INSTALL is a pip requirement. The venv's bin/ goes on PATH for the next item,
# which runs in the same shell. Debian images without venv support (golang:*) get
# python3-venv from apt.
set -euo pipefail
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
python3 -m venv /tmp/leakgate-venv
/tmp/leakgate-venv/bin/python -m pip install --disable-pip-version-check --quiet \
    "$LEAKGATE_INSTALL"
export PATH="/tmp/leakgate-venv/bin:$PATH"
leakgate --version
