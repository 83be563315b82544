"""Differential flame graphs of a cost profile, as inline SVG: no script, no fonts, no URLs.

The stacks are merged into one tree, root at the bottom and callees above, children in name
order as flame graphs do. A frame is as wide as the larger of its two sides, so code that shrank
or went away keeps its room; its colour says which way it moved: red grew, blue shrank, warm
grey stayed within 2%, deeper for a larger relative change. A profile without a baseline gets
the classic warm palette instead: with nothing to compare, every frame would read "grew".
"""

from __future__ import annotations

import heapq
import html
import itertools
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from leakgate.model import CostProfile, FlameStack
from leakgate.report.table import clean
from leakgate.units import format_change, format_per_request

MAX_DEPTH = 64  # levels drawn, the root included; deeper frames are charged to their ancestor
MAX_RECTS = 3000
MIN_WIDTH = 0.001  # of the root's width: narrower frames leave blank room in their parent
UNCHANGED_WITHIN = 0.02  # of a frame's value: a smaller change is drawn as no change

# Light to deep, by the relative change |c - b| / max(c, b): from 2%, 10%, 25% and 50% (2x).
GREW = ("#fbd4c4", "#f6a283", "#e8664a", "#c62a1c")
SHRANK = ("#d3e3f4", "#9cc3e6", "#5796d0", "#2360a5")
UNCHANGED = "#ddd5c6"
_LEVELS = (0.10, 0.25, 0.50)
_TEXT, _TEXT_ON_DEEP = "#1f2328", "#ffffff"

WIDTH = 1120  # the HTML report's column, so the graph is drawn at 1:1 there
_PAD = 10
_FRAME = 16  # row height; rects are one pixel shorter, leaving a gap between rows
_FONT = 11
_CHAR = 0.6 * _FONT  # a generous average glyph width: a label never overflows its frame
_TITLE_ROW = 24
_LEGEND_ROW = 26


@dataclass(slots=True)
class Frame:
    """One node of the merged tree: the totals per request of every stack through it."""

    name: str
    candidate: float = 0.0
    baseline: float = 0.0
    self_candidate: float = 0.0  # of stacks that end here
    self_baseline: float = 0.0
    width: float = 0.0  # max of the self values, plus the children's widths: see _widen
    children: dict[str, Frame] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Box:
    """A frame placed in the graph: x and width in the profile's unit, depth 0 the root."""

    frame: Frame
    depth: int
    x: float
    width: float


def merge(stacks: Iterable[FlameStack]) -> Frame:
    """The stacks as one tree under a root named "all". Negative and non-finite values (a
    damaged profile) count as 0; frames past MAX_DEPTH are charged to the deepest one kept."""
    root = Frame("all")
    for stack in stacks:
        candidate, baseline = _value(stack.candidate), _value(stack.baseline)
        if not (candidate or baseline):
            continue
        node = root
        _add(node, candidate, baseline)
        for name in stack.frames[: MAX_DEPTH - 1]:
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = Frame(name)
            node = child
            _add(node, candidate, baseline)
        node.self_candidate += candidate
        node.self_baseline += baseline
    _widen(root)
    return root


def layout(root: Frame) -> list[Box]:
    """The frames to draw, by depth then x: at most MAX_RECTS, none narrower than MIN_WIDTH of
    the root. Taken widest first, so a frame is only ever drawn with all its ancestors (a child
    is never wider than its parent)."""
    if root.width <= 0:
        return []
    narrowest = root.width * MIN_WIDTH
    order = itertools.count()  # ties by push order: no Frame is ever compared
    queue: list[tuple[float, int, int, float, Frame]] = [(-root.width, 0, next(order), 0.0, root)]
    boxes: list[Box] = []
    while queue and len(boxes) < MAX_RECTS:
        width, depth, _, x, frame = heapq.heappop(queue)
        boxes.append(Box(frame, depth, x, -width))
        left = x
        for name in sorted(frame.children):
            child = frame.children[name]
            if child.width >= narrowest:
                heapq.heappush(queue, (-child.width, depth + 1, next(order), left, child))
            left += child.width
    return sorted(boxes, key=lambda b: (b.depth, b.x))


def has_baseline(profile: CostProfile) -> bool:
    """Whether the profile compares two sides: a plain check profiles the candidate alone."""
    return profile.compared or any(_value(s.baseline) for s in profile.flame)


def colour(frame: Frame, *, compared: bool) -> str:
    """A frame's fill: by its change where there is a baseline, else by its name."""
    if not compared:
        return _warm(frame.name)
    top = max(frame.candidate, frame.baseline)
    change = frame.candidate - frame.baseline
    if top <= 0 or abs(change) < UNCHANGED_WITHIN * top:
        return UNCHANGED
    level = sum(abs(change) / top >= t for t in _LEVELS)
    return (GREW if change > 0 else SHRANK)[level]


def svg(profile: CostProfile, *, title: str = "") -> str | None:
    """The profile's flame graph as an inline SVG, with a legend under it; None when there is
    nothing to draw (no stacks, or every value 0)."""
    root = merge(profile.flame)
    boxes = layout(root)
    if not boxes:
        return None
    compared = has_baseline(profile)
    levels = max(b.depth for b in boxes) + 1
    top = _TITLE_ROW if title else _PAD
    height = top + levels * _FRAME + _LEGEND_ROW
    scale = (WIDTH - 2 * _PAD) / root.width
    label = esc(title or "flame graph")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="leakgate-flame" role="img" '
        f'aria-label="{label}" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-size="{_FONT}" '
        "font-family=\"system-ui, -apple-system, 'Segoe UI', sans-serif\">",
        "<style>.leakgate-flame g.f:hover rect { stroke: #1f2328; stroke-width: 1; }</style>",
    ]
    if title:
        parts.append(f'<text x="{_PAD}" y="16" font-size="13" font-weight="600">{label}</text>')
    parts.append(f'<g fill="{_TEXT}">')
    for box in boxes:
        y = top + (levels - 1 - box.depth) * _FRAME
        parts.append(_rect(box, _PAD + box.x * scale, y, box.width * scale, profile, compared))
    parts.append("</g>")
    parts.append(_legend(height - _LEGEND_ROW + 17, compared, _frames(root) - len(boxes)))
    parts.append("</svg>")
    return "\n".join(parts)


def esc(text: str) -> str:
    return html.escape(clean(text))


# -- drawing -----------------------------------------------------------------------------------


def _rect(box: Box, x: float, y: float, w: float, profile: CostProfile, compared: bool) -> str:
    fill = colour(box.frame, compared=compared)
    drawn = max(w - 1.0, w * 0.5)  # a hairline between neighbours of one colour
    rect = (
        f'<rect x="{x:.1f}" y="{y}" width="{drawn:.1f}" height="{_FRAME - 1}" rx="2" '
        f'fill="{fill}"/>'
    )
    text = _label(box.frame.name, drawn)
    if text:
        deep = fill in (GREW[-1], SHRANK[-1])
        ink = f' fill="{_TEXT_ON_DEEP}"' if deep else ""
        rect += f'<text x="{x + 3:.1f}" y="{y + 11.5}"{ink}>{esc(text)}</text>'
    tip = _tooltip(box.frame, "all stacks" if box.depth == 0 else box.frame.name, profile, compared)
    return f'<g class="f"><title>{esc(tip)}</title>{rect}</g>'


def _label(name: str, width: float) -> str:
    """The name as far as it fits: whole, then without its import path, then cut with "…"
    (but not to fewer than four letters, which name nothing)."""
    fits = int((width - 6) / _CHAR)
    if len(name) <= fits:
        return name
    short = _without_import_path(name)
    if len(short) <= fits:
        return short
    return short[: fits - 1] + "…" if fits >= 5 else ""


def _without_import_path(name: str) -> str:
    """ "github.com/acme/orders/store.(*DB).Query" -> "store.(*DB).Query"."""
    ends = [i for i in (name.find("("), name.find("[")) if i >= 0]
    path = name[: min(ends)] if ends else name
    return name[path.rfind("/") + 1 :]


def _tooltip(frame: Frame, name: str, profile: CostProfile, compared: bool) -> str:
    unit = profile.unit

    def amount(value: float) -> str:
        return format_per_request(value, unit)

    if not compared:
        return f"{name}\n{amount(frame.candidate)} per request"
    change = frame.candidate - frame.baseline
    percent = format_change(frame.candidate, frame.baseline)
    return (
        f"{name}\ncandidate: {amount(frame.candidate)} per request\n"
        f"baseline: {amount(frame.baseline)} per request\n"
        f"change: {format_per_request(change, unit, signed=True)}"
        + (f" ({percent})" if percent else "")
    )


def _warm(name: str) -> str:
    """The classic flame graph palette, reds to yellows, fixed per function name."""
    h = zlib.crc32(name.encode("utf-8", "replace"))
    red, green, blue = 225 + h % 31, 110 + (h >> 8) % 111, 30 + (h >> 16) % 51
    return f"#{red:02x}{green:02x}{blue:02x}"


def _legend(y: float, compared: bool, hidden: int) -> str:
    parts = [f'<g font-size="11" fill="{_TEXT}">']
    x = float(_PAD)
    if compared:
        for fill, text in ((GREW[-1], "grew"), (SHRANK[-1], "shrank"), (UNCHANGED, "within 2%")):
            parts.append(f'<rect x="{x:.0f}" y="{y - 9}" width="12" height="10" fill="{fill}"/>')
            parts.append(f'<text x="{x + 16:.0f}" y="{y}">{text}</text>')
            x += 22 + len(text) * _CHAR
        words = "width: cost per request, the larger of candidate and baseline"
    else:
        words = "width: cost per request (no baseline: colours only tell functions apart)"
    if hidden > 0:
        words += f"; {hidden:,} smaller frames not drawn"
    parts.append(f'<text x="{x:.0f}" y="{y}">{words}</text></g>')
    return "".join(parts)


# -- the tree ----------------------------------------------------------------------------------


def _value(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


def _add(frame: Frame, candidate: float, baseline: float) -> None:
    frame.candidate += candidate
    frame.baseline += baseline


def _widen(frame: Frame) -> float:
    """Each frame's width: the larger side of what it spends itself, plus its children's
    widths. That is max(candidate, baseline) of the subtree when everything moved one way, a
    little more when one child grew and another shrank; either way the children fit."""
    frame.width = max(frame.self_candidate, frame.self_baseline) + sum(
        _widen(child) for child in frame.children.values()
    )
    return frame.width


def _frames(frame: Frame) -> int:
    return 1 + sum(_frames(child) for child in frame.children.values())
