"""The drain checkpoint after a signal cut the measure window short: taken only if it is quick.

A service that stops answering must not hold up the exit (probe timeouts are far longer), so
the checkpoint is taken in a thread, into a scratch directory outside the report directory,
and only moved into the trial's directory when it finished within DRAIN_SECONDS.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from leakgate.errors import LeakgateError
from leakgate.measure import ServiceDied, rel
from leakgate.model import Checkpoint
from leakgate.procs import build_dir_prefix, helper_thread

DRAIN_SECONDS = 2.5
QUIET_SECONDS = 1.0
# A checkpoint of the running trial: (name, quiet timeout, directory, notes) -> Checkpoint.
Take = Callable[[str, float, Path, list[str]], Checkpoint]


def drain_in_time(
    take: Take, trial_dir: Path, report_dir: Path
) -> tuple[Checkpoint, list[str]] | str:
    """The drain checkpoint and its notes, if taken within DRAIN_SECONDS; else why
    there is none.

    It is taken in a thread with its own notes and its own directory (outside the report
    directory): only when it finished within the bound are its profiles moved into trial_dir.
    A thread that is late writes nothing the reports see, and removes its directory when it
    ends (a run killed first leaves it to the next run's cleanup: it is named like a build
    directory)."""
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f"{build_dir_prefix()}drain-"))
    except OSError as e:
        return f"no scratch directory: {e}"
    drain = _DrainThread(take, scratch)
    if not drain.done_within(DRAIN_SECONDS):
        return f"not done within {DRAIN_SECONDS:g}s; skipped"
    try:
        if drain.checkpoint is None:
            return drain.problem if drain.problem is not None else "no reason given"
        return _moved_in(drain.checkpoint, scratch, trial_dir, report_dir), drain.notes
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _DrainThread:
    """`take` of the drain checkpoint into `scratch`, in a daemon thread: a service that stops
    answering cannot hold the exit up (probe timeouts are far longer), and nothing is forked
    after an interrupt, so it may outlive the wait. Given up on (done_within False), the
    thread removes `scratch` itself when it ends; else `scratch` is the caller's."""

    def __init__(self, take: Take, scratch: Path) -> None:
        self.scratch = scratch
        self.checkpoint: Checkpoint | None = None
        self.problem: str | None = None
        self.notes: list[str] = []
        self._lock = threading.Lock()
        self._finished = False  # under _lock
        self._late = False  # the wait gave up on it (under _lock)
        self._thread = helper_thread(self._run, args=(take,), name="leakgate-drain")
        self._thread.start()

    def _run(self, take: Take) -> None:
        try:
            self.checkpoint = take("drain", QUIET_SECONDS, self.scratch, self.notes)
        except (ServiceDied, LeakgateError, OSError) as e:
            self.problem = str(e)
        finally:
            with self._lock:
                self._finished = True
                late = self._late
            if late:
                shutil.rmtree(self.scratch, ignore_errors=True)

    def done_within(self, seconds: float) -> bool:
        self._thread.join(seconds)
        with self._lock:
            self._late = not self._finished
            return self._finished


def _moved_in(cp: Checkpoint, scratch: Path, trial_dir: Path, report_dir: Path) -> Checkpoint:
    """`cp` with the profiles it saved under `scratch` moved into trial_dir (and its paths
    following them); a profile that cannot be moved is left out."""

    def move(value: str | None) -> str | None:
        if value is None:
            return None
        src = Path(value)
        if not src.is_absolute():
            src = report_dir / src
        if src.parent.resolve() != scratch.resolve():
            return value  # not one of the scratch directory's
        dest = trial_dir / src.name
        try:
            trial_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dest)
        except OSError:
            return None
        return rel(dest, report_dir)

    return dataclasses.replace(
        cp,
        heap_profile=move(cp.heap_profile),
        goroutine_profile=move(cp.goroutine_profile),
        goroutine_text=move(cp.goroutine_text),
        goroutineleak_profile=move(cp.goroutineleak_profile),
        heap_dump=move(cp.heap_dump),
        symbols=move(cp.symbols),
    )
