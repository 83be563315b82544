from __future__ import annotations

from pathlib import Path

import pytest

from leakgate.config import (
    Config,
    ProbeConfig,
    RequestSpec,
    apply_overrides,
    find_config,
    load_config,
    parse_config,
    recorded_plain,
)
from leakgate.environment import recorded_config
from leakgate.errors import ConfigError
from leakgate.metrics import DEFAULT_THRESHOLDS
from leakgate.model import from_plain, to_plain
from leakgate.sequential import plan_of

from .conftest import SAMPLE

DESIGN_EXAMPLE = """\
service:
  dir: ./cmd/server                    # Go main package to build (default: .)
  build_flags: ["-tags", "netgo"]
  args: ["-addr", "127.0.0.1:{port}"]  # leakgate picks a free port: {port}/{addr} here, PORT in env
  env: {GOGC: "100"}
  ready_path: /healthz                 # polled until 2xx (default: /)
  inject_agent: true                   # go build -overlay debug agent (default: true)
load:
  tool: builtin                        # builtin | wrk
  warmup: 5s
  duration: 20s
  connections: 16
  rate: auto                           # requests/s, or auto: a fixed share of measured capacity
  paths: [/orders]                     # shorthand for simple GETs
  requests:                            # full form: weighted scenario with templates
    - {method: POST, path: "/orders/{seq}", body: '{"sku": "{rand:1-100000}"}', weight: 3}
trials: 5
thresholds:
  p95_latency: {max_increase: 10%, floor: 0.5ms, max: 200ms}
  heap_live: {max_increase: 10%, floor: 1MiB}
  retained_per_request: {max: 16B}
  goroutine_growth: {max: 16}
  error_rate: {max: 1%}
report:
  dir: .leakgate
"""


def test_design_example_is_valid() -> None:
    cfg = parse_config(DESIGN_EXAMPLE, "leakgate.yml")
    assert cfg.service.dir == "./cmd/server"
    assert cfg.service.build_flags == ("-tags", "netgo")
    assert cfg.service.env == {"GOGC": "100"}
    assert cfg.load.warmup == 5.0 and cfg.load.duration == 20.0
    assert cfg.load.rate == "auto"
    assert cfg.load.requests == (
        RequestSpec(path="/orders"),
        RequestSpec(
            path="/orders/{seq}", method="POST", body='{"sku": "{rand:1-100000}"}', weight=3.0
        ),
    )
    assert cfg.trials == 5
    assert cfg.thresholds["p95_latency"].max == pytest.approx(0.2)
    assert cfg.thresholds["p95_latency"].floor == pytest.approx(0.0005)
    assert cfg.thresholds["heap_live"].floor == 1024 * 1024  # set in the example
    assert cfg.thresholds["retained_per_request"].max_increase == pytest.approx(0.10)
    assert cfg.thresholds["retained_per_request"].max == 16
    assert cfg.thresholds["error_rate"].max == pytest.approx(0.01)


def test_sample_service_config_is_valid() -> None:
    cfg = load_config(SAMPLE / "leakgate.yml")
    assert cfg.service.ready_path == "/healthz"
    assert any("{seq}" in r.path for r in cfg.load.requests)


def test_empty_file_gives_defaults() -> None:
    cfg = parse_config("", "x.yml")
    assert cfg.load == Config().load
    assert cfg.thresholds == DEFAULT_THRESHOLDS
    assert cfg.load.requests == (RequestSpec(path="/"),)


def test_threshold_merges_with_default_and_null_switches_off() -> None:
    cfg = parse_config(
        "thresholds:\n  p95_latency: {max: 150ms}\n  goroutine_growth: {max: null}\n"
    )
    assert cfg.thresholds["p95_latency"].max == pytest.approx(0.15)
    assert cfg.thresholds["p95_latency"].max_increase == pytest.approx(0.10)  # default kept
    assert cfg.thresholds["goroutine_growth"].max is None


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "lg.yml")
    return info.value.message


def test_unknown_key_names_file_line_and_suggests() -> None:
    msg = _error("load:\n  warmup: 5s\n  duraton: 20s\n")
    assert msg.startswith("lg.yml:3:3: load.duraton: unknown key; did you mean 'duration'?")
    assert "^" in msg


def test_unknown_metric_is_rejected() -> None:
    msg = _error("thresholds:\n  p95_latncy: {max: 1s}\n")
    assert "lg.yml:2:3: thresholds.p95_latncy: unknown key; did you mean 'p95_latency'?" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("load:\n  duration: soon\n", "lg.yml:2:13: load.duration: 'soon' is not a duration"),
        ("load:\n  connections: many\n", "lg.yml:2:16: load.connections: expected a whole number"),
        ("load:\n  connections: 0\n", "load.connections: must be between 1 and 10000, got 0"),
        ("trials: 2.5\n", "lg.yml:1:9: trials: expected a whole number"),
        ("service:\n  inject_agent: yes please\n", "service.inject_agent: expected true or false"),
        ("service:\n  args: -addr\n", "lg.yml:2:9: service.args: expected a list"),
        ("service:\n  env: [A]\n", "service.env: expected a mapping, got a list"),
        ("load:\n  rate: fast\n", "load.rate: expected auto, max or requests per second"),
        ("load:\n  rate: -5\n", "load.rate: must be above 0"),
        ("load:\n  paths: [orders]\n", "load.paths[0]: a path must start with '/'"),
        (
            "load:\n  requests:\n    - {method: GET}\n",
            "lg.yml:3:7: load.requests[0]: a request needs a path",
        ),
        (
            "load:\n  requests:\n    - {path: /a, weight: 0}\n",
            "load.requests[0].weight: must be above 0",
        ),
        ("thresholds:\n  retained_per_request: {max: lots}\n", "'lots' is not a size"),
        (
            "thresholds:\n  error_rate: {max: 150%}\n",
            "thresholds.error_rate.max: 150% is over the limit",
        ),
        ("[1, 2]\n", "lg.yml:1:1: (top level): expected a mapping, got a list"),
        ("probes:\n  interval: 1ms\n", "probes.interval: must be at least 50ms"),
        ("probes:\n  heap_dump: sometimes\n", "lg.yml:2:14: probes.heap_dump: expected true or"),
        ("probes:\n  heap_dump_max: 64KiB\n", "probes.heap_dump_max: must be >= 1MiB"),
        ("probes:\n  heap_dump_max: lots\n", "'lots' is not a size"),
        ("probes:\n  heap_dump_max: 2GiB\n", "probes.heap_dump_max: 2GiB is over the limit"),
    ],
)
def test_wrong_types_and_ranges(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_heap_dumps_are_on_by_default_and_bounded() -> None:
    assert (ProbeConfig().heap_dump, ProbeConfig().heap_dump_max) == (True, 256 * 1024 * 1024)
    cfg = parse_config("probes:\n  heap_dump: false\n  heap_dump_max: 512MiB\n", "lg.yml")
    assert (cfg.probes.heap_dump, cfg.probes.heap_dump_max) == (False, 512 * 1024**2)


def test_duplicate_keys() -> None:
    msg = _error("load:\n  duration: 5s\n  duration: 6s\n")
    assert "lg.yml:3:3: load.duration: duplicate key (first defined on line 2)" in msg


def test_python_tags_are_rejected_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"service:\n  dir: !!python/object/apply:os.system ['touch {marker}']\n"
    msg = _error(text)
    assert "lg.yml:2:8: service.dir: rejected: the YAML tag !!python/object/apply:os.system" in msg
    assert not marker.exists()


def test_malformed_yaml_has_position_and_caret() -> None:
    msg = _error("load:\n  duration: [5s\n  warmup: 1s\n")
    assert msg.startswith("lg.yml:")
    assert "invalid YAML" in msg and "^" in msg


def test_alias_bomb_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]")
    msg = _error("\n".join(lines) + "\n")
    assert "unknown key" in msg  # rejected at the first key, never expanded


def test_alias_bomb_inside_a_known_list_is_bounded() -> None:
    text = "x: &x [a, a, a, a, a, a, a, a, a, a]\nservice:\n  args: [*x, *x]\n"
    msg = _error(text)
    assert "unknown key" in msg or "expected a string" in msg


def test_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "leakgate.yml"
    path.write_text("# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="over the 1 MiB limit"):
        load_config(path)


def test_find_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config(None, None) is None
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "leakgate.yml").write_text("trials: 2\n")
    assert find_config(None, "svc") == Path("svc") / "leakgate.yml"
    with pytest.raises(ConfigError, match=r"nope\.yml: config file not found"):
        find_config("nope.yml", None)


def test_overrides_win() -> None:
    cfg = apply_overrides(
        parse_config("service:\n  env: {A: '1'}\n"),
        duration=3.0,
        warmup=1.0,
        trials=2,
        env={"B": "2"},
        report_dir="out",
    )
    assert (cfg.load.duration, cfg.load.warmup, cfg.trials, cfg.report_dir) == (3.0, 1.0, 2, "out")
    assert cfg.service.env == {"A": "1", "B": "2"}


def test_confirm_and_trials() -> None:
    cfg = parse_config("confirm: 3\n")
    assert cfg.confirm == 3 and cfg.trials is None
    assert cfg.trial_count(against_baseline=True) == 5
    assert cfg.trial_count(against_baseline=False) == 1
    assert parse_config("trials: 7\n").trial_count(against_baseline=True) == 7
    assert "confirm: must be between 0 and 50" in _error("confirm: 99\n")


# -- issue 14: refused up front, naming the key (items 4, 8, 9) ------------------------------


def test_retained_noise_floor_and_min_requests() -> None:
    from leakgate.config import quick
    from leakgate.metrics import RETAINED_MIN_REQUESTS, RETAINED_NOISE_FLOOR

    default = Config().threshold("retained_per_request")
    assert (default.noise_floor, default.min_requests) == (96 * 1024, 100)
    assert (RETAINED_NOISE_FLOOR, RETAINED_MIN_REQUESTS) == (96 * 1024, 100)
    cfg = parse_config(
        "thresholds:\n  retained_per_request: {max: 32B, noise_floor: 1MiB, min_requests: 5000}\n"
    )
    t = cfg.threshold("retained_per_request")
    assert (t.max, t.noise_floor, t.min_requests, t.floor) == (32.0, 1024**2, 5000, 16.0)
    off = parse_config("thresholds:\n  retained_per_request: {noise_floor: null}\n")
    assert off.threshold("retained_per_request").noise_floor is None
    assert quick(cfg).threshold("retained_per_request").noise_floor == 1024**2  # kept
    assert "unknown key" in _error("thresholds:\n  p95_latency: {noise_floor: 1KiB}\n")


def test_config_with_noise_floor_round_trips_through_a_run_record() -> None:
    from leakgate.model import from_plain, to_plain

    cfg = parse_config("thresholds:\n  retained_per_request: {min_requests: 7}\n")
    assert from_plain(Config, to_plain(cfg)) == cfg
    old = to_plain(Config())  # a record written before these keys existed
    del old["thresholds"]["retained_per_request"]["noise_floor"]
    assert from_plain(Config, old).threshold("retained_per_request").noise_floor is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("load:\n  rate_share: 0%\n", "lg.yml:2:15: load.rate_share: must be above 0%, got 0%"),
        ("load:\n  rate_share: 0\n", "load.rate_share: must be above 0%, got 0"),
        ("load:\n  timeout: 1ns\n", "lg.yml:2:12: load.timeout: must be at least 1ms, got 1ns"),
        ("load:\n  timeout: 0s\n", "load.timeout: must be at least 1ms, got 0s"),
        ("load:\n  duration: 999ms\n", "load.duration: must be at least 1s, got 999ms"),
        ("load:\n  duration: 25h\n", "load.duration: must be at most 24h, got 25h"),
        ("load:\n  warmup: 1ns\n", "load.warmup: must be 0s or at least 1ms, got 1ns"),
        ("load:\n  timeout: 48h\n", "load.timeout: must be at most 24h, got 48h"),
        ('service:\n  env: {A: "\\0"}\n', "lg.yml:2:12: service.env.A: contains a NUL byte"),
        ('service:\n  env: {"A=B": x}\n', "service.env.A=B: an environment variable name cannot"),
        ('service:\n  env: {"": x}\n', "service.env.: an environment variable name cannot be"),
        ('service:\n  args: ["\\0"]\n', "service.args[0]: contains a NUL byte"),
        ('service:\n  binary: "./a\\0"\n', "service.binary: contains a NUL byte"),
        ('load:\n  command: [x, "\\0"]\n', "load.command[1]: contains a NUL byte"),
        ('report:\n  dir: "a\\0"\n', "report.dir: contains a NUL byte"),
        ('load:\n  paths: ["/a\\r\\n"]\n', "load.paths[0]: a path cannot contain '\\r'"),
        ('load:\n  paths: ["/a#b"]\n', "load.paths[0]: a path cannot contain '#'"),
        ('load:\n  paths: ["/é"]\n', "load.paths[0]: a path cannot contain 'é' (percent-encode"),
        (
            'load:\n  requests: [{path: /a, headers: {X: "a\\nb"}}]\n',
            "load.requests[0].headers.X: a header value cannot contain '\\n'",
        ),
        (
            'load:\n  requests: [{path: /a, headers: {"X:Y": b}}]\n',
            "load.requests[0].headers.X:Y: not a valid header name",
        ),
        (
            "load:\n  requests: [{path: /a, headers: {content-length: '3'}}]\n",
            "load.requests[0].headers.content-length: is set from the body; remove it",
        ),
    ],
)
def test_input_the_service_or_the_generator_would_refuse(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_what_stays_valid() -> None:
    cfg = parse_config(
        "load:\n  warmup: 0s\n  duration: 1s\n  timeout: 1ms\n  rate_share: 1%\n"
        '  requests: [{path: "/a?b=%20{seq}", body: "x\\0y", headers: {X-A: "a\\tb"}}]\n'
        'service:\n  env: {A: "B=C", EMPTY: ""}\n'
    )
    assert (cfg.load.warmup, cfg.load.duration, cfg.load.timeout) == (0.0, 1.0, 1e-3)
    assert cfg.load.requests[0].body == "x\0y"  # a body is bytes: NUL is data there
    assert cfg.service.env == {"A": "B=C", "EMPTY": ""}


def test_duration_flags_are_checked_like_the_config() -> None:
    from leakgate.config import flag_duration
    from leakgate.errors import UsageError

    assert flag_duration("--duration", "duration", "20s") == 20.0
    assert flag_duration("--duration", "duration", None) is None
    assert flag_duration("--warmup", "warmup", "0s") == 0.0
    for text, message in [
        ("100h", "--duration: must be at most 24h, got 100h"),
        ("1ns", "--duration: must be at least 1s, got 1ns"),
        ("soon", "--duration: 'soon' is not a duration"),
    ]:
        with pytest.raises(UsageError) as info:
            flag_duration("--duration", "duration", text)
        assert message in info.value.message
    config_message = _error("load:\n  duration: 100h\n")
    assert "load.duration: must be at most 24h, got 100h" in config_message  # the same words


def test_env_problem() -> None:
    from leakgate.config import env_problem

    assert env_problem("A", "B=C") is None
    assert env_problem("A", "") is None
    assert env_problem("A=B", "x") == "an environment variable name cannot contain '='"
    assert env_problem("", "x") == "an environment variable name cannot be empty"
    assert env_problem("A\0", "x") == "the name contains a NUL byte"
    assert env_problem("A", "x\0") == "the value contains a NUL byte"


# -- integers too large for a float or too long to read: a ConfigError, never a crash ------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"load:\n  rate: {'1' * 400}\n",
            "lg.yml:2:9: load.rate: must be at most 10,000,000 requests per second, "
            "got an integer of 400 digits",
        ),
        ("load:\n  rate: 20000001\n", "load.rate: must be at most 10,000,000 requests per second"),
        (
            f"load:\n  requests:\n    - {{path: /a, weight: {'1' * 400}}}\n",
            "lg.yml:3:26: load.requests[0].weight: must be between 0 and 1e+06, "
            "got an integer of 400 digits",
        ),
        (
            f"load:\n  duration: {'1' * 400}\n",
            "lg.yml:2:13: load.duration: an integer of 400 digits is too large for a number "
            "of seconds",
        ),
        (
            f"service:\n  ready_timeout: {'1' * 400}\n",
            "service.ready_timeout: an integer of 400 digits is too large",
        ),
        (
            f"probes:\n  interval: {'1' * 400}\n",
            "probes.interval: an integer of 400 digits is too large",
        ),
        (
            f"thresholds:\n  retained_per_request: {{noise_floor: {'1' * 400}}}\n",
            "thresholds.retained_per_request.noise_floor: an integer of 400 digits is too large "
            "for a number of bytes",
        ),
        (
            f"thresholds:\n  heap_live: {{max: {'1' * 400}}}\n",
            "thresholds.heap_live.max: an integer of 400 digits is too large for a number of bytes",
        ),
        (
            f"thresholds:\n  p95_latency: {{max_increase: {'1' * 400}}}\n",
            "thresholds.p95_latency.max_increase: an integer of 400 digits is too large for a "
            "fraction",
        ),
        (
            f"thresholds:\n  error_rate: {{max: {'1' * 400}}}\n",
            "thresholds.error_rate.max: an integer of 400 digits is too large for a fraction",
        ),
        (
            f"thresholds:\n  throughput: {{floor: {'1' * 400}}}\n",
            "thresholds.throughput.floor: must be between 0 and 1e+12, "
            "got an integer of 400 digits",
        ),
        (
            f"load:\n  rate_share: {'1' * 400}\n",
            "load.rate_share: an integer of 400 digits is too large for a fraction",
        ),
        (  # hex and sexagesimal integers are read at any length
            f"load:\n  rate: 0x{'f' * 400}\n",
            "load.rate: must be at most 10,000,000 requests per second, got an integer of 482",
        ),
        (
            f"load:\n  rate: 1{':59' * 300}\n",
            "load.rate: must be at most 10,000,000 requests per second, got an integer of 534",
        ),
        (
            f"load:\n  connections: 0x{'f' * 5000}\n",
            "load.connections: must be between 1 and 10000, got an integer of 6021 digits",
        ),
        (
            f"load:\n  rate: {'1' * 5000}\n",
            "lg.yml:2:9: load.rate: an integer of 5000 digits is too long to read "
            "(the limit is 4300 digits)",
        ),
        (
            f"load:\n  rate_share: {'1' * 5000}\n",
            "lg.yml:2:15: load.rate_share: an integer of 5000 digits is too long to read",
        ),
        (
            f"load:\n  connections: -{'1' * 5000}\n",
            "load.connections: an integer of 5000 digits is too long to read",
        ),
        (
            f"load:\n  requests:\n    - {{path: /a, expect_status: {'1' * 5000}}}\n",
            "load.requests[0].expect_status: an integer of 5000 digits is too long to read",
        ),
        (
            f"load:\n  requests:\n    - {{path: /a, weight: {'1' * 5000}}}\n",
            "load.requests[0].weight: an integer of 5000 digits is too long to read",
        ),
        # explicit tags on text they cannot read were a ValueError, a KeyError, an IndexError
        ("load:\n  connections: !!int many\n", "load.connections: rejected: 'many' is not a !!int"),
        ("load:\n  rate: !!float fast\n", "load.rate: rejected: 'fast' is not a !!float"),
        ("load:\n  cpu_split: !!bool maybe\n", "load.cpu_split: rejected: 'maybe' is not a !!bool"),
        ("load:\n  connections: !!int ''\n", "load.connections: rejected: '' is not a !!int"),
        ('service:\n  env: {A: !!int "x"}\n', "service.env.A: rejected: 'x' is not a !!int"),
    ],
)
def test_numbers_python_cannot_hold_are_config_errors(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_a_long_number_where_text_goes_is_that_text() -> None:
    """An env value, an argument: the text as written, never converted (a 5,000-digit
    integer cannot be)."""
    digits = "1" * 5000
    cfg = parse_config(f"service:\n  env: {{A: {digits}}}\n  args: [{digits}, -{digits}]\n")
    assert cfg.service.env == {"A": digits}
    assert cfg.service.args == (digits, "-" + digits)


def test_a_record_made_before_look_every_is_judged_with_the_looks_it_ran_with() -> None:
    """Records written before compare.look_every looked every 2 pairs: `leakgate report`
    must not re-judge them at today's looks (8, 18, 28), which could flip the verdict."""
    today = to_plain(recorded_config(Config()))
    old = {**today, "compare": {k: v for k, v in today["compare"].items() if k != "look_every"}}
    old["compare"]["max_pairs"] = 16
    plan = plan_of(from_plain(Config, recorded_plain(old)).compare)
    assert (plan.min_pairs, plan.every, plan.max_pairs) == (8, 2, 16)
    # a record that has the key keeps it; one without a compare section is left alone
    assert from_plain(Config, recorded_plain(today)).compare == Config().compare
    assert "compare" not in recorded_plain({"trials": 5})
