"""Text renderings of a DAG: its layers with dependencies, a layered drawing with lines for
the TUI, and its next fire times."""
from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from flowtui.runner.model import DagSpec


def draw_layers(dag: DagSpec) -> str:
    """One line per layer (roots first); each task shows the tasks it waits for."""
    layer = dag.layers()
    depth = max(layer.values(), default=0)
    lines = []
    for n in range(depth + 1):
        names = [t for t in dag.topological_order() if layer[t] == n]
        parts = []
        for task_id in names:
            deps = dag.tasks[task_id].deps
            rule = dag.tasks[task_id].trigger_rule
            tag = f" [{rule}]" if rule != "all_success" else ""
            parts.append(f"{task_id}{tag}" + (f" <- {', '.join(deps)}" if deps else ""))
        lines.append(f"  {n + 1:>2}. " + "\n      ".join(parts))
    return "\n".join(lines)


def next_fire_times(dag: DagSpec, now: float, count: int) -> list[str]:
    """The next ``count`` times a scheduled run is created, in the DAG's timezone and UTC,
    with a note on wall times that DST skips or repeats."""
    from flowtui.runner.schedule import fire_times, fire_times_local

    if not dag.schedule:
        return []
    tz = ZoneInfo(dag.timezone)
    out = []
    after = now
    if dag.start_date is not None and dag.start_date > now:
        # The first run is created when the first interval (from start_date) ends; a schedule
        # with no fire left before the end of the calendar (year 9999) has none.
        first = next(fire_times(dag.schedule, dag.timezone, dag.start_date - 1e-6), None)
        if first is None:
            return []
        after = first
    for instant, note in fire_times_local(dag.schedule, dag.timezone, after, count):
        local = dt.datetime.fromtimestamp(instant, tz)
        utc = dt.datetime.fromtimestamp(instant, dt.timezone.utc)
        line = f"{local.isoformat()}  ({utc.strftime('%Y-%m-%d %H:%M')} UTC)"
        out.append(line + (f"  ! {note}" if note else ""))
    return out


# -- the layered drawing the TUI paints ------------------------------------------------------
# Orientation: layers left to right, one task per row. A task id is a word of text, so a node
# costs one terminal row in this orientation and ~15 columns in a top-down one: 100 tasks scroll
# as a list does, wide layers cost rows (cheap) instead of columns (scarce at 80), and every row
# holds exactly one node, so lines never have to share a row with another node's line.

NORTH, SOUTH, EAST, WEST = 1, 2, 4, 8
_BOX = {NORTH | SOUTH: "│", EAST | WEST: "─", EAST: "─", WEST: "─", NORTH: "│", SOUTH: "│",
        SOUTH | EAST: "┌", SOUTH | WEST: "┐", NORTH | EAST: "└", NORTH | WEST: "┘",
        NORTH | SOUTH | EAST: "├", NORTH | SOUTH | WEST: "┤", SOUTH | EAST | WEST: "┬",
        NORTH | EAST | WEST: "┴", NORTH | SOUTH | EAST | WEST: "┼"}
# Where a line crosses another without joining it, the horizontal one is drawn whole and the
# vertical one stops short on both sides: a junction (┼ ┬ ├ ...) always means a real edge.
CROSSING = "─"
NODE_PREFIX = 3  # critical-path mark, state glyph, space


@dataclass(frozen=True, slots=True)
class Node:
    task_id: str
    layer: int
    row: int
    x: int
    label: str  # the id, shortened with … when long

    @property
    def width(self) -> int:
        return NODE_PREFIX + len(self.label)


@dataclass(slots=True)
class GraphLayout:
    nodes: dict[str, Node]
    rows: list[str]  # the task on each row, top to bottom
    lines: list[str]  # the edges of each row; node cells are blank, the painter fills them
    width: int
    upstream: dict[str, list[str]]
    downstream: dict[str, list[str]]


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:max(1, limit - 1)] + "…"


def dependency_layers(deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each task's layer: the longest path from a root (0 for roots). Deps on unknown tasks are
    ignored; tasks on a cycle (a DAG never has one) go one layer below everything else."""
    upstream = {t: [d for d in dict.fromkeys(ds) if d in deps and d != t] for t, ds in deps.items()}
    downstream: dict[str, list[str]] = {t: [] for t in deps}
    for task_id, ups in upstream.items():
        for up in ups:
            downstream[up].append(task_id)
    waiting = {t: len(ups) for t, ups in upstream.items()}
    ready = deque(t for t, n in waiting.items() if n == 0)
    layer: dict[str, int] = {}
    while ready:
        task_id = ready.popleft()
        layer[task_id] = 1 + max((layer[u] for u in upstream[task_id]), default=-1)
        for child in downstream[task_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    bottom = max(layer.values(), default=-1) + 1
    for task_id in deps:
        layer.setdefault(task_id, bottom)
    return layer


def order_layers(layer: Mapping[str, int], upstream: Mapping[str, Sequence[str]],
                 downstream: Mapping[str, Sequence[str]], sweeps: int = 2) -> list[list[str]]:
    """Tasks of each layer in drawing order: sweeps down (by the mean position of each task's
    upstreams) and up (of its downstreams), ending with a down sweep, so a task sits near what
    it waits for and lines cross little. Ties keep definition order."""
    layers: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for task_id in layer:  # definition order
        layers[layer[task_id]].append(task_id)
    position = {t: i / max(1, len(ts)) for ts in layers for i, t in enumerate(ts)}

    def sweep(indexes: Iterable[int], neighbours: Mapping[str, Sequence[str]]) -> None:
        for n in indexes:
            def key(task_id: str) -> float:
                near = [position[t] for t in neighbours[task_id] if t in position]
                return sum(near) / len(near) if near else position[task_id]
            layers[n].sort(key=key)
            for i, task_id in enumerate(layers[n]):
                position[task_id] = i / max(1, len(layers[n]))

    for _ in range(sweeps):
        sweep(range(1, len(layers)), upstream)
        sweep(range(len(layers) - 2, -1, -1), downstream)
    sweep(range(1, len(layers)), upstream)
    return layers


def layout(deps: Mapping[str, Sequence[str]], max_label: int = 24) -> GraphLayout:
    """Layers (longest path), order (barycentres), coordinates and edge lines of a DAG given as
    task -> upstream tasks (definition order kept for ties)."""
    layer = dependency_layers(deps)
    upstream = {t: [d for d in dict.fromkeys(ds) if d in layer and d != t] for t, ds in deps.items()}
    downstream: dict[str, list[str]] = {t: [] for t in deps}
    for task_id, ups in upstream.items():
        for up in ups:
            downstream[up].append(task_id)
    layers = order_layers(layer, upstream, downstream)
    rows = [t for ts in layers for t in ts]
    row_of = {t: i for i, t in enumerate(rows)}
    labels = {t: shorten(t, max_label) for t in rows}
    # Per channel (the gap after layer n): sources with the same targets in layer n + 1 share
    # one vertical track, so a fan-in or a fan-out is one line with a junction per task.
    groups: list[list[tuple[list[str], list[str]]]] = []
    for n in range(len(layers) - 1):
        by_targets: dict[tuple[str, ...], list[str]] = {}
        for source in rows:
            targets = tuple(t for t in downstream[source] if layer[t] == n + 1)
            if targets and layer[source] <= n:
                by_targets.setdefault(tuple(sorted(targets, key=row_of.get)), []).append(source)
        # The group whose first source is lowest goes leftmost: nested lines, few crossings.
        channel = sorted(((srcs, list(tgts)) for tgts, srcs in by_targets.items()),
                         key=lambda g: -row_of[g[0][0]])
        groups.append(channel)
    x_of_layer, x = [], 0
    for n, tasks in enumerate(layers):
        x_of_layer.append(x)
        x += max(NODE_PREFIX + len(labels[t]) for t in tasks)
        if n < len(groups):
            x += 2 * len(groups[n]) + 3
    width = x
    nodes = {t: Node(t, layer[t], row_of[t], x_of_layer[layer[t]], labels[t]) for t in rows}
    lines = _route(nodes, rows, groups, x_of_layer, layers, width)
    return GraphLayout(nodes, rows, lines, width, upstream, downstream)


def _route(nodes: dict[str, Node], rows: list[str], groups: list, x_of_layer: list[int],
           layers: list[list[str]], width: int) -> list[str]:
    horizontal = [bytearray(width) for _ in rows]
    vertical = [bytearray(width) for _ in rows]
    joins: set[tuple[int, int]] = set()

    def hline(row: int, x0: int, x1: int) -> None:
        cells = horizontal[row]
        for x in range(x0, x1 + 1):
            cells[x] |= (WEST if x > x0 else 0) | (EAST if x < x1 else 0) or EAST

    bus_end: dict[str, int] = {}
    inputs: dict[str, list[int]] = {}
    for n, channel in enumerate(groups):
        start = x_of_layer[n] + max(nodes[t].width for t in layers[n])
        for index, (sources, targets) in enumerate(channel):
            track = start + 2 + 2 * index
            top = min(nodes[s].row for s in sources)
            bottom = max(nodes[t].row for t in targets)
            for row in range(top, bottom + 1):
                vertical[row][track] |= (NORTH if row > top else 0) | (SOUTH if row < bottom else 0)
            for source in sources:
                bus_end[source] = max(bus_end.get(source, 0), track)
                joins.add((nodes[source].row, track))
            for target in targets:
                inputs.setdefault(target, []).append(track)
                joins.add((nodes[target].row, track))
    for source, end in bus_end.items():
        node = nodes[source]
        hline(node.row, node.x + node.width + 1, end)
    for target, tracks in inputs.items():
        node = nodes[target]
        hline(node.row, min(tracks), node.x - 2)
    lines = []
    for row in range(len(rows)):
        chars = []
        for x in range(width):
            h, v = horizontal[row][x], vertical[row][x]
            if h and v:
                chars.append(_BOX[h | v] if (row, x) in joins else CROSSING)
            else:
                chars.append(_BOX[h | v] if h | v else " ")
        lines.append("".join(chars))
    return lines
