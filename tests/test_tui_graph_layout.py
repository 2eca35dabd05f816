"""The graph layout alone (runner.graph, no Textual): layers, order, coordinates, lines."""
from __future__ import annotations

import random
import time

from flowtui.runner.graph import dependency_layers, layout, shorten


def random_dag(count: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    names = [f"task_{i:03d}_{'x' * rng.randint(0, 30)}" for i in range(count)]
    return {n: rng.sample(names[:i], min(i, rng.randint(0, 3))) for i, n in enumerate(names)}


def test_layers_are_longest_paths_from_the_roots() -> None:
    deps = {"a": [], "b": ["a"], "c": ["b"], "d": ["a", "c"], "lone": []}
    assert dependency_layers(deps) == {"a": 0, "b": 1, "c": 2, "d": 3, "lone": 0}


def test_no_two_nodes_overlap_and_every_edge_goes_down_a_layer() -> None:
    for seed in range(5):
        deps = random_dag(100, seed)
        graph = layout(deps)
        assert sorted(graph.rows) == sorted(deps)
        cells = set()
        for node in graph.nodes.values():
            span = {(node.row, x) for x in range(node.x, node.x + node.width)}
            assert not span & cells, node
            cells |= span
            # A node's cells carry no line: nothing is drawn through a label.
            assert graph.lines[node.row][node.x:node.x + node.width].strip() == ""
        for task_id, ups in deps.items():
            for up in ups:
                assert graph.nodes[up].layer < graph.nodes[task_id].layer
                assert graph.nodes[up].x < graph.nodes[task_id].x
        assert len({n.row for n in graph.nodes.values()}) == len(deps)


def test_100_tasks_lay_out_in_under_50_ms() -> None:
    deps = random_dag(100, 7)
    layout(deps)  # warm up imports
    best = min(_timed(lambda: layout(deps)) for _ in range(5))
    assert best < 0.05, f"{best * 1000:.1f} ms"


def _timed(call) -> float:
    """The CPU time ``call`` takes on this thread: the layout's own cost, whatever else the
    machine is busy with meanwhile."""
    start = time.thread_time()
    call()
    return time.thread_time() - start


def test_parallel_chains_nest_without_crossing() -> None:
    graph = layout({"s1": [], "s2": [], "s3": [], "t1": ["s1"], "t2": ["s2"], "t3": ["s3"]})
    drawing = "\n".join(graph.lines)
    assert "┼" not in drawing
    # Each target sits in the row order of its source (barycentre ordering).
    assert [graph.nodes[t].row for t in ("t1", "t2", "t3")] == [3, 4, 5]


# Where a line goes next from a cell, by the cell's character and the side it came in from;
# lines run right along rows and down along tracks, and a bare ─ on a track is a crossing.
NEXT = {("─", "W"): "E", ("─", "N"): "S", ("┐", "W"): "S", ("┬", "W"): "ES", ("┼", "W"): "ES",
        ("┤", "W"): "S", ("│", "N"): "S", ("├", "N"): "SE", ("└", "N"): "E", ("┼", "N"): "SE",
        ("┴", "N"): "E", ("┴", "W"): "E", ("┤", "N"): "S"}


def reached(graph, source: str) -> set[str]:
    """The tasks a reader reaches following the lines out of ``source``."""
    starts = {(n.row, n.x): t for t, n in graph.nodes.items()}
    node = graph.nodes[source]
    todo, seen, found = [(node.row, node.x + node.width + 1, "W")], set(), set()
    while todo:
        row, x, came = todo.pop()
        if (row, x, came) in seen or row >= len(graph.lines) or x >= graph.width:
            continue
        seen.add((row, x, came))
        char = graph.lines[row][x]
        if char == " ":
            if came == "W" and (row, x + 1) in starts:
                found.add(starts[(row, x + 1)])
            continue
        for way in NEXT.get((char, came), ""):
            todo.append((row + 1, x, "N") if way == "S" else (row, x + 1, "W"))
    return found


def test_following_the_lines_finds_exactly_the_downstream_tasks() -> None:
    chains = {"extract": [], **{f"clean_{c}": ["extract"] for c in "abc"},
              **{f"{c}_2": [f"clean_{c}"] for c in "abc"},
              "merge": ["a_2", "b_2", "c_2"], "late": ["extract", "merge"]}
    mixed = {"a": [], "b": [], "c": [], "x": ["a", "c"], "y": ["b"], "z": ["a", "b"]}
    for deps in (chains, mixed):
        graph = layout(deps)
        for task_id in deps:
            assert reached(graph, task_id) == set(graph.downstream[task_id]), task_id
    for seed in range(5):  # any DAG: every edge is drawn as a line a reader can follow
        graph = layout(random_dag(60, seed))
        for task_id, downs in graph.downstream.items():
            assert reached(graph, task_id) >= set(downs), task_id


def test_long_ids_are_shortened_with_an_ellipsis() -> None:
    assert shorten("abcdef", 4) == "abc…"
    graph = layout({"x" * 60: []}, max_label=24)
    assert graph.nodes["x" * 60].label == "x" * 23 + "…"


def test_unknown_deps_are_ignored_and_an_empty_dag_lays_out() -> None:
    graph = layout({"a": ["ghost"], "b": ["a"]})
    assert graph.upstream == {"a": [], "b": ["a"]}
    assert layout({}).rows == []
