"""A DAG's graph and grid driven headless (Pilot) on a real store: every task reachable by keys,
fan-in and fan-out drawn, the cursor kept on its task and run, failed cells one key away."""
from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from app_support import run_async, until
from conftest import write
from helpers import run_dag

from flowtui.app.app import make_app
from flowtui.app.dag_screen import DagScreen
from flowtui.app.graph_view import GraphView
from flowtui.runner.config import load_config

LONG = "report_for_the_finance_team_with_a_very_long_identifier"


def forty_tasks() -> str:
    """extract fans out to three chains of ten; merge fans them in; five reports after it."""
    lines = ["dag_id: big", "tasks:", "  extract: {command: 'true'}"]
    for chain in "abc":
        lines.append(f"  clean_{chain}: {{command: 'true', deps: [extract]}}")
        previous = f"clean_{chain}"
        for step in range(1, 11):
            name = f"{chain}_step_{step:02d}"
            command = "exit 1" if name == "b_step_05" else "true"
            lines.append(f"  {name}: {{command: '{command}', deps: [{previous}]}}")
            previous = name
    lines.append("  merge: {command: 'true', trigger_rule: all_done, "
                 "deps: [a_step_10, b_step_10, c_step_10]}")
    for n in range(1, 5):
        lines.append(f"  report_{n}: {{command: 'true', deps: [merge]}}")
    lines.append(f"  {LONG}: {{command: 'true', deps: [merge]}}")
    return "\n".join(lines) + "\n"


TINY = """
dag_id: tiny
tasks:
  first: {command: 'true'}
  second: {command: 'exit 1', deps: [first]}
  third: {command: 'true', deps: [first]}
  fourth: {command: 'exit 1', deps: [first]}
"""


def day(hour: int, minute: int = 0) -> float:
    return dt.datetime(2026, 12, 1, hour, minute, tzinfo=dt.timezone.utc).timestamp()


@pytest.fixture
def big(home: Path, pipelines: Path) -> tuple[Path, Path]:
    write(pipelines, "big.yaml", forty_tasks())
    run_dag(home, pipelines, "big")
    return home, pipelines


@pytest.fixture
def tiny(home: Path, pipelines: Path) -> tuple[Path, Path]:
    write(pipelines, "tiny.yaml", TINY)
    run_dag(home, pipelines, "tiny", logical_date=day(8))
    run_dag(home, pipelines, "tiny", logical_date=day(14, 5))
    return home, pipelines


def app_for(world: tuple[Path, Path]):
    home, pipelines = world
    return make_app(load_config(home, pipelines), refresh_seconds=0.2)


async def open_dag(app, pilot, dag_id: str, graph: bool) -> DagScreen:
    app.push_screen(DagScreen(dag_id))
    await until(pilot, lambda: isinstance(app.screen, DagScreen) and
                app.screen.grid_data is not None and app.screen.grid_data.runs, what="the grid")
    if graph:
        await pilot.press("g")
        await until(pilot, lambda: app.screen.query_one(GraphView).graph is not None,
                    what="the graph")
    return app.screen


def in_view(view: GraphView, task_id: str) -> bool:
    node = view.graph.nodes[task_id]
    region = view.scrollable_content_region
    x, y = int(view.scroll_x), int(view.scroll_y)
    return (y <= node.row < y + region.height and x <= node.x and
            node.x + node.width <= x + region.width)


# -- the graph -------------------------------------------------------------------------------
@pytest.mark.long(11)
def test_every_task_of_a_40_task_dag_is_reached_by_keys_and_scrolled_into_view(big) -> None:
    async def go() -> None:
        app = app_for(big)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_dag(app, pilot, "big", graph=True)
            view = screen.query_one(GraphView)
            assert view.has_focus
            assert len(view.graph.rows) == 40
            # It opens on what failed.
            assert view.selected == "b_step_05"
            await pilot.press("home")
            assert view.selected == view.graph.rows[0] == "extract"
            seen = [view.selected]
            for _ in range(45):
                await pilot.press("j" if len(seen) % 2 else "down")
                if view.selected != seen[-1]:
                    seen.append(view.selected)
                    await pilot.pause()
                    assert in_view(view, view.selected), view.selected
            assert sorted(seen) == sorted(view.graph.rows) and len(seen) == 40
            assert seen[-1] == view.graph.rows[-1]
            await pilot.press("k", "up")
            assert view.selected == view.graph.rows[-3]
            await pilot.press("home")
            await pilot.press("pagedown")
            assert view.graph.nodes[view.selected].row >= 15
            await pilot.press("end")
            await pilot.pause()
            assert view.selected == view.graph.rows[-1] and in_view(view, view.selected)
            # Right and h/left follow the lines: merge's downstream, then back up.
            view.select("merge")
            await pilot.press("right")
            assert view.selected in view.graph.downstream["merge"]
            await pilot.press("h")
            assert view.selected == "merge"
            await pilot.press("left")
            assert view.selected in ("a_step_10", "b_step_10", "c_step_10")

    run_async(go())


def test_fan_out_and_fan_in_are_drawn_as_branches_of_one_line(big) -> None:
    async def go() -> None:
        app = app_for(big)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_dag(app, pilot, "big", graph=True)
            view = screen.query_one(GraphView)
            rows = view.plain().split("\n")
            graph = view.graph

            def track_of(task_id: str) -> int:
                node = graph.nodes[task_id]
                line = rows[node.row]
                return max(line.index(c, node.x + node.width) for c in "┐┬┤┼"
                           if c in line[node.x + node.width:])

            # extract -> clean_a, clean_b, clean_c: one line down, a junction per branch.
            track = track_of("extract")
            assert rows[graph.nodes["extract"].row][track] == "┐"
            branches = sorted(graph.nodes[f"clean_{c}"].row for c in "abc")
            assert [rows[r][track] for r in branches] == ["├", "├", "└"]
            assert all(rows[r][track + 1] == "─" for r in branches)
            # a/b/c_step_10 -> merge: three lines join on one track.
            sources = sorted(graph.nodes[f"{c}_step_10"].row for c in "abc")
            track = track_of(f"{graph.rows[sources[0]]}")
            assert [rows[r][track] for r in sources] == ["┐", "┤", "┤"]
            assert rows[graph.nodes["merge"].row][track] == "└"
            # merge -> five reports: five branches; the long id is shortened with …
            track = track_of("merge")
            reports = sorted(graph.nodes[t].row for t in graph.downstream["merge"])
            assert len(reports) == 5
            assert [rows[r][track] for r in reports] == ["├"] * 4 + ["└"]
            assert LONG not in view.plain() and LONG[:20] in view.plain()
            assert "…" in rows[graph.nodes[LONG].row]
            # Live state glyphs and the critical path mark.
            assert "✗ b_step_05" in view.plain() and "⇡ b_step_06" in view.plain()
            assert "*✓ extract" in view.plain()

    run_async(go())


def test_enter_and_l_act_on_the_selected_graph_node(big) -> None:
    async def go() -> None:
        from flowtui.app.log_screen import LogScreen
        from flowtui.app.task_screen import TaskScreen

        app = app_for(big)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_dag(app, pilot, "big", graph=True)
            view = screen.query_one(GraphView)
            view.select(LONG)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, TaskScreen), what="task detail")
            assert app.screen.ref.task_id == LONG
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is screen, what="back")
            assert view.selected == LONG and screen.current_task().task_id == LONG
            await pilot.press("home", "j")
            chosen = view.selected
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, LogScreen), what="the log")
            assert app.screen.ref.task_id == chosen

    run_async(go())


# -- the grid --------------------------------------------------------------------------------
def cursor(screen: DagScreen) -> tuple[str | None, str | None]:
    return screen._grid_cursor(screen.query_one("#grid"))


def test_grid_headers_of_runs_on_one_day_differ(tiny) -> None:
    async def go() -> None:
        app = app_for(tiny)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_dag(app, pilot, "tiny", graph=False)
            labels = [str(c.label) for c in screen.query_one("#grid").ordered_columns][1:]
            assert labels == ["12-01 08:00", "12-01 14:05"]

    run_async(go())


def test_grid_moves_with_j_k_home_end_and_jumps_to_failed_cells(tiny) -> None:
    async def go() -> None:
        app = app_for(tiny)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_dag(app, pilot, "tiny", graph=False)
            runs = [str(r.pk) for r in screen.grid_data.runs]
            assert cursor(screen) == ("first", runs[1])  # the newest run
            await pilot.press("j")
            assert cursor(screen)[0] == "second"
            await pilot.press("j", "k")
            assert cursor(screen)[0] == "second"
            await pilot.press("end")
            assert cursor(screen) == ("fourth", runs[1])
            await pilot.press("home")
            assert cursor(screen) == ("first", runs[1])
            # f: run by run from the cursor, top to bottom, wrapping; F goes back.
            await pilot.press("f")
            assert cursor(screen) == ("second", runs[1])
            await pilot.press("f")
            assert cursor(screen) == ("fourth", runs[1])
            await pilot.press("f")
            assert cursor(screen) == ("second", runs[0])
            await pilot.press("F")
            assert cursor(screen) == ("fourth", runs[1])

    run_async(go())


def test_grid_cursor_stays_on_its_task_and_run_across_d_a_new_run_and_task_detail(tiny) -> None:
    home, pipelines = tiny

    async def go() -> None:
        app = app_for(tiny)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_dag(app, pilot, "tiny", graph=False)
            runs = [str(r.pk) for r in screen.grid_data.runs]
            await pilot.press("j", "j", "left")
            assert cursor(screen) == ("third", runs[0])
            await pilot.press("d")
            await until(pilot, lambda: screen._grid_shape[-1], what="durations shown")
            assert cursor(screen) == ("third", runs[0])
            await asyncio.to_thread(run_dag, home, pipelines, "tiny", logical_date=day(20))
            await until(pilot, lambda: len(screen.grid_data.runs) == 3, what="the new run")
            assert cursor(screen) == ("third", runs[0])
            await pilot.press("enter")
            await until(pilot, lambda: app.screen is not screen, what="task detail")
            assert app.screen.ref.task_id == "third"
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is screen, what="back to the grid")
            await pilot.pause(0.5)  # a refresh or two after coming back
            assert cursor(screen) == ("third", runs[0])

    run_async(go())
