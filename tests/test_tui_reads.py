"""The TUI's reads: a database it cannot read is said on screen (last good data kept, retried on
the next poll), and the clear dialog's toggles re-plan from what was read, reading nothing."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from app_support import run_async, screen_text, until
from conftest import flowtui, write
from test_app import PIPE
from textual.message import Message
from textual.widgets import Static

from flowtui.app.app import make_app
from flowtui.app.base import FlowScreen
from flowtui.app.dag_screen import DagScreen
from flowtui.app.dialogs import ClearDialog, PlannedDialog
from flowtui.app.graph_view import GraphView
from flowtui.runner.config import load_config
from flowtui.store import Store

# Exclusive locking mode keeps even WAL readers out (a plain BEGIN EXCLUSIVE does not): the
# lock every reader of the home meets until this process lets go. Its busy timeout waits out
# the TUI's own short reads to take it.
HOLD_EXCLUSIVE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("PRAGMA locking_mode = EXCLUSIVE")
conn.execute("BEGIN EXCLUSIVE")
conn.execute("UPDATE dags SET paused = paused")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


class LockHolder:
    """Another process holding the database locked until ``release``."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD_EXCLUSIVE, str(db)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def locked(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        assert line.strip() == "locked", line

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def shop(home: Path, pipelines: Path) -> tuple[Path, Path]:
    """A run with a failed task, made by another process: this one holds no connection that
    would keep a lock holder out."""
    write(pipelines, "shop.yaml", PIPE)
    result = flowtui("run", "shop", home=home, pipelines=pipelines)
    assert result.returncode == 1, result.stderr
    return home, pipelines


def app_for(world: tuple[Path, Path]) -> Any:
    home, pipelines = world
    return make_app(load_config(home, pipelines), refresh_seconds=0.2)


def header(app: Any) -> str:
    return str(app.screen.query_one("#health", Static).render())


def test_a_locked_database_is_said_and_the_last_good_screen_stays(shop) -> None:
    home, _ = shop
    seen: list[Message] = []

    async def go() -> None:
        app = app_for(shop)
        async with app.run_test(size=(120, 30), message_hook=seen.append) as pilot:
            await until(pilot, lambda: "extract" in screen_text(app), what="the Now screen")
            await until(pilot, lambda: "alerts open: 0" in header(app), what="the header")
            holder = LockHolder(home / "flowtui.db")
            try:
                await holder.locked()
                await until(pilot, lambda: "database busy, retrying" in header(app),
                            what="the header to say the database is busy")
                # What was read last stays, and nothing claims a count it could not read.
                assert "extract" in screen_text(app)
                assert "alerts open" not in header(app)
                assert "shown as of" in header(app)
                # Polls keep failing while the lock holds: the header keeps saying so.
                failed = sum(1 for m in seen if type(m).__name__ == "ReadFailed")
                await until(pilot, lambda: sum(1 for m in seen if type(m).__name__ ==
                                               "ReadFailed") > failed + 1, what="retries")
                assert "database busy, retrying" in header(app)
            finally:
                holder.release()
            await until(pilot, lambda: "alerts open: 0" in header(app),
                        what="the header once the lock is gone")
            assert "busy" not in header(app)
            assert "extract" in screen_text(app)
        holder.kill()

    run_async(go())
    names = {type(m).__name__ for m in seen}
    assert {"DataLoaded", "StoreChecked", "ReadFailed", "DetailLoaded"} <= names, names


def test_a_locked_database_leaves_the_graph_drawn(shop) -> None:
    home, _ = shop

    async def go() -> None:
        app = app_for(shop)
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: "extract" in screen_text(app), what="the Now screen")
            screen = DagScreen("shop")
            app.push_screen(screen)
            await until(pilot, lambda: screen.grid_data is not None and screen.grid_data.runs,
                        what="the grid")
            await pilot.press("g")
            view = screen.query_one(GraphView)
            await until(pilot, lambda: view.display and view.graph is not None, what="the graph")
            holder = LockHolder(home / "flowtui.db")
            try:
                await holder.locked()
                await until(pilot, lambda: "database busy, retrying" in header(app),
                            what="the header to say the database is busy")
                screen.reload()  # a read asked for while the lock holds fails, and says so
                await pilot.pause(0.3)
                assert "database busy, retrying" in header(app)
                assert view.display and view.graph is not None
                assert set(view.graph.nodes) == {"extract", "load", "report"}
                assert view.states.get("extract") == "failed"
                await pilot.press("g", "g")  # grid and back: both drawn from the last read
                assert view.display and view.states.get("extract") == "failed"
            finally:
                holder.release()
            await until(pilot, lambda: "busy" not in header(app) and "runner" in header(app),
                        what="the header once the lock is gone")
        holder.kill()

    run_async(go())


WIDE_TASKS = 200


@pytest.fixture
def wide(home: Path, pipelines: Path) -> tuple[Path, Path]:
    lines = ["dag_id: wide", "tasks:", "  root: {command: 'true'}"]
    lines += [f"  t{n:03d}: {{command: 'true', deps: [root]}}" for n in range(1, WIDE_TASKS)]
    write(pipelines, "wide.yaml", "\n".join(lines) + "\n")
    result = flowtui("trigger", "wide", home=home, pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    return home, pipelines


def test_toggling_the_clear_dialog_reads_nothing(wide, monkeypatch: pytest.MonkeyPatch) -> None:
    home, pipelines = wide
    opened: list[bool] = []  # for each open: was it on the UI thread?
    real_open = Store.open.__func__  # type: ignore[attr-defined]

    def counting_open(cls: type[Store], path: Any, **options: Any) -> Store:
        opened.append(threading.current_thread() is threading.main_thread())
        return real_open(cls, path, **options)

    monkeypatch.setattr(Store, "open", classmethod(counting_open))

    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=3600)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = DagScreen("wide")
            app.push_screen(screen)
            await until(pilot, lambda: screen.grid_data is not None and screen.grid_data.runs,
                        what="the grid")
            # The app builds its other screens in the background after the first paint, each
            # reading the store once: let that finish, so what is counted below is the dialog's.
            await until(pilot, lambda: set(app.MODES) <= set(app._screen_stacks) and not any(
                getattr(s, "_in_flight", False) for stack in app._screen_stacks.values()
                for s in stack), what="the other screens built", timeout=20)
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, ClearDialog)
                        and app.screen.affected is not None, what="the plan")
            dialog: PlannedDialog = app.screen  # type: ignore[assignment]
            assert len(dialog.affected or []) == WIDE_TASKS  # root and everything downstream
            before, workers = len(opened), len(app.screen.workers)
            for key, count in (("d", 1), ("d", WIDE_TASKS), ("f", 0), ("f", WIDE_TASKS),
                               ("u", WIDE_TASKS)):
                await pilot.press(key)
                # Re-planned in the key's own handler: no worker, no read, no waiting.
                assert len(dialog.affected or []) == count, (key, dialog.affected)
                changes = str(dialog.query_one("#changes", Static).render())
                assert (f"These {count} task(s)" in changes if count else
                        "(no task matches)" in changes), changes
            assert len(opened) == before, "a toggle opened the store"
            assert len(app.screen.workers) == workers
            started = time.perf_counter()
            for _ in range(20):
                dialog.options["downstream"] = not dialog.options["downstream"]
                dialog._replan()
            each = (time.perf_counter() - started) / 20
            assert each < 0.05, f"a re-plan of {WIDE_TASKS} tasks took {each * 1000:.1f} ms"
            await pilot.press("escape")

    run_async(go())
    # The grid and the dialog read the store in worker threads, never on the UI thread.
    assert opened and not any(opened), opened


def test_messages_carry_the_reads(shop) -> None:
    seen: list[Message] = []

    async def go() -> None:
        app = app_for(shop)
        async with app.run_test(size=(120, 30), message_hook=seen.append) as pilot:
            await until(pilot, lambda: "extract" in screen_text(app), what="the Now screen")
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, ClearDialog)
                        and app.screen.affected is not None, what="the plan")
            await pilot.press("escape")

    run_async(go())
    loaded = [m for m in seen if isinstance(m, FlowScreen.DataLoaded)]
    assert loaded and all(m.header.health is not None for m in loaded)
    assert any(isinstance(m, PlannedDialog.PlannerLoaded) for m in seen)
