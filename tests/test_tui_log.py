"""The log viewer on real tries of real runs: the error excerpt, the whole file by byte offset,
search with wrapping, wrap keeping the place, the pager and the path."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from app_support import run_async, screen_text, toasts, until
from conftest import write
from helpers import run_dag

from flowtui.app.acting import TaskRef
from flowtui.app.app import make_app
from flowtui.app.log_screen import LogScreen
from flowtui.app.log_view import LogView, fit_path, pager_command
from flowtui.runner.config import load_config

REAL_ERROR = "could not connect to server: Connection refused (127.0.0.1:5432)"
DECOYS = ["INFO config: on_error=abort retries=3", "INFO batch done: rows=5000 errors=0",
          "INFO tests: 12 passed, 0 failed"]

SCRIPT = """
import sys
out = sys.stdout
out.write("first line of the log\\n")
for line in {decoys!r}:
    out.write(line + "\\n")
for i in range({before}):
    out.write(f"noise {{i}} " + {filler!r} + "\\n")
    if i == 10 or i == {before} // 2:
        out.write("needle in the noise\\n")
for line in {decoys!r}:
    out.write(line + "\\n")
out.write({error!r} + "\\n")
for line in {decoys!r}:
    out.write(line + "\\n")
for i in range({after}):
    out.write(f"after {{i}} all quiet\\n")
out.write("last line of the log\\n")
sys.exit(1)
"""


def failing_log(home: Path, pipelines: Path, tmp_path: Path, *, before: int, after: int,
                filler: str = "x") -> TaskRef:
    """A DAG whose task fails after writing ``before`` noise lines (each ending in ``filler``),
    decoys around the real error line, then ``after`` more lines; run for real."""
    script = tmp_path / "noisy_task.py"
    script.write_text(SCRIPT.format(decoys=DECOYS, before=before, after=after, filler=filler,
                                    error=REAL_ERROR))
    write(pipelines, "buried.yaml", f"""
        dag_id: buried
        tasks:
          load: {{command: '{sys.executable} {script}'}}
    """)
    _, run, tis = run_dag(home, pipelines, "buried")
    assert tis["load"].state == "failed"
    return TaskRef("buried", run.pk, run.run_id, "load")


def shown(screen: LogScreen) -> list[str]:
    """The lines on screen in the log view, as plain text."""
    if not screen.query(LogView):
        return []  # not composed yet
    log = screen.query_one(LogView)
    top = int(log.scroll_y)
    return [strip.text for strip in log.lines[top:top + log.scrollable_content_region.height]]


def styles_of(screen: LogScreen, text: str) -> list[Any]:
    log = screen.query_one(LogView)
    return [segment.style for strip in log.lines if text in strip.text for segment in strip
            if segment.style is not None and segment.text.strip()]


def viewer(home: Path, pipelines: Path, ref: TaskRef, check: Any, size=(100, 30)) -> None:
    """Open the log viewer on ``ref`` once its last line is shown, then run ``check``."""
    async def go() -> None:
        app = make_app(load_config(home, pipelines), refresh_seconds=0.2)
        async with app.run_test(size=size) as pilot:
            app.push_screen(LogScreen(ref))
            # A deadline, not a pause: a loaded machine may take a while to paint a big log.
            await until(pilot, lambda: "last line of the log" in shown(app.screen),
                        timeout=30.0, what="the end of the log")
            await check(app, pilot, app.screen)

    run_async(go())


async def refreshed(app: Any, pilot: Any) -> None:
    """One refresh of the screen from the store, as the app does when the store changes."""
    app.first_paint_at = None
    app.screen.reload()
    await until(pilot, lambda: app.first_paint_at is not None, what="a refresh")


def test_e_lands_on_the_real_error_past_decoys_and_stays_there(
        home: Path, pipelines: Path, tmp_path: Path) -> None:
    ref = failing_log(home, pipelines, tmp_path, before=3000, after=2000)

    async def check(app: Any, pilot: Any, screen: LogScreen) -> None:
        assert REAL_ERROR not in shown(screen)  # buried: 2,000 lines above the end
        await pilot.press("e")
        await until(pilot, lambda: REAL_ERROR in shown(screen), what="the real error line")
        assert "error line (failure)  paused (F follows)" in screen_text(app)
        for _ in range(3):  # nor a refresh, nor the tail, nor a queued scroll move it away
            await refreshed(app, pilot)
            await pilot.pause(0.3)
            assert REAL_ERROR in shown(screen), shown(screen)
        # Only the excerpt's line has the error style; decoys with error words have none.
        error = styles_of(screen, REAL_ERROR)
        assert error and all(s.bold and s.reverse and s.color.name == "red" for s in error)
        for decoy in DECOYS:
            decoy_styles = styles_of(screen, decoy)
            assert decoy_styles and not any(s.bold or s.reverse or s.color for s in decoy_styles)
        # Moving is the operator's: the view goes where they say.
        await pilot.press("G")
        await until(pilot, lambda: "last line of the log" in shown(screen), what="the end")

    viewer(home, pipelines, ref, check)


@pytest.mark.long(8)
def test_home_and_end_reach_the_first_and_last_line_and_pages_cross_windows(
        home: Path, pipelines: Path, tmp_path: Path) -> None:
    ref = failing_log(home, pipelines, tmp_path, before=6000, after=100)

    def top_number(screen: LogScreen) -> int:
        found = re.match(r"noise (\d+) ", shown(screen)[0])
        assert found, shown(screen)[0]
        return int(found.group(1))

    async def check(app: Any, pilot: Any, screen: LogScreen) -> None:
        assert "first line of the log" not in screen.lines  # more than one window
        await pilot.press("home")
        await until(pilot, lambda: shown(screen)[0] == "first line of the log", what="Home")
        assert "start of the log" in screen_text(app)
        await pilot.press("G")
        await until(pilot, lambda: shown(screen)[-1] == "last line of the log", what="G")
        await pilot.press("g")
        await until(pilot, lambda: shown(screen)[0] == "first line of the log", what="g")
        # Paging on through the file loads the next windows with no line lost or repeated.
        lines = Path(screen.path).read_text().splitlines()
        await pilot.press("down", "down", "down", "down")
        start = lines.index(shown(screen)[0])
        page = screen.query_one(LogView).scrollable_content_region.height - 1
        # A tall terminal (a page longer than the context a window keeps around its edge):
        # about 2,000 lines (four windows of 500) in few key presses.
        pages = -(-2000 // page)
        await pilot.press(*["pagedown"] * pages)
        await pilot.pause(0.1)
        assert shown(screen)[0] == lines[start + pages * page]
        assert top_number(screen) > 1500  # past several windows of 500 lines
        await pilot.press(*["pageup"] * pages)
        await pilot.pause(0.1)
        assert shown(screen)[0] == lines[start]

    viewer(home, pipelines, ref, check, size=(100, 150))


@pytest.mark.long(6)
def test_search_reaches_the_whole_file_and_says_when_it_wraps(
        home: Path, pipelines: Path, tmp_path: Path) -> None:
    ref = failing_log(home, pipelines, tmp_path, before=8000, after=100)

    async def search(pilot: Any, text: str) -> None:
        await pilot.press("slash")
        await pilot.press(*text)
        await pilot.press("enter")

    def at_match(screen: LogScreen, near: str) -> bool:
        rows = shown(screen)
        return "needle in the noise" in rows and any(near in row for row in rows)

    async def check(app: Any, pilot: Any, screen: LogScreen) -> None:
        assert "needle in the noise" not in screen.lines  # the window loaded has none
        await search(pilot, "NEEDLE")  # from the end: on past the end, to the top
        await until(pilot, lambda: at_match(screen, "noise 10 "), what="the first needle")
        assert "search wrapped to the top" in screen_text(app)
        await pilot.press("n")  # 8,000 lines on: outside the window of the first match
        await until(pilot, lambda: at_match(screen, "noise 4000 "), what="the second needle")
        assert "wrapped" not in screen_text(app)
        await pilot.press("n")
        await until(pilot, lambda: at_match(screen, "noise 10 "), what="wrapped again")
        assert "search wrapped to the top" in screen_text(app)
        await pilot.press("N")
        await until(pilot, lambda: at_match(screen, "noise 4000 "), what="backwards")
        assert "search wrapped to the bottom" in screen_text(app)
        await search(pilot, "no such text anywhere")
        await until(pilot, lambda: "no match for 'no such text anywhere'" in screen_text(app),
                    what="no match")

    viewer(home, pipelines, ref, check)


@pytest.mark.long(6)
def test_wrap_keeps_the_line_at_the_top_in_view(home: Path, pipelines: Path,
                                                tmp_path: Path) -> None:
    ref = failing_log(home, pipelines, tmp_path, before=3000, after=100,
                      filler="long words " * 30)

    async def check(app: Any, pilot: Any, screen: LogScreen) -> None:
        log = screen.query_one(LogView)
        await pilot.press("g")
        for _ in range(20):
            await pilot.press("pagedown")
        top = shown(screen)[0]
        assert top.startswith("noise ")
        await pilot.press("w")
        await until(pilot, lambda: log.wrap, what="wrapped")
        await pilot.pause(0.1)
        assert shown(screen)[0] == top[:len(shown(screen)[0])]  # the same line, wrapped
        assert len(shown(screen)[0]) < len(top)
        await pilot.press("down", "down", "down", "down")  # into the middle of a wrapped line
        middle = shown(screen)[0]
        await pilot.press("w")
        await until(pilot, lambda: not log.wrap, what="unwrapped")
        await pilot.pause(0.1)
        assert middle.strip() in shown(screen)[0] and shown(screen)[0].startswith("noise ")

    viewer(home, pipelines, ref, check)


def test_y_copies_the_path_and_o_hands_the_log_to_the_pager(
        home: Path, pipelines: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = failing_log(home, pipelines, tmp_path, before=10, after=10)
    monkeypatch.setenv("PAGER", "my-pager --quit-at-eof")

    async def check(app: Any, pilot: Any, screen: LogScreen) -> None:
        await pilot.press("y")
        assert app.clipboard == screen.path and screen.path.endswith("/load/1.log")
        await until(pilot, lambda: any("copied the log's path" in m for m in toasts(app)),
                    what="the copy toast")
        assert pager_command(screen.path) == ["my-pager", "--quit-at-eof", screen.path]
        # Headless, the app cannot hand the terminal over: it says so, with the command.
        await pilot.press("o")
        await until(pilot, lambda: any("cannot hand over to a pager: run my-pager" in m
                                       for m in toasts(app)), what="the pager toast")
        assert isinstance(app.screen, LogScreen)
        footer = " ".join(b.description for _, b in screen._bindings if b.show)
        assert "Pager" in footer and "Copy path" in footer

    viewer(home, pipelines, ref, check)
    assert pager_command("/x.log", {}) == ["less", "/x.log"]


def test_the_path_is_shortened_from_the_left_never_mid_folder(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = str(tmp_path / "flowtui" / "logs" / "a_rather_long_dag_name" /
               "scheduled__2026-11-21T10:45:32+00:00" / "extract_orders_from_the_warehouse" /
               "3.log")
    assert fit_path(path, 200) == "~/flowtui/logs/a_rather_long_dag_name/" \
        "scheduled__2026-11-21T10:45:32+00:00/extract_orders_from_the_warehouse/3.log"
    short = fit_path(path, 60)
    assert short == "…/extract_orders_from_the_warehouse/3.log" and len(short) <= 60
    assert fit_path(path, 10) == "…/3.log"
