"""Errors that stop the gate from judging at all; each carries its exit code.

A regression or a leak is never an exception: it is a failing Check in the Verdict.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_INTERRUPTED = 2
EXIT_INTERNAL = 3
EXIT_USAGE = 4
EXIT_ENVIRONMENT = 5


class LeakgateError(Exception):
    exit_code = EXIT_INTERNAL
    kind = "internal error"

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UsageError(LeakgateError):
    exit_code = EXIT_USAGE
    kind = "usage error"


class ConfigError(UsageError):
    kind = "configuration error"


class EnvironmentProblem(LeakgateError):
    """The machine or the service under test stopped the run: not a verdict on the code."""

    exit_code = EXIT_ENVIRONMENT
    kind = "environment error"


class BuildError(EnvironmentProblem):
    kind = "build failed"


class ServiceStartError(EnvironmentProblem):
    kind = "service did not start"


class LoadError(EnvironmentProblem):
    kind = "load failed"


class Interrupted(LeakgateError):
    exit_code = EXIT_INTERRUPTED
    kind = "interrupted"
