"""Who keeps each of the sample's leaks alive, as the heap dumps must name it first
(retention.py): the kind and name of the holder, and words its description must say. One table
for the integration tests and bench/holders.py.

The package variable, or the goroutines whose stacks hold the buffers; armed timers are held by
the Ps' timer heaps (runtime.allp); LEAK=context's nearest root is main.run's frame, which holds
the app whose context collects the uncancelled children (its words name the context).
"""

from __future__ import annotations

LEAK_HOLDERS: dict[str, tuple[str, str, str]] = {
    "globalmap": ("variable", "main.auditLog", "Nothing removes what is added"),
    "goroutine": (
        "goroutines",
        "main.leakBlockedGoroutine",
        "blocked in chan send: goroutines that never return",
    ),
    "keyedcache": ("variable", "main.responseCache", "Nothing removes what is added"),
    "unclosed": ("goroutines", "net/http.(*persistConn).readLoop", "goroutines that never return"),
    "subslice": (
        "variable",
        "main.orderIndex",
        "kept whole through a 16 B slice of each: a small sub-slice keeps its whole backing",
    ),
    "queue": (
        "variable",
        "main.outbox",
        "slice backing array reaches most of it: a slice that is only appended to",
    ),
    "timer": ("variable", "runtime.allp", "Timers armed and never stopped"),
    "context": (
        "goroutines",
        "main.run",
        "made by context.With… in main.leakContext: a context derived from a long-lived",
    ),
}
