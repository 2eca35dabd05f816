"""Helpers for driving the real app headless against a real store."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from textual.app import App
from textual.pilot import Pilot

_press = Pilot.press


async def _press_until_handled(self: Pilot, *keys: str) -> None:
    """``Pilot.press``, returning only once the keys are handled. Textual's returns when the
    process looks idle by its CPU clock (which a starved process on a loaded machine also
    does) and then waits for the screen's widgets to drain the messages they held when it
    started: a key the app forwards to the focused widget after that was still unhandled, and
    the test read the screen as it was before the key. Two more drains: the app forwards what
    it holds, then the widgets handle it."""
    await _press(self, *keys)
    await self._wait_for_screen()
    await self._wait_for_screen()


Pilot.press = _press_until_handled  # type: ignore[method-assign]

_notify = App.notify


def _notify_and_keep(self: App, message: Any, *args: Any, **kwargs: Any) -> None:
    self.__dict__.setdefault("_toasts_shown", []).append(str(message))
    _notify(self, message, *args, **kwargs)


App.notify = _notify_and_keep  # type: ignore[method-assign]


def toasts(app: Any) -> list[str]:
    """Every toast the app has shown, also one whose seconds on screen are over (a starved
    test process may look after they are)."""
    return list(app.__dict__.get("_toasts_shown", []))


async def until(pilot: Any, check: Callable[[], Any], timeout: float = 10.0,
                what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


def screen_text(app: Any) -> str:
    """Everything on screen as plain text."""
    from textual.widgets import DataTable, RichLog, Static

    parts = []
    for widget in app.screen.query("*"):
        if isinstance(widget, Static):
            parts.append(str(widget.render()))
        elif isinstance(widget, DataTable):
            for row_key in widget.rows:
                parts.append(" ".join(str(c) for c in widget.get_row(row_key)))
            parts.extend(str(c.label) for c in widget.columns.values())
        elif isinstance(widget, RichLog):
            parts.extend(line.text for line in widget.lines)
    return "\n".join(parts)


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def reads_done(app: Any) -> None:
    """Every read finished: a log viewer's follow thread runs for as long as it is open, and a
    read superseded by a newer one (exclusive workers: the app's poll may start one while a
    screen's first read runs) ends cancelled, which Textual's ``wait_for_complete`` raises."""
    from textual.worker import WorkerCancelled, WorkerState

    while True:
        reads = [w for w in app.workers if w.group != "tail"
                 and w.state in (WorkerState.PENDING, WorkerState.RUNNING)]
        if not reads:  # (an empty list would mean every worker to wait_for_complete)
            return
        try:
            await app.workers.wait_for_complete(reads)
        except WorkerCancelled:
            pass


def tables_settled(app: Any) -> bool:
    """Every table has measured the rows just added (DataTable does it when idle)."""
    from textual.widgets import DataTable

    return all(not table._new_rows and not table._require_update_dimensions
               for table in app.screen.query(DataTable))
