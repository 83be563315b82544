"""Cost sites from hand-made profiles: CPU and allocations per request, base against candidate,
charged to the service's own code."""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Sequence
from pathlib import Path

import pytest

from leakgate import costsites, leaksites
from leakgate.model import (
    Checkpoint,
    CostSites,
    Counters,
    Environment,
    RunRecord,
    ServiceStatus,
    Trial,
    WindowCost,
)

from . import factories
from .factories import profile_bytes, profile_message

US = 1e-6
HEAP_TYPES = ("alloc_objects", "alloc_space", "inuse_objects", "inuse_space")
Stacks = Sequence[tuple[Sequence[str], int]]

SHA = [
    "crypto/sha256.block",
    "crypto/sha256.(*digest).Write",
    "main.priceWork",
    "main.handle",
    "net/http.HandlerFunc.ServeHTTP",
]
HANDLE = ["main.handle", "net/http.HandlerFunc.ServeHTTP"]
RENDER = ["runtime.mallocgc", "encoding/json.Marshal", "main.render", "main.handle"]


def cpu(stacks: Stacks, *, line: int = 10, duration_s: float = 0.0) -> bytes:
    """A Go CPU profile: (function names leaf first, CPU nanoseconds)."""
    p = profile_message(
        [(names, [ns // 10_000_000, ns]) for names, ns in stacks], ("samples", "cpu"), line=line
    )
    p.string_table.append("nanoseconds")
    p.sample_type[1].unit = len(p.string_table) - 1
    p.duration_nanos = int(duration_s * 1e9)
    return gzip.compress(p.SerializeToString(), mtime=0)


def heap(*samples: tuple[Sequence[str], int, int, int]) -> bytes:
    """A heap profile: (names, alloc_space bytes, alloc_objects, inuse_space bytes)."""
    return profile_bytes(
        [
            (names, [objects, space, max(1, inuse // 64), inuse])
            for names, space, objects, inuse in samples
        ],
        HEAP_TYPES,
    )


def _write(tmp: Path, rel: str, data: bytes) -> str:
    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp / rel).write_bytes(data)
    return rel


def _trial(
    tmp: Path,
    index: int,
    side: str = "candidate",
    *,
    cpu_profile: bytes | None = None,
    cpu_seconds: float | None = None,
    heap_warmup: bytes | None = None,
    heap_drain: bytes | None = None,
    requests: int = 100_000,
) -> Trial:
    """A trial whose profiles are the given bytes, under trial-<index+1>/, and whose CPU counter
    moved by `cpu_seconds` over the window (no counter when None)."""
    folder = f"trial-{index + 1}"
    heap_paths = {
        label: _write(tmp, f"{folder}/heap-{label}.pb.gz", data) if data is not None else None
        for label, data in (("warmup", heap_warmup), ("drain", heap_drain))
    }
    base = factories.trial(index=index, requests=requests)
    return dataclasses.replace(
        base,
        side=side,
        checkpoints={
            label: dataclasses.replace(checkpoint, heap_profile=heap_paths[label])
            for label, checkpoint in base.checkpoints.items()
        },
        cpu_profile=(
            _write(tmp, f"{folder}/cpu.pb.gz", cpu_profile) if cpu_profile is not None else None
        ),
        cost=(
            WindowCost(Counters(cpu_seconds=50.0), Counters(cpu_seconds=50.0 + cpu_seconds))
            if cpu_seconds is not None
            else None
        ),
    )


def test_a_cpu_regression_in_one_function_comes_first_with_its_cost_per_request(
    tmp_path: Path,
) -> None:
    # Baseline: 100 and 120 µs/request by the counter, the profile 40% priceWork, 40% handle,
    # 20% render. Candidate: 150 µs/request; its profile has half the samples of the time the
    # counter saw (7.5 s of 15 s), so the share counts, not the nanoseconds: priceWork 60%.
    shape = cpu([(SHA, 4_000_000_000), (HANDLE, 4_000_000_000), (RENDER, 2_000_000_000)])
    record = RunRecord(
        trials=(
            _trial(tmp_path, 0, "baseline", cpu_profile=shape, cpu_seconds=10.0),
            _trial(tmp_path, 1, "baseline", cpu_profile=shape, cpu_seconds=12.0),
            _trial(
                tmp_path,
                2,
                cpu_profile=cpu(
                    [(SHA, 4_500_000_000), (HANDLE, 2_000_000_000), (RENDER, 1_000_000_000)]
                ),
                cpu_seconds=15.0,
            ),
        )
    )
    profile = costsites.find(record, tmp_path).get("cpu")
    assert profile is not None and profile.unit == "s/request"
    got = {s.function: (s.baseline, s.candidate) for s in profile.sites}
    # baseline: mean(0.4 × 100, 0.4 × 120) = 44 µs; candidate: 0.6 × 150 = 90 µs
    assert got["main.priceWork"] == (pytest.approx(44 * US), pytest.approx(90 * US))
    assert got["main.handle"] == (pytest.approx(44 * US), pytest.approx(40 * US))
    assert got["main.render"] == (pytest.approx(22 * US), pytest.approx(20 * US))
    assert [s.function for s in profile.sites] == ["main.priceWork", "main.render", "main.handle"]
    assert profile.sites[0].change == pytest.approx(46 * US)
    assert (profile.sites[0].file, profile.sites[0].line) == ("/src/main.go", 10)
    assert profile.sites[0].candidate_objects is None
    assert profile.candidate_total == pytest.approx(150 * US)
    assert profile.baseline_total == pytest.approx(110 * US)
    flame = {s.frames: (s.baseline, s.candidate) for s in profile.flame}
    assert flame[tuple(reversed(SHA))] == (pytest.approx(44 * US), pytest.approx(90 * US))
    assert len(flame) == 3
    assert profile.commands == ("go tool pprof -diff_base trial-1/cpu.pb.gz trial-3/cpu.pb.gz",)


def test_time_in_the_standard_library_is_charged_to_the_services_own_caller(
    tmp_path: Path,
) -> None:
    stacks = [
        (["crypto/sha256.block", "crypto/sha256.Sum256", "main.priceWork"], 3_000_000_000),
        (["runtime.mallocgc", "orders/store.(*Store).Put", "main.handle"], 2_000_000_000),
        (["runtime.memmove", "main.leakgateAgentServe"], 1_000_000_000),
        (["runtime.gcBgMarkWorker"], 4_000_000_000),
    ]
    trial = _trial(tmp_path, 0, cpu_profile=cpu(stacks), cpu_seconds=10.0)
    record = RunRecord(environment=Environment(go_module="orders"), trials=(trial,))
    profile = costsites.find(record, tmp_path).get("cpu")
    assert profile is not None
    # 10 s over 100,000 requests: 100 µs/request, split like the profile.
    assert {s.function: s.candidate for s in profile.sites} == {
        "runtime.gcBgMarkWorker": pytest.approx(40 * US),  # no own frame: its leaf
        "main.priceWork": pytest.approx(30 * US),
        "orders/store.(*Store).Put": pytest.approx(20 * US),  # the module has no dot
        "runtime.memmove": pytest.approx(10 * US),  # the agent is not the service's code
    }


def test_an_allocation_regression_names_the_allocating_function_in_bytes_and_objects(
    tmp_path: Path,
) -> None:
    decode = ["runtime.mallocgc", "encoding/json.(*decodeState).object", "main.decode"]
    init = (["main.init"], 500_000, 1_000, 500_000)  # allocated before warm-up, kept since

    def trial(index: int, side: str, decoded: int, objects: int, requests: int) -> Trial:
        # Cumulative since start: 64 kB and 1,000 objects of main.decode before the warm-up
        # checkpoint, 100 B/request of main.handle in the window on both sides.
        before = heap(init, (decode, 64_000, 1_000, 0), (["main.handle"], 10_000, 100, 0))
        after = heap(
            init,
            (decode, 64_000 + decoded, 1_000 + objects, 0),
            (["main.handle"], 10_000 + 100 * requests, 100 + requests, 0),
        )
        return _trial(
            tmp_path, index, side, heap_warmup=before, heap_drain=after, requests=requests
        )

    record = RunRecord(
        trials=(
            trial(0, "baseline", 6_400_000, 100_000, 100_000),
            trial(1, "candidate", 25_600_000, 400_000, 100_000),
            trial(2, "candidate", 51_200_000, 400_000, 300_000),
        )
    )
    sites = costsites.find(record, tmp_path)
    assert sites.get("heap") is None  # nothing was kept
    alloc = sites.get("alloc")
    assert alloc is not None and alloc.unit == "B/request"
    top = alloc.sites[0]
    assert top.function == "main.decode" and top.file == "/src/main.go"
    # candidate: (25.6 MB + 51.2 MB) ÷ 400,000 requests = 192 B; (400k + 400k) ÷ 400k = 2 objects
    assert top.candidate == pytest.approx(192.0) and top.candidate_objects == pytest.approx(2.0)
    assert top.baseline == pytest.approx(64.0) and top.baseline_objects == pytest.approx(1.0)
    assert [s.function for s in alloc.sites] == ["main.decode", "main.handle"]  # not main.init
    assert alloc.sites[1].candidate == pytest.approx(100.0)
    assert alloc.candidate_total == pytest.approx(292.0)
    assert alloc.baseline_total == pytest.approx(164.0)
    assert alloc.commands == (
        "go tool pprof -sample_index=alloc_space -base trial-1/heap-warmup.pb.gz "
        "trial-1/heap-drain.pb.gz  # baseline, trial 1",
        "go tool pprof -sample_index=alloc_space -base trial-2/heap-warmup.pb.gz "
        "trial-2/heap-drain.pb.gz  # candidate, trial 2",
    )


def test_the_heap_kind_appears_only_above_the_noise_floor(tmp_path: Path) -> None:
    cache = ["runtime.mapassign", "main.(*cache).put"]
    before = heap((cache, 0, 0, 10_000))
    after = heap((cache, 0, 0, 10_000 + 40_000))

    def record(trials: int) -> RunRecord:
        return RunRecord(
            trials=tuple(
                _trial(tmp_path, i, heap_warmup=before, heap_drain=after) for i in range(trials)
            )
        )

    # 40 kB in one trial is under MIN_HEAP_BYTES; 80 kB over two trials of one side is over it.
    assert 40_000 < leaksites.MIN_HEAP_BYTES < 80_000
    assert costsites.find(record(1), tmp_path).get("heap") is None
    kinds = costsites.find(record(2), tmp_path)
    assert [p.kind for p in kinds.profiles] == ["alloc", "heap"]
    grown = kinds.get("heap")
    assert grown is not None and grown.unit == "B/request"
    assert grown.sites[0].function == "main.(*cache).put"
    assert grown.sites[0].candidate == pytest.approx(80_000 / 200_000)
    assert grown.sites[0].baseline is None and grown.sites[0].candidate_objects is None
    assert grown.commands[0].startswith("go tool pprof -sample_index=inuse_space -base trial-1/")


def test_a_candidate_only_record_estimates_cpu_from_the_profile_without_a_counter(
    tmp_path: Path,
) -> None:
    # No counter: 5 s of samples over a 10 s profile of the 20 s window, 100,000 requests:
    # 5e9 ns ÷ (100,000 × 0.5) = 100 µs/request.
    profile_data = cpu([(["main.a"], 3_000_000_000), (["main.b"], 2_000_000_000)], duration_s=10)
    trial = dataclasses.replace(
        _trial(tmp_path, 0), cpu_profile=_write(tmp_path, "trial 1/cpu.pb.gz", profile_data)
    )
    big = cpu([(["main.z"], 900_000_000_000)])
    died = dataclasses.replace(
        _trial(tmp_path, 1, cpu_profile=big, cpu_seconds=90.0), service=ServiceStatus(died=True)
    )
    idle = _trial(tmp_path, 2, cpu_profile=big, cpu_seconds=90.0, requests=0)
    sites = costsites.find(RunRecord(trials=(trial, died, idle)), tmp_path)
    profile = sites.get("cpu")
    assert profile is not None
    assert [(s.function, s.baseline) for s in profile.sites] == [("main.a", None), ("main.b", None)]
    assert profile.sites[0].candidate == pytest.approx(60 * US)
    assert profile.candidate_total == pytest.approx(100 * US) and profile.baseline_total is None
    assert {s.baseline for s in profile.flame} == {0.0}
    assert profile.commands == ("go tool pprof -top 'trial 1/cpu.pb.gz'",)
    assert len(sites.notes) == 1 and "trial 1 is estimated from the CPU profile" in sites.notes[0]


def test_a_missing_or_corrupt_profile_is_a_note_and_the_other_trials_still_count(
    tmp_path: Path,
) -> None:
    good = cpu([(["main.a"], 1_000_000_000)])
    gone = _trial(tmp_path, 0, cpu_profile=good, cpu_seconds=50.0)
    (tmp_path / "trial-1/cpu.pb.gz").unlink()
    broken = _trial(tmp_path, 1, cpu_profile=b"<html>502 Bad Gateway</html>", cpu_seconds=50.0)
    fine = _trial(
        tmp_path,
        2,
        cpu_profile=good,
        cpu_seconds=2.0,
        heap_warmup=heap((["main.a"], 0, 0, 0)),
        heap_drain=heap((["main.a"], 1_000_000, 10_000, 0)),
    )
    bad_heap = _trial(
        tmp_path,
        3,
        heap_warmup=heap((["main.a"], 0, 0, 0)),
        heap_drain=gzip.compress(b"\x12\x99\x99", mtime=0),
    )
    sites = costsites.find(RunRecord(trials=(gone, broken, fine, bad_heap)), tmp_path)
    assert len(sites.notes) == 3
    assert sites.notes[0].startswith("trial 1 (candidate): CPU profile trial-1/cpu.pb.gz not used")
    assert "cannot read" in sites.notes[0]
    assert sites.notes[1].startswith("trial 2 (candidate): CPU profile trial-2/cpu.pb.gz not used")
    assert "HTML" in sites.notes[1]
    assert sites.notes[2].startswith(
        "trial 4 (candidate): heap profile trial-4/heap-drain.pb.gz not used"
    )
    profile, alloc = sites.get("cpu"), sites.get("alloc")
    assert profile is not None and alloc is not None
    assert profile.candidate_total == pytest.approx(20 * US)  # trial 3 alone: 2 s ÷ 100,000
    assert alloc.candidate_total == pytest.approx(10.0)  # trial 3 alone: 1 MB ÷ 100,000
    assert profile.commands == ("go tool pprof -top trial-3/cpu.pb.gz",)
    # A kind no trial could be used for is left out.
    only_broken = costsites.find(RunRecord(trials=(broken,)), tmp_path)
    assert only_broken.profiles == () and len(only_broken.notes) == 1


def test_stacks_merge_across_builds_whose_line_numbers_differ(tmp_path: Path) -> None:
    record = RunRecord(
        trials=(
            _trial(tmp_path, 0, "baseline", cpu_profile=cpu([(SHA, 10)], line=10), cpu_seconds=1),
            _trial(tmp_path, 1, cpu_profile=cpu([(SHA, 10)], line=30), cpu_seconds=1.0),
            _trial(tmp_path, 2, cpu_profile=cpu([(SHA, 10)], line=20), cpu_seconds=3.0),
        )
    )
    profile = costsites.find(record, tmp_path).get("cpu")
    assert profile is not None
    assert len(profile.sites) == 1 and len(profile.flame) == 1
    site = profile.sites[0]
    assert site.function == "main.priceWork"
    assert site.baseline == pytest.approx(10 * US) and site.candidate == pytest.approx(20 * US)
    assert site.line == 20  # the candidate's line that carried the most CPU
    assert profile.flame[0].baseline > 0 and profile.flame[0].candidate > 0


def test_flame_stacks_and_sites_are_bounded(tmp_path: Path) -> None:
    count = costsites.MAX_FLAME_STACKS + 100
    stacks: list[tuple[Sequence[str], int]] = [
        ([f"main.f{i}"], (i + 1) * 1_000_000) for i in range(count)
    ]
    deep = [f"main.d{i}" for i in range(100)]  # leaf main.d0, root main.d99
    stacks.append((deep, 1_000_000))
    trial = _trial(tmp_path, 0, cpu_profile=cpu(stacks), cpu_seconds=1.0)
    sites = costsites.find(RunRecord(trials=(trial,)), tmp_path)
    profile = sites.get("cpu")
    assert profile is not None
    assert len(profile.flame) == costsites.MAX_FLAME_STACKS
    assert profile.flame[0].frames == (f"main.f{count - 1}",)  # the largest is kept
    kept = {s.frames[-1] for s in profile.flame}
    assert "main.f100" in kept and "main.f99" not in kept
    assert [s.function for s in profile.sites] == [f"main.f{count - 1 - i}" for i in range(10)]
    assert "101 smallest stacks left out" in " ".join(sites.notes)  # 100 f's and main.d0's
    assert f"{count + 1 - costsites.TOP} more functions left out" in " ".join(sites.notes)

    # The deep stack on its own: cut at the root, charged by its whole stack.
    trial = _trial(tmp_path, 1, cpu_profile=cpu([(deep, 1_000_000)]), cpu_seconds=1.0)
    profile = costsites.find(RunRecord(trials=(trial,)), tmp_path).get("cpu")
    assert profile is not None
    frames = profile.flame[0].frames
    assert len(frames) == costsites.MAX_DEPTH
    assert frames[0] == f"main.d{costsites.MAX_DEPTH - 1}" and frames[-1] == "main.d0"


def test_a_failure_finding_cost_sites_is_a_note_not_a_lost_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(record: RunRecord, report_dir: Path) -> CostSites:
        raise ValueError("odd profile")

    monkeypatch.setattr(costsites, "find", broken)
    sites = costsites.find_or_note(RunRecord(trials=(Trial(index=0),)), tmp_path)
    assert sites == CostSites(notes=("cost sites could not be computed: ValueError: odd profile",))


def test_trials_without_profiles_give_no_cost_profiles(tmp_path: Path) -> None:
    trial = dataclasses.replace(
        factories.trial(),
        checkpoints={"warmup": Checkpoint("warmup"), "drain": Checkpoint("drain")},
    )
    assert costsites.find(RunRecord(trials=(trial,)), tmp_path) == CostSites()
