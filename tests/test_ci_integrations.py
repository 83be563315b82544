"""The CI integrations people copy and forget: action.yml, the GitLab template and component, the
pre-commit hook. Their scripts run here the way GitHub's and GitLab's runners run them: against a
fake `leakgate` that records its argv (command lines, hostile inputs, shallow clones) and against
the real one on the sample service (a clean run passes, a leaky one fails)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO, SAMPLE, _require_tools
from .gate import write_config

ACTION = REPO / "action.yml"
GITLAB_TEMPLATE = REPO / ".gitlab-ci-template.yml"
GITLAB_COMPONENT = REPO / "templates" / "leakgate.yml"
HOOKS = REPO / ".pre-commit-hooks.yaml"
SCRIPTS = sorted((REPO / "ci").glob("*/*.sh"))
GITLAB_INSTALL = REPO / "ci" / "gitlab" / "install.sh"
GITLAB_RUN = REPO / "ci" / "gitlab" / "run.sh"

GITHUB_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
GITLAB_INPUT = re.compile(r"\$\[\[\s*inputs\.([\w-]+)\s*\]\]")
GITLAB_EXPR = re.compile(r"\$\[\[\s*(inputs|component)\.([\w-]+)\s*\]\]")
SHA_PIN = re.compile(r"uses: ([\w./-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)$", re.M)

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}

FAKE_LEAKGATE = """\
#!{python}
# Records its argv; with FAKE_STATUS it writes the reports leakgate would, then exits FAKE_EXIT.
import json, os, pathlib, sys
args = sys.argv[1:]
pathlib.Path(os.environ["FAKE_ARGV"]).write_text(json.dumps(args))
if os.environ.get("FAKE_STATUS") and "--out" in args:
    out = pathlib.Path(args[args.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "verdict.json").write_text(json.dumps({{"status": os.environ["FAKE_STATUS"]}}))
    (out / "summary.md").write_text("## fake leakgate summary\\n")
    (out / "junit.xml").write_text("<testsuites/>\\n")
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _pyproject_version() -> str:
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version, "pyproject.toml: no version"
    return version.group(1)


def _component() -> tuple[dict[str, Any], dict[str, Any]]:
    """(spec header, job document) of the GitLab component: two YAML documents split by ---."""
    header, body = yaml.safe_load_all(GITLAB_COMPONENT.read_text())
    return header, body


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, **GIT_ENV},
    )
    return proc.stdout.strip()


def _fake_leakgate(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE_LEAKGATE.format(python=sys.executable))
    path.chmod(0o755)
    return path


def _pwned(tmp_path: Path) -> tuple[Path, str]:
    """A file a shell injection would create, and a hostile value (quote, ;, #, newline, $())."""
    target = Path("/tmp") / f"pwned-{uuid.uuid4().hex}"
    return target, f'x"; touch {target} #\n$(touch {target}) `touch {target}`'


# --- GitHub: a small runner for the composite action ---------------------------------------


@dataclass
class ActionRun:
    returncode: int
    outputs: dict[str, str]
    summary: str
    log: str
    outcomes: dict[str, str]  # step id -> success, failure or skipped
    envs: dict[str, dict[str, str]]  # step id -> its evaluated `env:` (skipped steps too)


def _parse_github_output(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT's two forms: name=value and name<<DELIMITER ... DELIMITER."""
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            for item in lines:
                if item == delimiter:
                    break
                value.append(item)
            else:
                raise AssertionError(f"GITHUB_OUTPUT: no closing {delimiter!r} for {name}")
            outputs[name] = "\n".join(value)
        elif line:
            name, value_ = line.split("=", 1)
            outputs[name] = value_
    return outputs


class GitHubRunner:
    """Runs action.yml's steps like the Actions runner: `${{ }}` evaluated in `if:` and `env:`
    (context values, `steps.ID.outputs.NAME`, `steps.ID.outcome`, `'literal'`, `||`, `==`,
    `!=`, `always()`), each run step in `bash --noprofile --norc -eo pipefail`, a step without
    a status function in its `if:` only while every earlier step succeeded, a step's outputs
    from its own GITHUB_OUTPUT file. setup-python is simulated (this Python) and the install
    step skipped: `leakgate` at the venv path is the installed one or a fake. `fail` names steps
    to fail without running them (setup-python on an offline runner, a failed install)."""

    def __init__(self, tmp: Path, leakgate: Path | None = None) -> None:
        self.tmp = tmp
        self.runner_temp = tmp / "runner-temp"
        venv_bin = self.runner_temp / "leakgate-venv" / "bin"
        venv_bin.mkdir(parents=True)
        real = shutil.which("leakgate")
        if leakgate is None:
            assert real, "leakgate is not installed (pip install -e .)"
            leakgate = Path(real)
        (venv_bin / "leakgate").symlink_to(leakgate)

    def run(
        self,
        inputs: Mapping[str, str],
        workspace: Path,
        event: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 180,
        fail: Collection[str] = (),
    ) -> ActionRun:
        action = _yaml(ACTION)
        unknown = set(inputs) - set(action["inputs"])
        assert not unknown, f"not inputs of action.yml: {unknown}"
        context = {f"inputs.{k}": str(v.get("default", "")) for k, v in action["inputs"].items()}
        context |= {f"inputs.{k}": v for k, v in inputs.items()}
        context["runner.temp"] = str(self.runner_temp)
        event = event or {}
        context["github.event.pull_request.base.sha"] = event.get("pull_request.base.sha", "")
        context["github.event.merge_group.base_sha"] = event.get("merge_group.base_sha", "")
        summary = self.tmp / "step-summary.md"
        summary.touch()
        outputs: dict[str, dict[str, str]] = {}
        outcomes: dict[str, str] = {}
        envs: dict[str, dict[str, str]] = {}
        status, log = 0, []

        def value(expr: str) -> str:
            expr = expr.strip()
            if "||" in expr:  # the first operand that is not empty
                return next((v for v in map(value, expr.split("||")) if v), "")
            literal = re.fullmatch(r"'([^']*)'", expr)
            if literal:
                return literal.group(1)
            step = re.fullmatch(r"steps\.([\w-]+)\.(outcome|outputs\.([\w-]+))", expr)
            if step:
                step_id, field, name = step.groups()
                if field == "outcome":
                    return outcomes.get(step_id, "")
                return outputs.get(step_id, {}).get(name, "")
            assert expr in context, f"action.yml uses ${{{{ {expr} }}}}: unknown to the test"
            return context[expr]

        def evaluate(text: str) -> str:
            return GITHUB_EXPR.sub(lambda m: value(m.group(1)), str(text))

        def runs(step: Mapping[str, Any]) -> bool:
            condition = str(step.get("if", "")).strip()
            wrapped = GITHUB_EXPR.fullmatch(condition)
            condition = wrapped.group(1) if wrapped else condition
            if condition == "always()":
                return True
            if status:
                return False
            if not condition:
                return True
            compare = re.fullmatch(r"(.+?)\s*(==|!=)\s*(.+)", condition)
            assert compare, f"if: {condition!r}: unknown to the test"
            left, op, right = compare.groups()
            return (value(left) == value(right)) == (op == "==")

        for step in action["runs"]["steps"]:
            step_id = step["id"]
            envs[step_id] = {k: evaluate(v) for k, v in step.get("env", {}).items()}
            if not runs(step):
                outcomes[step_id] = "skipped"
                continue
            if step_id in fail:
                outcomes[step_id] = "failure"
                log.append(f"--- {step_id}: failed (simulated)")
                status = status or 1
                continue
            if "uses" in step:
                assert step["uses"].startswith("actions/setup-python@")
                outputs[step_id] = {"python-path": sys.executable}
                outcomes[step_id] = "success"
                continue
            if step_id == "install":
                outcomes[step_id] = "success"
                continue
            script = self.tmp / f"step-{step_id}.sh"
            script.write_text(step["run"])
            output = self.tmp / f"output-{step_id}"
            output.write_text("")
            step_env = {
                **os.environ,
                **(env or {}),
                "GITHUB_ACTION_PATH": str(REPO),
                "GITHUB_WORKSPACE": str(workspace),
                "GITHUB_OUTPUT": str(output),
                "GITHUB_STEP_SUMMARY": str(summary),
                "RUNNER_TEMP": str(self.runner_temp),
                **envs[step_id],
            }
            proc = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                cwd=workspace,
                env=step_env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
            log.append(f"--- {step_id}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
            outputs[step_id] = _parse_github_output(output.read_text())
            outcomes[step_id] = "failure" if proc.returncode else "success"
            status = status or proc.returncode
        results = {name: evaluate(o["value"]) for name, o in action["outputs"].items()}
        return ActionRun(status, results, summary.read_text(), "\n".join(log), outcomes, envs)


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fake leakgate and the environment that drives it; its argv lands in FAKE_ARGV."""
    path = _fake_leakgate(tmp_path / "fake" / "leakgate")
    return path, {"FAKE_ARGV": str(tmp_path / "argv.json")}


def _argv(env: Mapping[str, str]) -> list[str] | None:
    path = Path(env["FAKE_ARGV"])
    return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def shallow_pr(tmp_path: Path) -> tuple[Path, str]:
    """A pull request checkout the way actions/checkout leaves it: a depth-1 clone of the head,
    without the base branch's newest commit. Returns (checkout, base commit)."""
    origin = tmp_path / "origin.git"
    seed = tmp_path / "seed"
    seed.mkdir()
    _git(seed, "init", "-q", "-b", "main")
    (seed / "main.go").write_text("package main\n\nfunc main() {}\n")
    _git(seed, "add", ".")
    _git(seed, "commit", "-qm", "one")
    _git(seed, "checkout", "-qb", "feature")
    (seed / "feature.go").write_text("package main\n")
    _git(seed, "add", ".")
    _git(seed, "commit", "-qm", "feature")
    _git(seed, "checkout", "-q", "main")
    (seed / "main.go").write_text("package main\n\nfunc main() { println() }\n")
    _git(seed, "commit", "-qam", "two")
    base = _git(seed, "rev-parse", "HEAD")
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(origin)], check=True)
    # GitHub serves any reachable commit by its hash; a local bare repository must be told to.
    _git(origin, "config", "uploadpack.allowAnySHA1InWant", "true")
    checkout = tmp_path / "checkout"
    clone = ["clone", "-q", "--depth=1", "--single-branch", "--branch", "feature"]
    subprocess.run(["git", *clone, f"file://{origin}", str(checkout)], check=True)
    with pytest.raises(subprocess.CalledProcessError):
        _git(checkout, "cat-file", "-e", f"{base}^{{commit}}")
    return checkout, base


# --- action.yml: shape --------------------------------------------------------------------


def test_action_runs_no_expression_in_scripts_and_pins_setup_python() -> None:
    action = _yaml(ACTION)
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    for step in steps:
        if "run" in step:
            assert "${{" not in step["run"], f"step {step['id']}: an expression inside run:"
            assert step["shell"] == "bash"
            script = re.fullmatch(r'bash "\$GITHUB_ACTION_PATH/(ci/github/\w+\.sh)"', step["run"])
            assert script and (REPO / script.group(1)).is_file(), step["run"]
        else:
            assert re.fullmatch(r"[\w./-]+@[0-9a-f]{40}", step["uses"]), "pin to a commit"
    pins = SHA_PIN.findall(ACTION.read_text())
    assert [(name, version.split(".")[0]) for name, _, version in pins] == [
        ("actions/setup-python", "v5")
    ]
    report = next(s for s in steps if s["id"] == "report")
    assert report["if"] == "always()"
    assert steps[-1] is report
    # Outputs come from the report step, or the gate's exit code.
    for name, out in action["outputs"].items():
        assert GITHUB_EXPR.fullmatch(out["value"]), name


def test_every_action_input_reaches_the_scripts_through_env_only() -> None:
    action = _yaml(ACTION)
    scripts = {p.name: p.read_text() for p in (REPO / "ci" / "github").glob("*.sh")}
    for name in action["inputs"]:
        expr = f"${{{{ inputs.{name} }}}}"
        carriers = []
        for step in action["runs"]["steps"]:
            assert expr not in step.get("run", "")
            for var, value in step.get("env", {}).items():
                if expr in str(value):
                    assert value == expr, f"{var}: an input is passed whole, never spliced"
                    script = Path(step["run"].split("/")[-1].rstrip('"')).name
                    assert re.search(rf"\$\{{?{var}\b", scripts[script]), (var, script)
                    carriers.append(var)
            carriers += [k for k, v in step.get("with", {}).items() if v == expr]
        assert carriers, f"input {name} is never used"
    # The pull request's base commit reaches the gate the same way.
    gate = next(s for s in action["runs"]["steps"] if s["id"] == "gate")
    assert gate["env"]["PR_BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"


# --- action.yml: command lines and hostile inputs (fake leakgate) -------------------------


def test_action_check_passes_each_input_as_its_own_argument(
    tmp_path: Path, fake: tuple[Path, dict[str, str]]
) -> None:
    path, env = fake
    workspace = tmp_path / "workspace"
    (workspace / "svc").mkdir(parents=True)
    run = GitHubRunner(tmp_path, path).run(
        {
            "working-directory": "svc",
            "config": "ci/leak gate.yml",
            "baseline": "baselines/main.json",
            "trials": "5",
            "duration": "30s",
            "args": "cmd/server --env GOGC=50\n  --env  LEAK_BYTES=1 ",
        },
        workspace,
        env={**env, "FAKE_STATUS": "pass"},
    )
    assert run.returncode == 0, run.log
    assert _argv(env) == [
        "check",
        "--baseline",
        "baselines/main.json",
        "--config",
        "ci/leak gate.yml",
        "--trials",
        "5",
        "--duration",
        "30s",
        "--out",
        ".leakgate",
        "cmd/server",
        "--env",
        "GOGC=50",
        "--env",
        "LEAK_BYTES=1",
    ]
    reports = workspace / "svc" / ".leakgate"
    assert run.outputs == {
        "verdict": "pass",
        "report-dir": str(reports),
        "junit": str(reports / "junit.xml"),
        "exit-code": "0",
    }
    assert run.summary == "## fake leakgate summary\n"


@pytest.mark.parametrize("field", ["args", "config", "baseline", "duration", "trials"])
def test_action_inputs_arrive_as_literals_never_as_shell(
    tmp_path: Path, fake: tuple[Path, dict[str, str]], field: str
) -> None:
    path, env = fake
    target, hostile = _pwned(tmp_path)
    run = GitHubRunner(tmp_path, path).run({field: hostile}, tmp_path, env=env)
    assert not target.exists(), "an input was executed"
    assert run.returncode == 0, run.log
    argv = _argv(env)
    assert argv is not None
    if field == "args":  # split on whitespace, each piece literal
        assert argv[argv.index(".leakgate") + 1 :] == hostile.split()
    else:
        assert argv[argv.index(f"--{field}") + 1] == hostile


def test_hostile_args_reach_the_real_cli_as_a_usage_error(tmp_path: Path) -> None:
    target, hostile = _pwned(tmp_path)
    run = GitHubRunner(tmp_path).run(
        {"args": f"{SAMPLE} --env {hostile}", "report-dir": str(tmp_path / "out")}, tmp_path
    )
    assert not target.exists()
    assert run.returncode == 4, run.log
    assert "unrecognized arguments" in run.log
    assert run.outputs["verdict"] == "error"
    assert run.outputs["exit-code"] == "4"
    assert "exit code 4" in run.summary


@pytest.mark.parametrize(
    "inputs",
    [
        {"mode": "{hostile}"},
        {"working-directory": "{hostile}"},
        {"mode": "compare"},  # no base-ref and no pull request
        {"mode": "compare", "base-ref": "origin/main", "baseline": "b.json"},
    ],
)
def test_action_bad_inputs_are_usage_errors_before_leakgate_runs(
    tmp_path: Path, fake: tuple[Path, dict[str, str]], inputs: dict[str, str]
) -> None:
    path, env = fake
    target, hostile = _pwned(tmp_path)
    inputs = {k: v.replace("{hostile}", hostile) for k, v in inputs.items()}
    run = GitHubRunner(tmp_path, path).run(inputs, tmp_path, env=env)
    assert run.returncode == 4, run.log
    assert "::error title=leakgate::" in run.log
    assert _argv(env) is None
    assert not target.exists()
    assert run.outputs["verdict"] == "error"
    assert "exit code 4" in run.summary


def test_action_without_reports_says_error_even_over_a_stale_verdict(
    tmp_path: Path, fake: tuple[Path, dict[str, str]]
) -> None:
    path, env = fake
    stale = tmp_path / ".leakgate"
    stale.mkdir()
    (stale / "verdict.json").write_text('{"status": "pass"}')
    (stale / "summary.md").write_text("stale\n")
    run = GitHubRunner(tmp_path, path).run({}, tmp_path, env={**env, "FAKE_EXIT": "5"})
    assert run.returncode == 5
    assert run.outputs["verdict"] == "error"
    assert run.outputs["exit-code"] == "5"
    assert run.outputs["junit"] == ""
    assert run.summary.startswith("**leakgate**: error (exit code 5)")
    assert "stale" not in run.summary


def test_report_step_ignores_a_previous_runs_reports_when_the_gate_did_not_run(
    tmp_path: Path,
) -> None:
    """The install step failed, so the gate step was skipped: no exit code reaches the report
    step, and the report directory holds what an earlier job on this runner left."""
    stale = tmp_path / ".leakgate"
    stale.mkdir()
    (stale / "verdict.json").write_text('{"status": "pass"}')
    (stale / "summary.md").write_text("stale PASS\n")
    (stale / "junit.xml").write_text("<testsuites/>")
    summary, outputs = tmp_path / "summary", tmp_path / "outputs"
    env = {
        "PATH": os.environ["PATH"],
        "INPUT_WORKING_DIRECTORY": str(tmp_path),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(outputs),
    }
    proc = subprocess.run(
        ["bash", str(REPO / "ci" / "github" / "report.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "stale" not in summary.read_text()
    assert "error (exit code unknown)" in summary.read_text()
    parsed = _parse_github_output(outputs.read_text())
    assert parsed["verdict"] == "error" and parsed["junit"] == ""


def test_action_python_version_empty_uses_the_runners_python3_without_setup_python(
    tmp_path: Path, fake: tuple[Path, dict[str, str]]
) -> None:
    """A self-hosted or offline runner: setup-python would fail to download its manifest."""
    path, env = fake
    run = GitHubRunner(tmp_path, path).run(
        {"python-version": ""}, tmp_path, env={**env, "FAKE_STATUS": "pass"}
    )
    assert run.returncode == 0, run.log
    assert run.outcomes["python"] == "skipped"
    assert run.envs["install"]["LEAKGATE_PYTHON"] == "python3"
    assert run.envs["report"]["LEAKGATE_PYTHON"] == "python3"
    assert run.outputs["verdict"] == "pass"
    # The default still sets up its own Python, and the install step uses that one.
    run = GitHubRunner(tmp_path / "default", path).run({}, tmp_path, env=env)
    assert run.outcomes["python"] == "success"
    assert run.envs["install"]["LEAKGATE_PYTHON"] == sys.executable


@pytest.mark.parametrize(("failed", "exit_code"), [("python", ""), ("install", ""), ("gate", "5")])
def test_action_summary_names_the_step_that_failed(
    tmp_path: Path, fake: tuple[Path, dict[str, str]], failed: str, exit_code: str
) -> None:
    path, env = fake
    fail = () if failed == "gate" else (failed,)
    run = GitHubRunner(tmp_path, path).run({}, tmp_path, env={**env, "FAKE_EXIT": "5"}, fail=fail)
    assert run.returncode != 0
    assert run.outcomes[failed] == "failure"
    assert run.outcomes["report"] == "success"
    assert run.outputs["verdict"] == "error"
    assert run.outputs["exit-code"] == exit_code
    names = {s["id"]: s.get("name", "") for s in _yaml(ACTION)["runs"]["steps"]}
    assert all(names.values()), "every step has a name the summary can give"
    assert f'the log of the step "{names[failed]}" says why' in run.summary, run.summary
    for step_id, name in names.items():
        if step_id != failed:
            assert f'"{name}"' not in run.summary


def test_action_compare_fetches_the_pull_request_base_into_a_shallow_checkout(
    tmp_path: Path, fake: tuple[Path, dict[str, str]], shallow_pr: tuple[Path, str]
) -> None:
    path, env = fake
    checkout, base = shallow_pr
    run = GitHubRunner(tmp_path, path).run(
        {"mode": "compare"},
        checkout,
        event={"pull_request.base.sha": base},
        env={**env, "GITHUB_BASE_REF": "main", "FAKE_STATUS": "pass"},
    )
    assert run.returncode == 0, run.log
    assert _argv(env) == ["compare", "--base", base, "--out", ".leakgate"]
    _git(checkout, "cat-file", "-e", f"{base}^{{commit}}")  # fetched: leakgate can check it out


def test_action_compare_without_the_event_uses_origin_base_branch(
    tmp_path: Path, fake: tuple[Path, dict[str, str]], shallow_pr: tuple[Path, str]
) -> None:
    path, env = fake
    checkout, base = shallow_pr
    run = GitHubRunner(tmp_path, path).run(
        {"mode": "compare"}, checkout, env={**env, "GITHUB_BASE_REF": "main"}
    )
    assert run.returncode == 0, run.log
    assert _argv(env) == ["compare", "--base", "origin/main", "--out", ".leakgate"]
    assert _git(checkout, "rev-parse", "origin/main") == base


# --- action.yml: the real gate on the sample service --------------------------------------


@pytest.mark.go
@pytest.mark.slow
@pytest.mark.parametrize(("leak", "code", "verdict"), [("", 0, "pass"), ("globalmap", 1, "fail")])
def test_action_real_gate_on_the_sample(
    go_bin: str, tmp_path: Path, marker: str, leak: str, code: int, verdict: str
) -> None:
    config = write_config(tmp_path / "leakgate.yml", warmup="2s", duration="8s")
    reports = tmp_path / "reports"
    run = GitHubRunner(tmp_path).run(
        {
            "working-directory": SAMPLE.name,
            "config": str(config),
            "duration": "5s",
            "report-dir": str(reports),
            "args": f"--quick --env {marker} --env LEAK={leak}",
        },
        REPO,
    )
    assert run.returncode == code, run.log
    assert run.outputs["verdict"] == verdict
    assert run.outputs["exit-code"] == str(code)
    assert run.outputs["report-dir"] == str(reports)
    assert run.outputs["junit"] == str(reports / "junit.xml")
    assert Path(run.outputs["junit"]).is_file()
    summary = (reports / "summary.md").read_text()
    assert summary and run.summary == summary
    if leak:
        assert "retained_per_request" in run.summary


# --- GitLab: template and component -------------------------------------------------------


def _gitlab_job() -> dict[str, Any]:
    return _yaml(GITLAB_TEMPLATE)[".leakgate"]  # type: ignore[no-any-return]


def test_gitlab_template_and_component_are_one_job() -> None:
    job = _gitlab_job()
    assert job["script"] == [GITLAB_INSTALL.read_text(), GITLAB_RUN.read_text()], (
        "ci/gitlab/*.sh and the script pasted into .gitlab-ci-template.yml differ"
    )
    header, body = _component()
    inputs = header["spec"]["inputs"]
    assert all(spec.get("type") == "string" for spec in inputs.values())
    assert inputs["mode"]["options"] == ["auto", "check", "compare"]
    (name,) = body
    assert name == "$[[ inputs.job-name ]]" and inputs["job-name"]["default"] == "leakgate"
    # The component with its defaults filled in, included at the template's own tag and with
    # the project the template leaves to the user, is the template's job.
    ref = _gitlab_job()["variables"]["LEAKGATE_REF"]
    assert _component_job({"project": ""}, {"sha": ref}) == job
    used = set(GITLAB_INPUT.findall(GITLAB_COMPONENT.read_text()))
    assert used == set(inputs)


def test_gitlab_inputs_and_variables_never_touch_a_script_line() -> None:
    _, body = _component()
    for job in (_gitlab_job(), *body.values()):
        for key in ("before_script", "script", "after_script"):
            for item in job.get(key, []):
                assert "$[[" not in item
        for var, value in job["variables"].items():
            if GITLAB_EXPR.search(str(value)):
                assert GITLAB_EXPR.fullmatch(str(value)), f"{var}: an input is passed whole"


def test_gitlab_job_reports_and_caches() -> None:
    job = _gitlab_job()
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["paths"] == ["$LEAKGATE_REPORT_DIR/"]
    assert job["artifacts"]["reports"]["junit"] == "$LEAKGATE_REPORT_DIR/junit.xml"
    variables = job["variables"]
    for var in ("GOCACHE", "LEAKGATE_CACHE"):
        cached = variables[var].removeprefix("$CI_PROJECT_DIR/")
        assert cached.startswith("."), f"{var}: leakgate's tree hash must skip it"
        assert f"{cached}/" in job["cache"]["paths"]
    assert any("merge_request_event" in rule.get("if", "") for rule in job["rules"])


def _expand(value: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def _run_gitlab_job(
    project: Path,
    variables: Mapping[str, str],
    env: Mapping[str, str],
    timeout: float = 180,
    items: tuple[int, ...] = (1,),
    job: Mapping[str, Any] | None = None,
    after: str = "",
) -> subprocess.CompletedProcess[str]:
    """The job's script items the way gitlab-runner runs them: the job's variables (expanded,
    overridden by `variables`) in the environment, the items one after the other in one
    `bash -eo pipefail`, then `after` (a check of the test's). By default only the gate item
    runs: leakgate is installed here (or faked on PATH)."""
    job = job or _gitlab_job()
    ci = {**os.environ, **env, "CI": "true", "CI_PROJECT_DIR": str(project)}
    job_env = {k: _expand(str(v), ci) for k, v in job["variables"].items()}
    job_env |= variables
    for var in ("GOCACHE", "LEAKGATE_CACHE", "PIP_CACHE_DIR"):  # keep this machine's caches
        job_env.pop(var)
    script = project.parent / "gitlab-job.sh"
    script.write_text("\n".join([*(job["script"][n] for n in items), after]))
    return subprocess.run(
        ["bash", "-eo", "pipefail", str(script)],
        cwd=project,
        env={**ci, **job_env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def gitlab_project(tmp_path: Path) -> tuple[Path, str, str]:
    """A project checkout with two commits: (dir, first, second)."""
    project = tmp_path / "project"
    project.mkdir()
    _git(project, "init", "-q", "-b", "main")
    for n in ("one", "two"):
        (project / f"{n}.go").write_text("package main\n")
        _git(project, "add", ".")
        _git(project, "commit", "-qm", n)
    return project, _git(project, "rev-parse", "HEAD~1"), _git(project, "rev-parse", "HEAD")


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, ["check"]),
        ({"CI_MERGE_REQUEST_DIFF_BASE_SHA": "{first}"}, ["compare", "--base", "{first}"]),
        (
            {
                "CI_MERGE_REQUEST_DIFF_BASE_SHA": "{first}",
                "CI_MERGE_REQUEST_TARGET_BRANCH_SHA": "{second}",
            },
            ["compare", "--base", "{second}"],
        ),
        ({"CI_MERGE_REQUEST_DIFF_BASE_SHA": "{first}", "LEAKGATE_MODE": "check"}, ["check"]),
        ({"LEAKGATE_BASE_REF": "{first}"}, ["compare", "--base", "{first}"]),
        (
            {"LEAKGATE_BASELINE": "b.json", "LEAKGATE_TRIALS": "5", "LEAKGATE_ARGS": "svc --quick"},
            ["check", "--baseline", "b.json", "--trials", "5"],
        ),
    ],
)
def test_gitlab_mode_and_command_from_ci_variables(
    tmp_path: Path,
    fake: tuple[Path, dict[str, str]],
    gitlab_project: tuple[Path, str, str],
    variables: dict[str, str],
    expected: list[str],
) -> None:
    path, env = fake
    project, first, second = gitlab_project
    filled = {k: v.format(first=first, second=second) for k, v in variables.items()}
    proc = _run_gitlab_job(project, filled, {**env, "PATH": f"{path.parent}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    argv = _argv(env)
    assert argv is not None
    tail = ["--out", f"{project}/.leakgate", *filled.get("LEAKGATE_ARGS", "").split()]
    assert argv == [a.format(first=first, second=second) for a in expected] + tail


@pytest.mark.parametrize("var", ["LEAKGATE_ARGS", "LEAKGATE_CONFIG", "LEAKGATE_BASE_REF"])
def test_gitlab_variables_arrive_as_literals_never_as_shell(
    tmp_path: Path,
    fake: tuple[Path, dict[str, str]],
    gitlab_project: tuple[Path, str, str],
    var: str,
) -> None:
    path, env = fake
    project, _, _ = gitlab_project
    target, hostile = _pwned(tmp_path)
    proc = _run_gitlab_job(
        project, {var: hostile}, {**env, "PATH": f"{path.parent}:{os.environ['PATH']}"}
    )
    assert not target.exists(), "a variable was executed"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    argv = _argv(env)
    assert argv is not None
    if var == "LEAKGATE_ARGS":
        assert argv[argv.index("--out") + 2 :] == hostile.split()
    else:
        assert argv[argv.index({"LEAKGATE_CONFIG": "--config"}.get(var, "--base")) + 1] == hostile


def test_gitlab_bad_mode_is_a_usage_error(
    tmp_path: Path, fake: tuple[Path, dict[str, str]], gitlab_project: tuple[Path, str, str]
) -> None:
    path, env = fake
    project, _, _ = gitlab_project
    env_path = {**env, "PATH": f"{path.parent}:{os.environ['PATH']}"}
    for variables in ({"LEAKGATE_MODE": "chek"}, {"LEAKGATE_MODE": "compare"}):
        proc = _run_gitlab_job(project, variables, env_path)
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert _argv(env) is None


FAKE_PYTHON = """\
#!{python}
# python3 for the GitLab install item: records its argv in FAKE_PYTHON_LOG; `-m venv DIR` makes
# DIR/bin/python (this script), `-m pip install` puts the fake leakgate (FAKE_LEAKGATE) beside it.
import json, os, pathlib, shutil, sys
me, args = pathlib.Path(sys.argv[0]), sys.argv[1:]
with open(os.environ["FAKE_PYTHON_LOG"], "a") as log:
    log.write(json.dumps([str(me), *args]) + "\\n")
if args[:2] == ["-m", "venv"]:
    (pathlib.Path(args[2]) / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(me, pathlib.Path(args[2]) / "bin" / "python")
elif args[:3] == ["-m", "pip", "install"]:
    shutil.copy(os.environ["FAKE_LEAKGATE"], me.parent / "leakgate")
"""


@pytest.fixture
def fake_python(tmp_path: Path, fake: tuple[Path, dict[str, str]]) -> tuple[Path, dict[str, str]]:
    """A fake python3 first on PATH (its argv lands in FAKE_PYTHON_LOG) that installs the fake
    leakgate; returns the log and the environment for _run_gitlab_job."""
    path, env = fake
    python = tmp_path / "fake-python" / "python3"
    python.parent.mkdir()
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    log = tmp_path / "python.log"
    return log, {
        **env,
        "PATH": f"{python.parent}:{os.environ['PATH']}",
        "FAKE_PYTHON_LOG": str(log),
        "FAKE_LEAKGATE": str(path),
        "CI_SERVER_URL": "https://gitlab.example.com",
        "CI_JOB_ID": "4242",
    }


def _python_calls(log: Path) -> list[list[str]]:
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


def _pip_requirement(calls: list[list[str]]) -> str:
    (pip,) = [call for call in calls if call[1:4] == ["-m", "pip", "install"]]
    return pip[-1]


def _component_job(inputs: Mapping[str, str], context: Mapping[str, str]) -> dict[str, Any]:
    """The component's job as GitLab interpolates it: inputs (or their defaults) and the
    component context (`$[[ component.sha ]]`, ...)."""
    header, body = _component()
    specs = header["spec"]["inputs"]
    unknown = set(inputs) - set(specs)
    assert not unknown, f"not inputs of the component: {unknown}"
    values = {k: str(v["default"]) for k, v in specs.items() if "default" in v} | dict(inputs)
    missing = set(specs) - set(values)
    assert not missing, f"required inputs not given: {missing}"
    declared = set(header["spec"].get("component", []))

    def one(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2)
        if kind == "inputs":
            return values[name]
        assert name in declared, f"$[[ component.{name} ]] needs spec:component: [{name}]"
        return context[name]

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {fill(k): fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return GITLAB_EXPR.sub(one, value) if isinstance(value, str) else value

    (job,) = fill(body).values()
    return job  # type: ignore[no-any-return]


def test_gitlab_installs_leakgate_from_its_own_project_at_the_included_ref(
    tmp_path: Path,
    fake_python: tuple[Path, dict[str, str]],
    gitlab_project: tuple[Path, str, str],
) -> None:
    """No package index holds leakgate-go: the template installs the project at its own tag, the
    component the project at the commit GitLab included it from (`$[[ component.sha ]]`)."""
    log, env = fake_python
    project, _, _ = gitlab_project
    version = _pyproject_version()
    template = _gitlab_job()["variables"]
    assert template["LEAKGATE_REF"] == f"v{version}"
    assert template["LEAKGATE_INSTALL"] == ""
    header, body = _component()
    assert "sha" in header["spec"]["component"]
    (component,) = body.values()
    assert component["variables"]["LEAKGATE_REF"] == "$[[ component.sha ]]"
    assert "default" not in header["spec"]["inputs"]["project"], "the project has no default"

    sha = "0123456789abcdef0123456789abcdef01234567"
    for project_input, url in [
        ("group/leakgate", "https://gitlab.example.com/group/leakgate.git"),
        ("https://github.com/OWNER/leakgate.git", "https://github.com/OWNER/leakgate.git"),
    ]:
        job = _component_job({"project": project_input}, {"sha": sha})
        proc = _run_gitlab_job(project, {}, env, items=(0,), job=job)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert _pip_requirement(_python_calls(log)) == f"leakgate-go @ git+{url}@{sha}"

    # The template: its own tag; LEAKGATE_INSTALL (an index, a wheel) overrides.
    proc = _run_gitlab_job(project, {"LEAKGATE_PROJECT": "group/leakgate"}, env, items=(0,))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = f"leakgate-go @ git+https://gitlab.example.com/group/leakgate.git@v{version}"
    assert _pip_requirement(_python_calls(log)) == expected
    wheel = f"wheels/leakgate_go-{version}-py3-none-any.whl"
    proc = _run_gitlab_job(project, {"LEAKGATE_INSTALL": wheel}, env, items=(0,))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _pip_requirement(_python_calls(log)) == wheel

    # Neither: a usage error naming what to set, before any venv is made.
    proc = _run_gitlab_job(project, {}, env, items=(0, 1))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "LEAKGATE_PROJECT" in proc.stderr
    assert not any(call[1:3] == ["-m", "venv"] for call in _python_calls(log))


def test_gitlab_jobs_on_one_shell_runner_get_a_venv_each_removed_after_the_job(
    tmp_path: Path,
    fake_python: tuple[Path, dict[str, str]],
    gitlab_project: tuple[Path, str, str],
) -> None:
    """`parallel: matrix` on a shell runner: jobs run side by side on one machine."""
    log, env = fake_python
    project, _, _ = gitlab_project
    venvs = []
    for job_id in ("101", "102"):
        proc = _run_gitlab_job(
            project,
            {"LEAKGATE_PROJECT": "group/leakgate"},
            {**env, "CI_JOB_ID": job_id},
            items=(0, 1),
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (venv,) = [call[3] for call in _python_calls(log) if call[1:3] == ["-m", "venv"]]
        assert job_id in Path(venv).name, venv
        assert not Path(venv).exists(), "the job's venv outlived the job"
        assert _argv(env) == ["check", "--out", f"{project}/.leakgate"]  # the venv's leakgate
        venvs.append(venv)
    assert venvs[0] != venvs[1]


@pytest.mark.slow
def test_gitlab_install_item_installs_this_checkout_at_a_commit_with_the_real_pip(
    tmp_path: Path, gitlab_project: tuple[Path, str, str]
) -> None:
    """The real pip against a clone of this working tree, pinned to a commit as the component
    pins it. leakgate itself comes from git, never an index; its dependencies from this Python's
    site (the venv sees it), and only pip's isolated build of it fetches setuptools and wheel."""
    project, _, _ = gitlab_project
    source = _snapshot(tmp_path / "leakgate")
    sha = _git(source, "rev-parse", "HEAD")
    shim = tmp_path / "shim" / "python3"
    shim.parent.mkdir()
    shim.write_text(
        "#!/usr/bin/env bash\n"
        '[ "$1 $2" != "-m venv" ] || { shift 2; set -- -m venv --system-site-packages "$@"; }\n'
        f'exec {sys.executable} "$@"\n'
    )
    shim.chmod(0o755)
    # file://localhost/...: pip's PEP 508 parser wants a host in a git+file URL.
    job = _component_job({"project": f"file://localhost{source}"}, {"sha": sha})
    env = {
        "PATH": f"{shim.parent}:{os.environ['PATH']}",
        "CI_JOB_ID": "777",
    }
    proc = _run_gitlab_job(
        project,
        {},
        env,
        timeout=300,
        items=(0,),
        job=job,
        after='command -v leakgate; echo "$PATH"',
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert f"leakgate {_pyproject_version()}" in proc.stdout
    where = proc.stdout.splitlines()[-2]
    assert "leakgate-venv-777" in where, output


@pytest.mark.go
@pytest.mark.slow
def test_gitlab_real_gate_writes_the_artifacts_the_job_keeps(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    project = tmp_path / SAMPLE.name  # the name keeps leakgate's binary cache warm
    shutil.copytree(SAMPLE, project)
    config = write_config(tmp_path / "leakgate.yml", warmup="2s", duration="5s")
    proc = _run_gitlab_job(
        project, {"LEAKGATE_CONFIG": str(config), "LEAKGATE_ARGS": f"--quick --env {marker}"}, {}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    artifacts = _gitlab_job()["artifacts"]
    junit = project / _expand(artifacts["reports"]["junit"], {"LEAKGATE_REPORT_DIR": ".leakgate"})
    assert junit.is_file()
    verdict = json.loads((junit.parent / "verdict.json").read_text())
    assert verdict["status"] == "pass"


# --- versions and the release -----------------------------------------------------------

RELEASE = REPO / ".github" / "workflows" / "release.yml"
CHECK_DIST = REPO / "ci" / "release" / "check_dist.py"
# Every file a user copies a version from: docs, the integrations, the package itself.
VERSIONED = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    ACTION,
    GITLAB_TEMPLATE,
    GITLAB_COMPONENT,
    HOOKS,
    *sorted((REPO / ".github" / "workflows").glob("*.yml")),
]
SEMVER = r"v?\d+\.\d+\.\d+[\w.+-]*"
# A git ref (tags are vX.Y.Z): action and component refs, pre-commit revs, raw URLs, git+ URLs.
TAG_SPELLINGS = [
    re.compile(rf"\bleakgate@({SEMVER})"),
    re.compile(rf"\brev: ({SEMVER})"),
    re.compile(rf"/-/raw/({SEMVER})/"),
    re.compile(rf"\bref: ({SEMVER})"),
    re.compile(rf"\bLEAKGATE_REF: ({SEMVER})"),
    re.compile(rf"git\+\S+?@({SEMVER})"),
]
# A package version (X.Y.Z): pip requirements.
PACKAGE_SPELLINGS = [re.compile(rf"\bleakgate-go\s*(?:===?|~=|>=|<=)\s*({SEMVER})")]


def test_every_version_spelling_agrees_with_pyproject() -> None:
    version = _pyproject_version()
    init = (REPO / "leakgate" / "__init__.py").read_text()
    assert f'__version__ = "{version}"' in init, "leakgate.__version__ and pyproject.toml differ"
    tags, wrong = 0, []
    for path in VERSIONED:
        text = path.read_text()
        for pattern in TAG_SPELLINGS:
            for m in pattern.finditer(text):
                tags += 1
                if m.group(1) != f"v{version}":
                    wrong.append(f"{path.name}: {m.group(0)!r} (the tag is v{version})")
        for pattern in PACKAGE_SPELLINGS:
            for m in pattern.finditer(text):
                if m.group(1) != version:
                    wrong.append(f"{path.name}: {m.group(0)!r} (the package is {version})")
    assert not wrong, "\n".join(wrong)
    assert tags >= 8, "the docs' examples name the release tag"


def test_no_default_or_example_installs_the_package_from_an_index() -> None:
    """leakgate-go is published only by the release workflow: until a maintainer has run it,
    `pip install leakgate-go==X.Y.Z` fails. Examples and defaults install from the repository;
    docs/releasing.md says how the package gets onto the index."""
    for path in VERSIONED:
        if path.name == "releasing.md":
            continue
        for pattern in PACKAGE_SPELLINGS:
            assert not pattern.search(path.read_text()), f"{path.name}: installs from an index"
    assert re.search(r"leakgate-go @ git\+https://\S+@v", (REPO / "docs" / "ci.md").read_text())


def _workflow_on(workflow: dict[Any, Any]) -> Any:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true


def test_release_workflow_publishes_a_checked_tag_with_trusted_publishing() -> None:
    workflow = _yaml(RELEASE)
    assert _workflow_on(workflow) == {"push": {"tags": ["v*"]}}
    assert workflow["permissions"] == {"contents": "read"}
    jobs = workflow["jobs"]
    build, publish = jobs["build"], jobs["publish"]
    runs = "\n".join(step.get("run", "") for step in build["steps"])
    assert "python -m build" in runs
    assert re.search(r"twine check --strict dist/\*", runs)
    assert re.search(r'check_dist\.py --tag "\$GITHUB_REF_NAME" dist', runs), "tag == version"
    # Publishing: OIDC only (no token), from a protected environment, the checked files only.
    assert publish["needs"] == "build"
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    uses = [step["uses"] for step in publish["steps"]]
    assert any(u.startswith("actions/download-artifact@") for u in uses)
    (pypi,) = [s for s in publish["steps"] if s["uses"].startswith("pypa/gh-action-pypi-publish@")]
    assert "password" not in pypi.get("with", {})
    assert "id-token" not in build.get("permissions", {})
    for job in jobs.values():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), "an expression inside run:"
            if "uses" in step:
                assert re.fullmatch(r"[\w./-]+@[0-9a-f]{40}", step["uses"]), "pin to a commit"
    pins = SHA_PIN.findall(RELEASE.read_text())
    assert len(pins) == sum("uses" in step for job in jobs.values() for step in job["steps"])


def _build_dists(tmp_path: Path) -> Path:
    """sdist, then the wheel built from the unpacked sdist, as `python -m build` does. The sdist
    comes from this Python's setuptools; the wheel from pip's isolated build (setuptools>=68
    and wheel from the index or pip's cache: this Python may have no wheel package)."""
    source = _snapshot(tmp_path / "source")
    dist = tmp_path / "dist"
    # setuptools reads sys.argv as a setup.py command line: leave it only the program name.
    sdist_code = "import sys; d = sys.argv.pop(); from setuptools import build_meta as b; "
    sdist = subprocess.run(
        [sys.executable, "-c", sdist_code + "print(b.build_sdist(d))", str(dist)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sdist.returncode == 0, sdist.stderr
    unpacked = tmp_path / "unpacked"
    shutil.unpack_archive(dist / sdist.stdout.splitlines()[-1], unpacked)
    (tree,) = unpacked.iterdir()
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check"]
    wheel = subprocess.run(
        [*pip, "--quiet", "-w", str(dist), str(tree)], capture_output=True, text=True, timeout=300
    )
    assert wheel.returncode == 0, wheel.stdout + wheel.stderr
    return dist


@pytest.mark.slow
def test_release_dists_hold_the_go_sources_and_match_the_tag(tmp_path: Path) -> None:
    dist = _build_dists(tmp_path)
    version = _pyproject_version()
    check = [sys.executable, str(CHECK_DIST), "--tag"]
    proc = subprocess.run([*check, f"v{version}", str(dist)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "agent" in proc.stdout and "loadgen" in proc.stdout
    for tag in ("v9.9.9", version):  # another version; the version without the tag's v
        proc = subprocess.run([*check, tag, str(dist)], capture_output=True, text=True)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"v{version}" in proc.stderr
    files = [str(p) for p in dist.iterdir()]
    twine = [sys.executable, "-m", "twine", "check", "--strict", *files]
    proc = subprocess.run(twine, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_dist_refuses_a_wheel_without_the_go_sources(tmp_path: Path) -> None:
    import zipfile

    version = _pyproject_version()
    dist = tmp_path / "dist"
    dist.mkdir()
    name = f"leakgate_go-{version}"
    with zipfile.ZipFile(dist / f"{name}-py3-none-any.whl", "w") as wheel:
        wheel.writestr("leakgate/__init__.py", f'__version__ = "{version}"\n')
        wheel.writestr(f"{name}.dist-info/METADATA", f"Name: leakgate-go\nVersion: {version}\n")
    proc = subprocess.run(
        [sys.executable, str(CHECK_DIST), "--tag", f"v{version}", str(dist)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "leakgate/agent/" in proc.stderr and "sdist" in proc.stderr


# --- shellcheck ---------------------------------------------------------------------------


def test_every_ci_script_is_shellcheck_clean(shellcheck: str, tmp_path: Path) -> None:
    assert len(SCRIPTS) == 5, SCRIPTS
    runs = [step["run"] for step in _yaml(ACTION)["runs"]["steps"] if "run" in step]
    runs += [
        s["run"] for job in _yaml(RELEASE)["jobs"].values() for s in job["steps"] if "run" in s
    ]
    for n, text in enumerate(runs):  # the one-liners in action.yml and the release workflow
        (tmp_path / f"action-step-{n}.sh").write_text(text)
    proc = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", *map(str, SCRIPTS)]
        + [str(p) for p in sorted(tmp_path.glob("action-step-*.sh"))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- pre-commit ---------------------------------------------------------------------------


def test_pre_commit_hook_runs_the_quick_check_before_a_push() -> None:
    (hook,) = _yaml(HOOKS)
    assert hook["id"] == "leakgate"
    assert hook["entry"].split() == ["leakgate", "check", "--quick"]
    assert hook["language"] == "python"
    assert hook["stages"] == ["pre-push"]
    assert hook["pass_filenames"] is False
    files = re.compile(hook["files"])
    for path in ("main.go", "cmd/server/handlers.go", "go.mod", "go.sum", "leakgate.yml"):
        assert files.search(path), path
    for path in ("README.md", "docs/go.md", "cargo.toml", "notleakgate.yml"):
        assert not files.search(path), path


TRY_ARGS = ("--hook-stage", "pre-push", "--all-files", "--verbose")


def _snapshot(dest: Path) -> Path:
    """This working tree as a one-commit git repository: `pre-commit try-repo` on the real
    checkout would see only tracked files (plus staged ones), not new ones."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    _git(dest, "init", "-q")
    _git(dest, "add", ".")
    _git(dest, "commit", "-qm", "snapshot")
    return dest


@pytest.mark.go
@pytest.mark.slow
def test_pre_commit_try_repo_passes_on_the_clean_sample(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    if importlib.util.find_spec("pre_commit") is None:
        if _require_tools():
            pytest.fail("pre-commit is required on CI (pip install -e '.[test]')")
        pytest.skip("pre-commit not installed")
    hooks_repo = _snapshot(tmp_path / "leakgate")
    project = tmp_path / "project"
    shutil.copytree(SAMPLE, project)
    _git(project, "init", "-q")
    _git(project, "add", ".")
    _git(project, "commit", "-qm", "service")
    # The service inherits the hook's environment: the marker finds leftovers, no stock delay.
    key, value = marker.split("=", 1)
    proc = subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(hooks_repo), "leakgate", *TRY_ARGS],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,  # pre-commit builds its own venv for the hook: leakgate and scipy from PyPI
        env={**os.environ, key: value, "STOCK_LATENCY": "0s"},
        stdin=subprocess.DEVNULL,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "leakgate (quick leak check)" in output and "Passed" in output
    assert "retained_per_request" in output  # leakgate itself ran and judged
    assert (project / ".leakgate" / "verdict.json").is_file()
