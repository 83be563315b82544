"""What of a service's log goes into the reports when it dies."""

from __future__ import annotations

from leakgate.service import crash_excerpt

DUMP = [f"\t/usr/local/go/src/runtime/proc.go:{n} +0x1" for n in range(400)]


def test_a_go_crash_is_shown_from_its_reason_not_its_last_stack_frames() -> None:
    log = ["serving on 127.0.0.1:8080", "panic: assignment to entry in nil map", "", *DUMP]
    excerpt = crash_excerpt(log, 5).splitlines()
    assert excerpt[0] == "panic: assignment to entry in nil map" and len(excerpt) == 5


def test_an_out_of_memory_crash_keeps_both_reason_lines() -> None:
    log = [
        "ok",
        "runtime: out of memory: cannot allocate 4194304-byte block",
        "fatal error: out of memory",
        *DUMP,
    ]
    assert crash_excerpt(log, 3).splitlines()[:2] == log[1:3]


def test_without_a_crash_the_last_lines() -> None:
    log = [f"line {n}" for n in range(50)]
    assert crash_excerpt(log, 3) == "line 47\nline 48\nline 49"
