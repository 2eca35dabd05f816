"""The log viewer follows any log of a running task: huge lines, floods, bounded memory and CPU."""
from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import psutil
import pytest
from app_support import run_async, screen_text, until
from conftest import write
from daemon_support import start, trigger, wait_for

from flowtui.app.acting import TaskRef
from flowtui.app.app import make_app
from flowtui.app.log_reader import BATCH_LINES, LINE_LIMIT, VIEW_LINES, LogTail, read_tail
from flowtui.app.log_screen import LogScreen
from flowtui.runner.config import load_config

FLOOD_LINES = 400_000


def running_task(home: Path, pipelines: Path, runners: list, tmp_path: Path,
                 script: str) -> TaskRef:
    """A real runner runs ``script`` (Python) as the task ``talk``; returns it once it runs."""
    (tmp_path / "task.py").write_text(script)
    write(pipelines, "talker.yaml", f"""
        dag_id: talker
        tasks:
          talk: {{command: '{sys.executable} {tmp_path / "task.py"}'}}
    """)
    start(runners, home, pipelines)
    trigger(home, pipelines, "talker")

    def started() -> tuple | None:
        conn = sqlite3.connect(home / "flowtui.db")
        try:
            return conn.execute("SELECT r.id, r.run_id FROM tries t JOIN dag_runs r ON "
                                "r.id = t.run_pk WHERE t.task_id = 'talk'").fetchone()
        finally:
            conn.close()

    run_pk, run_id = wait_for(started, what="the task to start")
    return TaskRef("talker", run_pk, run_id, "talk")


GATED = """
import os, sys, time
print("before the output", flush=True)
while not os.path.exists({gate!r}):
    time.sleep(0.02)
"""


def test_a_line_over_a_megabyte_does_not_stop_following(
        home: Path, pipelines: Path, runners: list, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    ref = running_task(home, pipelines, runners, tmp_path, GATED.format(gate=str(gate)) + """
sys.stdout.write("start of a huge line " + "x" * (1 << 20) + "\\n")
for i in range(1, 4):
    sys.stdout.write(f"after the long line {i}\\n")
sys.stdout.flush()
time.sleep(60)
""")

    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            app.push_screen(LogScreen(ref))
            await until(pilot, lambda: "before the output" in screen_text(app), what="the log")
            gate.touch()
            await until(pilot, lambda: "after the long line 3" in screen_text(app),
                        timeout=20, what="the lines after the long one")
            screen = app.screen
            assert isinstance(screen, LogScreen) and "following" in screen_text(app)
            long = [line for line in screen.lines if line.startswith("start of a huge line")]
            assert len(long) == 1 and long[0].endswith("… [line continues, 1 MB]")
            assert len(long[0]) < LINE_LIMIT + 40

    run_async(go())


@pytest.mark.long(6)
def test_following_a_flood_reaches_the_end_with_bounded_memory_and_cpu(
        home: Path, pipelines: Path, runners: list, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    # FLOOD_LINES over about three seconds, faster than any screen can show them.
    ref = running_task(home, pipelines, runners, tmp_path, GATED.format(gate=str(gate)) + f"""
out = sys.stdout
for block in range({FLOOD_LINES} // 4000):
    for i in range(block * 4000, block * 4000 + 4000):
        out.write(f"flood line {{i}} of a task that writes as fast as it can\\n")
    out.flush()
    time.sleep(0.03)
out.write("the flood is over\\n")
out.flush()
time.sleep(60)
""")
    me = psutil.Process()
    peak = {"rss": 0}

    def shown_last(screen: LogScreen, text: str) -> bool:
        peak["rss"] = max(peak["rss"], me.memory_info().rss)
        return bool(screen.lines) and screen.lines[-1] == text

    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            app.push_screen(LogScreen(ref))
            await until(pilot, lambda: "before the output" in screen_text(app), what="the log")
            screen = app.screen
            assert isinstance(screen, LogScreen)
            log_path = Path(screen.path)
            base = me.memory_info().rss
            cpu_before, wall_before = me.cpu_times(), time.monotonic()
            gate.touch()
            # The app answers keys during the flood: pausing shows at once, following resumes.
            # (a deadline, not a budget: the CPU and memory bounds below are the budget)
            # (on a loaded machine the flood may be over by the time the view first looks)
            await until(pilot, lambda: screen.lines[-1].startswith("flood line") or
                        screen.lines[-1] == "the flood is over", timeout=60, what="flood")
            await pilot.press("F")
            await until(pilot, lambda: "paused" in screen_text(app), timeout=5, what="pause")
            await pilot.press("F")
            await until(pilot, lambda: shown_last(screen, "the flood is over"), timeout=60,
                        what="the last line of the flood")
            cpu_after, wall = me.cpu_times(), time.monotonic() - wall_before
            assert log_path.stat().st_size > FLOOD_LINES * 50  # it was a real flood
            # The view keeps a window, not the whole log, and says what it left out.
            log = screen.query_one("#log")
            assert len(screen.lines) <= VIEW_LINES and len(log.lines) <= VIEW_LINES
            assert any("not shown: written faster" in line for line in screen.lines)
            assert peak["rss"] - base < 120 * 1024 * 1024, (base, peak)
            cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
            assert cpu < 0.6 * wall, (cpu, wall)

    run_async(go())


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def test_a_line_written_in_pieces_is_shown_once_cut_with_its_length(tmp_path: Path) -> None:
    path = tmp_path / "try.log"
    append(path, b"first\n")
    tail = LogTail(str(path))
    assert tail.poll() and tail.take() == ["first"]
    append(path, b"y" * 10_000)
    assert not tail.poll() and tail.take() == []  # not finished: nothing to show yet
    append(path, b"y" * 2_000_000)
    assert not tail.poll()
    append(path, b"z\nafter\n")
    assert tail.poll()
    long, after = tail.take()
    assert long == "y" * LINE_LIMIT + " … [line continues, 1.9 MB]" and after == "after"
    lines, _, _ = read_tail(str(path), size=3_000_000)
    assert lines[-2] == long and lines[-1] == "after"


def test_a_writer_faster_than_a_screen_is_skipped_ahead(tmp_path: Path) -> None:
    path = tmp_path / "try.log"
    append(path, b"start\n")
    tail = LogTail(str(path))
    tail.poll()
    assert tail.take() == ["start"]
    append(path, b"".join(b"line %d\n" % i for i in range(1_000_000)))  # 7.8 MB
    assert tail.poll()
    lines = tail.take()
    assert lines[0].startswith("[… ") and " MB not shown: written faster" in lines[0]
    assert lines[1:] == [f"line {i}" for i in range(1_000_000 - BATCH_LINES, 1_000_000)]
    path.write_bytes(b"truncated and written again\n")
    assert tail.poll() and tail.take() == ["truncated and written again"]
