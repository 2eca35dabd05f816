"""The log viewer: the end of a try's log at once (any size), follow, search, first error.

Output is shown with control and escape characters as visible text, so a task can never change
the operator's terminal (title, colours, clipboard, cursor).
"""
from __future__ import annotations

import os
import re
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, RichLog, Static

from flowtui.app.acting import TaskRef
from flowtui.app.base import NAV, FlowScreen
from flowtui.app.render import display_path, log_line

TAIL_BYTES = 512 * 1024   # what is shown on opening: the end of the file
WINDOW_BYTES = 256 * 1024  # around a jump target
ERROR_RE = re.compile(rb"error|exception|traceback|fatal", re.I)


def read_tail(path: str, size: int = TAIL_BYTES) -> tuple[list[str], int, bool]:
    """The last lines of a file (at most ``size`` bytes) and the file's size; never the whole."""
    try:
        with open(path, "rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            start = max(0, end - size)
            fh.seek(start)
            data = fh.read(end - start)
    except OSError:
        return [], 0, False
    lines = data.decode("utf-8", "replace").split("\n")
    cut = start > 0
    if cut:
        lines = lines[1:]  # the first one is a partial line
    if lines and lines[-1] == "":
        lines.pop()
    return lines, end, cut


def find_first(path: str, pattern: re.Pattern[bytes], chunk: int = 1 << 20) -> int | None:
    """Byte offset of the first line matching ``pattern``, scanning in chunks."""
    try:
        with open(path, "rb") as fh:
            offset, tail = 0, b""
            while True:
                data = fh.read(chunk)
                if not data:
                    return None
                block = tail + data
                match = pattern.search(block)
                if match:
                    line_start = block.rfind(b"\n", 0, match.start()) + 1
                    return offset - len(tail) + line_start
                tail = block[-4096:]
                offset += len(data)
    except OSError:
        return None


def read_window(path: str, at: int, size: int = WINDOW_BYTES) -> tuple[list[str], int]:
    """Lines around byte ``at``; returns them and the index of the line that starts there."""
    with open(path, "rb") as fh:
        start = max(0, at - size // 2)
        fh.seek(start)
        data = fh.read(size)
    before = data[: at - start].decode("utf-8", "replace").split("\n")
    lines = data.decode("utf-8", "replace").split("\n")
    skip = 1 if start > 0 else 0
    return lines[skip:], max(0, len(before) - 1 - skip)


class LogScreen(FlowScreen):
    BINDINGS = [*NAV,
                Binding("F", "follow", "Follow", id="log-follow"),
                Binding("e", "first_error", "First error", id="log-error"),
                Binding("slash", "search", "Search", id="log-search"),
                Binding("n", "next_match", "Next", id="log-next"),
                Binding("N", "previous_match", "Previous", id="log-previous"),
                Binding("left_square_bracket", "try(-1)", "Prev try", id="log-prev-try"),
                Binding("right_square_bracket", "try(1)", "Next try", id="log-next-try"),
                Binding("w", "wrap", "Wrap", id="log-wrap")]

    def __init__(self, ref: TaskRef, try_number: int | None = None) -> None:
        super().__init__()
        self.ref = ref
        self.try_number = try_number
        self.tries: list[Any] = []
        self.path = ""
        self.read_offset = 0
        self.follow = True
        self.lines: list[str] = []
        self.matches: list[int] = []
        self.match_index = -1
        self.pattern = ""
        self.TITLE = f"log: {ref.dag_id} / {ref.run_id} / {ref.task_id}"

    def body(self) -> ComposeResult:
        yield RichLog(highlight=False, markup=False, wrap=False, max_lines=200_000, id="log")
        yield Input(placeholder="search (enter)", id="filter")
        yield Static("", id="logbar")

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(0.3, self._tick)

    # -- loading ---------------------------------------------------------------------------
    def fetch(self, data: Any) -> Any:
        return data.tries(self.ref.run_pk, self.ref.task_id)

    def show(self, tries: list) -> None:
        self.tries = tries
        if not tries:
            self._bar("this task has not started yet: no log")
            return
        numbers = [t.try_number for t in tries]
        if self.try_number not in numbers:
            self.try_number = numbers[-1]
        chosen = next(t for t in tries if t.try_number == self.try_number)
        if chosen.log_path != self.path:
            self.path = chosen.log_path
            self._open_tail()
        self.running = chosen.end_date is None
        self._bar()

    def _open_tail(self) -> None:
        lines, size, cut = read_tail(self.path)
        self.read_offset = size
        self.lines = (["[... earlier output not loaded: e jumps to the first error ...]"]
                      if cut else []) + lines
        log = self.query_one("#log", RichLog)
        log.clear()
        for line in self.lines:
            log.write(log_line(line))
        log.scroll_end(animate=False)

    def _tick(self) -> None:
        if self.follow and self.path:
            self._read_new()

    @work(thread=True, exclusive=True, group="tail", exit_on_error=False)
    def _read_new(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.read_offset)
                data = fh.read(TAIL_BYTES)
        except OSError:
            return
        if not data:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.read_offset += end + 1
        new = data[: end + 1].decode("utf-8", "replace").split("\n")[:-1]
        self.app.call_from_thread(self._append, new)

    def _append(self, new: list[str]) -> None:
        log = self.query_one("#log", RichLog)
        for line in new:
            self.lines.append(line)
            log.write(log_line(line), scroll_end=self.follow)
        self._bar()

    def _bar(self, message: str = "") -> None:
        status = "following" if self.follow else "paused (F follows)"
        tries = f"try {self.try_number} of {len(self.tries)}" if self.tries else ""
        found = f"  match {self.match_index + 1}/{len(self.matches)}" if self.matches else ""
        self.query_one("#logbar", Static).update(
            message or f"{tries}  {status}  {len(self.lines)} lines{found}  "
                       f"{display_path(self.path)}")

    # -- keys ------------------------------------------------------------------------------
    def action_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self.query_one("#log", RichLog).scroll_end(animate=False)
        self._bar()

    def action_wrap(self) -> None:
        log = self.query_one("#log", RichLog)
        log.wrap = not log.wrap
        log.clear()
        for line in self.lines:
            log.write(log_line(line))

    def action_try(self, step: int) -> None:
        numbers = [t.try_number for t in self.tries]
        if not numbers or self.try_number is None:
            return
        index = max(0, min(len(numbers) - 1, numbers.index(self.try_number) + step))
        self.try_number = numbers[index]
        self.show(self.tries)

    def action_first_error(self) -> None:
        self._find_error()

    @work(thread=True, exclusive=True, group="jump", exit_on_error=False)
    def _find_error(self) -> None:
        at = find_first(self.path, ERROR_RE) if self.path else None
        if at is None:
            self.app.call_from_thread(self._bar, "no error line in this log")
            return
        lines, index = read_window(self.path, at)
        self.app.call_from_thread(self._show_window, lines, index)

    def _show_window(self, lines: list[str], index: int) -> None:
        self.follow = False
        self.lines = lines
        log = self.query_one("#log", RichLog)
        log.clear()
        for line in lines:
            log.write(log_line(line))
        log.scroll_to(y=max(0, index - 2), animate=False)
        self._bar(f"first error line (line {index + 1} of this window); F follows again")

    def action_search(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("visible")
        box.focus()

    @on(Input.Submitted, "#filter")
    def _search(self, event: Input.Submitted) -> None:
        event.input.remove_class("visible")
        self.pattern = event.value.lower()
        self.matches = [i for i, line in enumerate(self.lines) if self.pattern and
                        self.pattern in line.lower()]
        self.match_index = -1
        self.query_one("#log", RichLog).focus()
        self.action_next_match()

    def action_next_match(self) -> None:
        self._jump(1)

    def action_previous_match(self) -> None:
        self._jump(-1)

    def _jump(self, step: int) -> None:
        if not self.matches:
            self._bar(f"no match for {self.pattern!r}" if self.pattern else "")
            return
        self.follow = False
        self.match_index = (self.match_index + step) % len(self.matches)
        self.query_one("#log", RichLog).scroll_to(y=self.matches[self.match_index],
                                                  animate=False)
        self._bar()
