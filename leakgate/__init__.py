"""leakgate: a release gate that catches memory leaks and latency regressions in Go services."""

from __future__ import annotations

__version__ = "0.1.0"
