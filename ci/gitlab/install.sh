# leakgate: install the CLI into a venv of this job's own
# shellcheck shell=bash
# The GitLab job's first script item. GitLab fetches only the one YAML file of a template
# or a component, so this file and run.sh are pasted verbatim into .gitlab-ci-template.yml
# and templates/leakgate.yml (tests/test_ci_integrations.py fails when a copy differs).
# pip installs the leakgate project itself from git at LEAKGATE_REF (the component's commit,
# or the template's tag): LEAKGATE_PROJECT is its path on this GitLab or a git URL. No
# package index needs to hold leakgate; LEAKGATE_INSTALL (any pip requirement) overrides.
# The venv is per job (jobs run side by side on a shell runner) and goes when the job's
# script ends; its bin/ goes on PATH for the next item, which runs in the same shell. Debian
# images without venv support (golang:*) get python3-venv from apt.
set -euo pipefail
requirement=${LEAKGATE_INSTALL:-}
if [ -z "$requirement" ]; then
    case ${LEAKGATE_PROJECT:-} in
    "")
        echo "leakgate: set LEAKGATE_PROJECT (the component's project input): the leakgate" \
            "project to install, e.g. group/leakgate, or LEAKGATE_INSTALL" >&2
        exit 4
        ;;
    *://*) source_url=$LEAKGATE_PROJECT ;;
    *) source_url="${CI_SERVER_URL:-https://gitlab.com}/${LEAKGATE_PROJECT%.git}.git" ;;
    esac
    requirement="leakgate-go @ git+${source_url}@${LEAKGATE_REF:?}"
fi
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
leakgate_venv="${TMPDIR:-/tmp}/leakgate-venv-${CI_JOB_ID:-$$}"
trap 'rm -rf -- "$leakgate_venv"' EXIT
rm -rf -- "$leakgate_venv"
python3 -m venv "$leakgate_venv"
"$leakgate_venv/bin/python" -m pip install --disable-pip-version-check --quiet "$requirement"
export PATH="$leakgate_venv/bin:$PATH"
leakgate --version
