"""Leak sites from hand-made profiles: attribution to the service's code, ranking, merging."""

from __future__ import annotations

from pathlib import Path

import pytest

from leakgate import leaksites
from leakgate.model import Checkpoint, LeakSites, RunRecord, Trial

from .factories import profile_bytes

GOROUTINE = ("goroutine",)


def _trial(
    tmp: Path,
    index: int,
    profiles: dict[str, bytes],
    side: str = "candidate",
    source: str = "agent",
) -> Trial:
    """A trial whose warm-up and drain checkpoints point at the given profile bytes."""
    paths: dict[str, str] = {}
    for name, data in profiles.items():
        rel = f"trial-{index + 1}/{name}.pb.gz"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
        paths[name] = rel
    checkpoints = {
        label: Checkpoint(
            label,
            heap_profile=paths.get(f"heap-{label}"),
            goroutine_profile=paths.get(f"goroutine-{label}"),
            goroutineleak_profile=paths.get(f"goroutineleak-{label}"),
            source=source,
        )
        for label in ("warmup", "drain")
    }
    return Trial(index=index, side=side, checkpoints=checkpoints)


def heap(*samples: tuple[list[str], int]) -> bytes:
    return profile_bytes([(stack, [max(1, v // 64), v]) for stack, v in samples])


BASE = (["main.init"], 500_000)


def test_growth_is_put_on_the_services_own_frame_and_summed_over_trials(tmp_path: Path) -> None:
    trials = []
    for i in range(3):
        before = heap(BASE, (["runtime.mapassign", "main.audit", "main.handle"], 100_000))
        after = heap(
            BASE,
            (["runtime.mapassign", "main.audit", "main.handle"], 2_100_000),
            (["main.audit", "main.handle"], 1_000_000),  # same function, another line
            (["bufio.NewReaderSize", "net/http.(*conn).serve"], 70_000 if i == 0 else 0),
        )
        trials.append(_trial(tmp_path, i, {"heap-warmup": before, "heap-drain": after}))
    baseline = _trial(
        tmp_path,
        9,
        {"heap-warmup": heap(BASE), "heap-drain": heap(BASE, (["main.x"], 9_000_000))},
        side="baseline",
    )
    record = RunRecord(trials=(*trials, baseline))
    sites = leaksites.find(record, tmp_path)
    top = sites.heap[0]
    assert top.function == "main.audit" and top.trials == 3
    assert top.growth == 3 * 3_000_000
    assert top.caller == "main.handle"
    assert "retained at main.audit (main.go:10) called from main.handle" in top.description
    assert [s.function for s in sites.heap] == ["main.audit", "bufio.NewReaderSize"]
    assert "main.x" not in {s.function for s in sites.heap}  # the baseline side is not shown
    assert sites.heap_command.startswith("go tool pprof -diff_base trial-")
    assert 0.9 < top.share <= 1.0


def test_own_code_ranks_before_a_larger_standard_library_site(tmp_path: Path) -> None:
    before = heap(BASE)
    after = heap(
        BASE,
        (["runtime.malg", "runtime.newproc1", "runtime.systemstack"], 5_000_000),
        (["main.spawn", "main.handle"], 200_000),
    )
    record = RunRecord(trials=(_trial(tmp_path, 0, {"heap-warmup": before, "heap-drain": after}),))
    sites = leaksites.find(record, tmp_path)
    assert [s.function for s in sites.heap] == ["main.spawn", "runtime.malg"]
    assert "goroutines leaking?" in sites.heap[1].description


def test_noise_below_the_minimum_is_not_a_site(tmp_path: Path) -> None:
    before = heap(BASE, (["main.a"], 10_000))
    after = heap(BASE, (["main.a"], 10_000 + leaksites.MIN_HEAP_BYTES - 1))
    record = RunRecord(trials=(_trial(tmp_path, 0, {"heap-warmup": before, "heap-drain": after}),))
    assert leaksites.find(record, tmp_path).heap == ()


def goroutines(*samples: tuple[list[str], int]) -> bytes:
    return profile_bytes([(stack, [n]) for stack, n in samples], sample_types=GOROUTINE)


IDLE = (["runtime.gopark", "runtime.netpollblock", "internal/poll.runtime_pollWait"], 3)
BLOCKED = ["runtime.gopark", "runtime.chansend", "runtime.chansend1", "main.notify.func1"]
POOL = ["runtime.gopark", "runtime.selectgo", "net/http.(*persistConn).readLoop"]


def test_goroutines_are_grouped_with_what_they_are_blocked_in(tmp_path: Path) -> None:
    before = goroutines(IDLE, (BLOCKED, 1))
    after = goroutines(IDLE, (BLOCKED, 1205), (POOL, 40))
    record = RunRecord(
        trials=(_trial(tmp_path, 0, {"goroutine-warmup": before, "goroutine-drain": after}),)
    )
    sites = leaksites.find(record, tmp_path).goroutines
    assert sites[0].description == (
        "1,204 goroutines blocked in chan send at main.notify.func1 (main.go:10)"
    )
    assert sites[0].state == "chan send" and sites[0].stack[0].startswith("runtime.gopark")
    assert sites[1].function == "net/http.(*persistConn).readLoop"
    assert sites[1].state == "select" and "bodies not closed" in sites[1].description


def test_the_runtimes_goroutineleak_profile_ranks_first(tmp_path: Path) -> None:
    before = goroutines(IDLE)
    after = goroutines(IDLE, (BLOCKED, 5), (POOL, 400))
    leak = goroutines((BLOCKED, 5))
    record = RunRecord(
        trials=(
            _trial(
                tmp_path,
                0,
                {"goroutine-warmup": before, "goroutine-drain": after, "goroutineleak-drain": leak},
            ),
        )
    )
    sites = leaksites.find(record, tmp_path).goroutines
    assert sites[0].function == "main.notify.func1" and sites[0].leaked
    assert "goroutineleak profile confirms" in sites[0].description


def test_an_unreadable_profile_is_a_note_not_a_crash(tmp_path: Path) -> None:
    record = RunRecord(
        trials=(
            _trial(tmp_path, 0, {"heap-warmup": b"<html>502</html>", "heap-drain": heap(BASE)}),
        )
    )
    sites = leaksites.find(record, tmp_path)
    assert sites.heap == ()
    assert len(sites.notes) == 1 and "got HTML" in sites.notes[0]
    assert "trial 1: heap profile not used" in sites.notes[0]


def test_trials_without_profiles_give_no_sites(tmp_path: Path) -> None:
    record = RunRecord(trials=(Trial(index=0),))
    assert leaksites.find(record, tmp_path) == LeakSites()


WAITGROUP = [
    "runtime.gopark",
    "runtime.goparkunlock",
    "runtime.semacquire1",
    "sync.runtime_SemacquireWaitGroup",
    "sync.(*WaitGroup).Wait",
    "main.fanOut",
]
MUTEX = [
    "runtime.gopark",
    "runtime.semacquire1",
    "internal/sync.runtime_SemacquireMutex",
    "internal/sync.(*Mutex).lockSlow",
    "sync.(*Mutex).Lock",
    "main.(*cache).get",
]


def test_a_sync_wait_is_named_by_the_primitive_not_by_semacquire(tmp_path: Path) -> None:
    before = goroutines(IDLE)
    after = goroutines(IDLE, (WAITGROUP, 30), (MUTEX, 20))
    record = RunRecord(
        trials=(_trial(tmp_path, 0, {"goroutine-warmup": before, "goroutine-drain": after}),)
    )
    states = {s.function: s.state for s in leaksites.find(record, tmp_path).goroutines}
    assert states == {"main.fanOut": "sync.WaitGroup.Wait", "main.(*cache).get": "sync.Mutex.Lock"}


def test_a_sample_without_a_stack_is_skipped(tmp_path: Path) -> None:
    before = heap(BASE)
    after = heap(BASE, ([], 900_000), (["main.a"], 900_000))
    record = RunRecord(trials=(_trial(tmp_path, 0, {"heap-warmup": before, "heap-drain": after}),))
    sites = leaksites.find(record, tmp_path)
    assert [s.function for s in sites.heap] == ["main.a"] and sites.notes == ()


def test_a_module_without_a_dot_is_the_services_own_code(tmp_path: Path) -> None:
    import dataclasses

    from leakgate.model import Environment

    stack = ["runtime.mapassign", "orders/internal/store.(*Store).Add", "main.handle"]
    before, after = heap(BASE), heap(BASE, (stack, 2_000_000))
    trial = _trial(tmp_path, 0, {"heap-warmup": before, "heap-drain": after})
    record = RunRecord(trials=(trial,))
    assert leaksites.find(record, tmp_path).heap[0].function == "main.handle"
    record = dataclasses.replace(record, environment=Environment(go_module="orders"))
    top = leaksites.find(record, tmp_path).heap[0]
    assert top.function == "orders/internal/store.(*Store).Add" and top.caller == "main.handle"


def test_a_failure_finding_sites_is_a_note_not_a_lost_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(record: RunRecord, report_dir: Path, side: str = "candidate") -> LeakSites:
        raise ValueError("odd profile")

    monkeypatch.setattr(leaksites, "find", broken)
    sites = leaksites.find_or_note(RunRecord(), tmp_path)
    assert (sites.heap, sites.goroutines) == ((), ())
    assert sites.notes == ("leak sites could not be computed: ValueError: odd profile",)


@pytest.mark.parametrize(("source", "said"), [("pprof+expvar", True), ("agent", False)])
def test_without_the_agent_the_report_says_why_no_holder_is_named(
    tmp_path: Path, source: str, said: bool
) -> None:
    grown = {"heap-warmup": heap(BASE), "heap-drain": heap(BASE, (["main.audit"], 3_000_000))}
    sites = leaksites.find(RunRecord(trials=(_trial(tmp_path, 0, grown, source=source),)), tmp_path)
    assert sites.heap[0].function == "main.audit" and sites.holders == ()
    notes = [n for n in sites.notes if n.startswith("no heap dumps: ")]
    assert bool(notes) == said
    if said:
        assert "read through pprof+expvar, not leakgate's agent (attached" in notes[0]
    # no growth, no note: a passing attached run has no "where it leaks" to explain
    flat = {"heap-warmup": heap(BASE), "heap-drain": heap(BASE)}
    quiet = leaksites.find(RunRecord(trials=(_trial(tmp_path, 1, flat, source=source),)), tmp_path)
    assert quiet.notes == ()
