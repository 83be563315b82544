from __future__ import annotations

import dataclasses
import itertools
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from leakgate.model import CostProfile, CostSite, CostSites, FlameStack, RunRecord, Verdict
from leakgate.report import Judged, flame, html
from leakgate.units import format_change, format_per_request

from .factories import fixed_cost_verdict
from .gate import screenshot

SVG = "{http://www.w3.org/2000/svg}"


def profile(*stacks: FlameStack, unit: str = "s/request", **fields: object) -> CostProfile:
    return dataclasses.replace(CostProfile("cpu", unit, flame=stacks), **fields)


def stack(frames: str, candidate: float, baseline: float = 0.0) -> FlameStack:
    return FlameStack(tuple(frames.split(";")), candidate, baseline)


def frames(svg: str) -> dict[str, ET.Element]:
    """Each drawn frame's <g> by the function name that opens its tooltip."""
    root = ET.fromstring(svg)
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "f"]
    return {(g.findtext(f"{SVG}title") or "").split("\n")[0]: g for g in groups}


def fill(group: ET.Element) -> str:
    rect = group.find(f"{SVG}rect")
    assert rect is not None
    return rect.get("fill", "")


def test_stacks_merge_into_one_tree_under_all() -> None:
    root = flame.merge(
        [
            stack("main.main;main.serve;main.handle", 3.0, 1.0),
            stack("main.main;main.serve", 1.0, 1.0),
            stack("main.main;main.serve;main.handle", 2.0, 0.0),
            stack("runtime.gcBgMarkWorker", 0.0, 4.0),
        ]
    )
    assert root.name == "all" and sorted(root.children) == ["main.main", "runtime.gcBgMarkWorker"]
    assert (root.candidate, root.baseline) == (6.0, 6.0)
    serve = root.children["main.main"].children["main.serve"]
    assert (serve.candidate, serve.baseline) == (6.0, 2.0)
    assert (serve.self_candidate, serve.self_baseline) == (1.0, 1.0)
    handle = serve.children["main.handle"]
    assert (handle.candidate, handle.baseline) == (5.0, 1.0)
    # a vanished function keeps its room: its baseline
    assert root.children["runtime.gcBgMarkWorker"].width == 4.0
    assert root.width == 6.0 + 4.0  # one child grew, the other shrank: both fit


def test_children_fit_inside_their_parent() -> None:
    rng = random.Random(3)
    names = [f"pkg.f{i}" for i in range(8)]
    stacks = [
        FlameStack(tuple(rng.choices(names, k=rng.randint(1, 7))), rng.random(), rng.random())
        for _ in range(400)
    ]
    boxes = flame.layout(flame.merge(stacks))
    by_frame = {id(b.frame): b for b in boxes}
    for box in boxes:
        children = [by_frame[id(c)] for c in box.frame.children.values() if id(c) in by_frame]
        assert sum(c.width for c in children) <= box.width * (1 + 1e-9)
        for child in children:
            assert child.depth == box.depth + 1
            assert box.x - 1e-9 <= child.x and child.x + child.width <= box.x + box.width + 1e-9
        assert box.width >= max(box.frame.candidate, box.frame.baseline) * (1 - 1e-9)
    # and the same in pixels: no drawn rect overhangs the one under it
    svg = flame.svg(profile(*stacks))
    assert svg is not None
    rects = [
        (float(r.get("x", 0)), float(r.get("width", 0)), float(r.get("y", 0)))
        for g in frames(svg).values()
        if (r := g.find(f"{SVG}rect")) is not None
    ]
    for x, w, y in rects:
        below = [(bx, bw) for bx, bw, by in rects if by == y + flame._FRAME]
        assert not below or any(bx - 0.1 <= x and x + w <= bx + bw + 1.1 for bx, bw in below)


def test_colour_says_which_way_a_frame_moved() -> None:
    svg = flame.svg(
        profile(
            stack("main.serve;main.grew", 3.0, 1.0),
            stack("main.serve;main.shrank", 1.0, 3.0),
            stack("main.serve;main.same", 2.0, 2.02),
            stack("main.serve;main.gone", 0.0, 2.0),
            stack("main.serve;main.slightly", 1.1, 1.0),
        )
    )
    assert svg is not None
    drawn = frames(svg)
    assert fill(drawn["main.grew"]) == flame.GREW[-1]
    assert fill(drawn["main.shrank"]) == flame.SHRANK[-1]
    assert fill(drawn["main.gone"]) == flame.SHRANK[-1]
    assert fill(drawn["main.same"]) == flame.UNCHANGED
    assert fill(drawn["main.slightly"]) == flame.GREW[0]  # +10% of 1.1: the lightest red
    grew = drawn["main.grew"].findtext(f"{SVG}title") or ""
    assert grew.split("\n")[1:] == [
        "candidate: 3.00 s per request",
        "baseline: 1.00 s per request",
        "change: +2.00 s (+200.0%)",
    ]


def test_a_profile_without_a_baseline_gets_the_warm_palette() -> None:
    alone = profile(
        stack("main.serve;main.handle", 14.2e-6),
        stack("main.serve;encoding/json.Marshal", 3e-6),
        stack("runtime.gcBgMarkWorker", 2e-6),
        sites=(CostSite("main.handle", "/src/main.go", 9, 14.2e-6),),
    )
    svg = flame.svg(alone)
    assert svg is not None
    drawn = frames(svg)
    fills = {fill(g) for g in drawn.values()}
    assert len(fills) >= 3  # by name: neighbours are told apart
    assert not fills & {*flame.GREW, *flame.SHRANK, flame.UNCHANGED}
    for colour in fills:
        red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert red > green > blue, colour  # reds to yellows
    assert svg == flame.svg(alone)  # the same name, the same colour
    tip = drawn["main.handle"].findtext(f"{SVG}title")
    assert tip == "main.handle\n14.2 µs per request"
    assert "grew" not in svg and "no baseline" in svg
    # a site with a baseline makes it a comparison again
    compared = dataclasses.replace(alone, sites=(CostSite("main.handle", "", 0, 1.0, 1.0),))
    assert flame.has_baseline(compared) and not flame.has_baseline(alone)


def test_names_from_the_profile_are_escaped() -> None:
    hostile = '<script>alert("x")</script>&\x1b[31m'
    svg = flame.svg(profile(stack(f"main.serve;{hostile}", 1.0, 0.5)), title="<b>&")
    assert svg is not None
    assert "<script" not in svg and "<b>" not in svg and "\x1b" not in svg
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in svg
    ET.fromstring(svg)  # well-formed: nothing leaked out of an attribute or a text node
    assert not re.search(r"""(src|href)\s*=""", svg)


def test_labels_fit_their_frame_or_are_cut() -> None:
    long = "github.com/acme/orders/internal/store.(*DB).QueryContextWithRetries"
    svg = flame.svg(profile(stack(f"main.serve;{long}", 1.0), stack("main.serve;main.big", 9.0)))
    assert svg is not None
    for group in frames(svg).values():
        rect, text = group.find(f"{SVG}rect"), group.find(f"{SVG}text")
        if text is None:
            continue
        assert rect is not None and text.text
        assert len(text.text) * flame._CHAR <= float(rect.get("width", 0))
    label = frames(svg)[long].findtext(f"{SVG}text") or ""
    assert label.startswith("store.(*DB)") and label.endswith("…")


def test_output_is_bounded() -> None:
    # 500 handlers of 0.2% each, 20 frames deep: 10,500 frames wide enough to draw, and 10,000
    # leaves of 0.01%, too narrow
    stacks = [
        FlameStack((f"main.h{i % 500}", *(f"pkg.f{j}" for j in range(20)), f"leaf{i}"), 1.0, 0.5)
        for i in range(10_000)
    ]
    svg = flame.svg(profile(*stacks))
    assert svg is not None
    assert svg.count("<rect") == flame.MAX_RECTS + 3  # and the legend's three swatches
    assert "17,501 smaller frames not drawn" in svg
    assert len(svg) < 2_000_000
    boxes = flame.layout(flame.merge(stacks))
    assert all(b.width >= boxes[0].width * flame.MIN_WIDTH for b in boxes)
    assert not any(b.frame.name.startswith("leaf") for b in boxes)
    deep = flame.merge([FlameStack(tuple(f"main.recurse{i}" for i in range(200)), 1.0)])
    assert max(b.depth for b in flame.layout(deep)) == flame.MAX_DEPTH - 1


def test_nothing_to_draw_is_none() -> None:
    assert flame.svg(profile()) is None
    assert flame.svg(profile(stack("main.a", 0.0, 0.0))) is None
    assert flame.svg(profile(stack("main.a", float("nan"), -1.0))) is None


def test_output_does_not_depend_on_the_order_of_the_stacks() -> None:
    stacks = [stack(f"main.serve;main.f{i}", i + 1.0, 2.0) for i in range(20)]
    forward = flame.svg(profile(*stacks))
    assert forward is not None and forward == flame.svg(profile(*reversed(stacks)))
    labels = re.findall(r">(main\.f\d+)</text>", forward)
    assert labels == sorted(labels)  # children in name order, as flame graphs draw them


def test_figures_per_request() -> None:
    assert format_per_request(14.2e-6, "s/request") == "14.2 µs"
    assert format_per_request(-3.5e-6, "s/request", signed=True) == "-3.50 µs"
    assert format_per_request(4e-7, "s/request", signed=True) == "+400 ns"
    assert format_per_request(2.5e-3, "s/request") == "2.5 ms"
    assert format_per_request(1536.0, "B/request", signed=True) == "+1.5 KiB"
    assert format_change(2.0, 1.0) == "+100.0%"
    assert format_change(2.0, 0.0) == "new"
    assert format_change(2.0, None) == ""


# -- the HTML report's section -----------------------------------------------------------------


def test_the_report_shows_where_the_cost_goes() -> None:
    page = html.render(Judged(fixed_cost_verdict(), RunRecord()))
    section = page[page.index("<h2>Where the cost goes</h2>") : page.index("<h2>Run</h2>")]
    assert page.index("no leak sites") < page.index("Where the cost goes")
    assert "<h3>CPU per request</h3>" in section and "<h3>Allocations per request</h3>" in section
    for text in (
        "<th>baseline/request</th><th>candidate/request</th><th>change</th>",
        "<code>main.(*auditLog).record</code>",
        'title="/src/orders-service/audit.go">audit.go:42</code>',
        "11.0\u00a0µs",
        "+9.50\u00a0µs",
        "+633.3%",
        "<strong>total</strong>",
        "<th>objects</th>",
        "<th>bytes/object</th>",
        '<td class="num">64\u00a0B</td>',  # 2 KiB in 32 objects
        '<figure id="flame-cpu"><svg',
        '<figure id="flame-alloc"><svg',
        "<figcaption",
        "<pre>go tool pprof -diff_base baseline-cpu.pb.gz candidate-cpu.pb.gz</pre>",
        "trial 3: the CPU profile was unreadable",
    ):
        assert text in section, text
    assert "<script" not in page


def test_a_candidate_only_profile_has_no_baseline_columns() -> None:
    costs = CostSites(
        profiles=(
            profile(
                stack("main.serve;main.<b>&", 2e-6),
                sites=(CostSite("main.<b>&", "/src/x.go", 3, 2e-6),),
                candidate_total=2e-6,
            ),
        )
    )
    page = html.render(Judged(Verdict("pass", costs=costs), RunRecord()))
    section = page[page.index("Where the cost goes") :]
    assert "baseline" not in section.split("<figure")[0]
    assert "<th>candidate/request</th>" in section and "change" not in section.split("<svg")[0]
    assert "main.&lt;b&gt;&amp;" in section and "<b>" not in section


def test_no_costs_no_section() -> None:
    page = html.render(Judged(Verdict("pass"), RunRecord()))
    assert "Where the cost goes" not in page and "leakgate-flame" not in page
    notes_only = Verdict("pass", costs=CostSites(notes=("no CPU profile: the agent is too old",)))
    page = html.render(Judged(notes_only, RunRecord()))
    assert "Where the cost goes" in page and "the agent is too old" in page


@pytest.mark.slow
def test_chromium_paints_the_flame_graphs(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(html.render(Judged(fixed_cost_verdict(), RunRecord())), encoding="utf-8")
    image = screenshot(chromium, page, 1280, 2400)
    assert image.shape[:2] == (2400, 1280)

    def painted(hex_colour: str) -> np.ndarray:
        rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        return np.abs(image - rgb).max(axis=2) < 0.03

    red, blue = painted(flame.GREW[-1]), painted(flame.SHRANK[-1])
    # far more than the legend's two 12x10 swatches: the grown and the shrunk stacks
    assert red.sum() > 3000, red.sum()
    assert blue.sum() > 3000, blue.sum()
    # the CPU graph's deep red rows: the first run of rows with a wide stretch of red
    rows = [int(r) for r in np.nonzero(red.sum(axis=1) > 50)[0]]
    end = next((a for a, b in itertools.pairwise(rows) if b - a > 3), rows[-1])
    graph, graph_red = image[rows[0] : end + 1], red[rows[0] : end + 1]
    assert (graph.max(axis=2) < 0.35).sum() > 100, "no dark labels on the light frames"
    white = 0
    for pixels, row_red in zip(graph, graph_red, strict=True):
        columns = np.nonzero(row_red)[0]
        if len(columns):
            inside = pixels[columns[0] : columns[-1] + 1]
            white += int((inside.min(axis=1) > 0.85).sum())
    assert white > 100, "no white labels on the deep red frames"
