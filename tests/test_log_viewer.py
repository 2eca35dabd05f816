"""The log viewer's keys, on real tries of a real run, and its reading of huge files."""
from __future__ import annotations

from pathlib import Path

from app_support import run_async, screen_text, until
from conftest import write
from helpers import run_dag

from flowtui.app.acting import TaskRef
from flowtui.app.app import make_app
from flowtui.app.log_screen import LogScreen, read_tail
from flowtui.runner.config import load_config


def test_keys_of_the_log_viewer(home: Path, pipelines: Path) -> None:
    write(pipelines, "noisy.yaml", """
        dag_id: noisy
        tasks:
          talk:
            command: |
              echo "try $FLOWTUI_TRY_NUMBER begins"
              i=0; while [ $i -lt 300 ]; do echo "row $i fine"; i=$((i+1)); done
              echo "ZeroDivisionError: division by zero in try $FLOWTUI_TRY_NUMBER"
              echo "needle here"
              [ "$FLOWTUI_TRY_NUMBER" -ge 2 ]
            retries: 1
            retry_delay: 0
    """)
    store, run, tis = run_dag(home, pipelines, "noisy")
    assert tis["talk"].try_number == 2

    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            app.push_screen(LogScreen(TaskRef("noisy", run.pk, run.run_id, "talk")))
            await until(pilot, lambda: "try 2 begins" in screen_text(app), what="latest try")
            await pilot.press("left_square_bracket")
            await until(pilot, lambda: "try 1 begins" in screen_text(app), what="try 1")
            await pilot.press("right_square_bracket")
            await until(pilot, lambda: "try 2 begins" in screen_text(app), what="try 2 again")
            await pilot.press("e")
            await until(pilot, lambda: "error line" in screen_text(app), what="jump")
            assert "ZeroDivisionError: division by zero in try 2" in screen_text(app)
            await pilot.press("slash")
            app.screen.query_one("#filter").value = "needle"
            await pilot.press("enter")
            await until(pilot, lambda: "match for 'needle'" in screen_text(app), what="search")
            await pilot.press("w")
            assert app.screen.query_one("#log").wrap is True
            await pilot.press("F")
            await until(pilot, lambda: "following" in screen_text(app), what="follow on")

    run_async(go())


def test_huge_logs_are_read_from_the_end(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    with open(path, "wb") as fh:
        fh.write(b"first line\n")
        fh.write(b"ERROR early failure\n")
        block = (b"y" * 63 + b"\n") * 16384  # 1 MiB
        for _ in range(64):
            fh.write(block)
        fh.write(b"the last line\n")
    lines, size, cut = read_tail(str(path), size=64 * 1024)
    assert cut and lines[-1] == "the last line" and len(lines) <= 1025
    assert size == path.stat().st_size
