"""The log viewer: the end of a try's log at once (any size), follow, search, first error.

Output is shown with control and escape characters as visible text, so a task can never change
the operator's terminal (title, colours, clipboard, cursor). Reading lives in ``log_reader``: a
worker thread follows the file by byte offset and the screen repaints at most once per poll, from
a bounded window of lines.
"""
from __future__ import annotations

import re
from collections import deque
from typing import Any, Iterable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input, RichLog, Static
from textual.worker import get_current_worker

from flowtui.app.acting import TaskRef
from flowtui.app.base import NAV, FlowScreen
from flowtui.app.log_reader import (VIEW_LINES, LogTail, find_first, read_tail, read_window,
                                    size_text)
from flowtui.app.render import display_path, log_line

__all__ = ["LogScreen", "find_first", "read_tail"]

POLL_SECONDS = 0.25  # how often a followed log is read: at most one repaint per poll
ERROR_RE = re.compile(rb"error|exception|traceback|fatal", re.I)


class TailGrew(Message):
    """The followed log has new lines waiting; several of these collapse into one repaint."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TailGrew)


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
        self.tail: LogTail | None = None
        self.at_tail = True  # the view shows the end of the log (not a window around a jump)
        self.opening = False  # the end of a newly opened log is shown even while paused
        self.follow = True
        self.running = False
        self.lines: deque[str] = deque(maxlen=VIEW_LINES)
        self.matches: list[int] = []
        self.match_index = -1
        self.pattern = ""
        self.TITLE = f"log: {ref.dag_id} / {ref.run_id} / {ref.task_id}"

    def body(self) -> ComposeResult:
        yield RichLog(highlight=False, markup=False, wrap=False, max_lines=VIEW_LINES, id="log")
        yield Input(placeholder="search (enter)", id="filter")
        yield Static("", id="logbar")

    def on_unmount(self) -> None:
        if self.tail is not None:
            self.tail.close()

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
        self.running = chosen.end_date is None
        if chosen.log_path != self.path:
            self.path = chosen.log_path
            self._open_tail()
        self._bar()

    def _open_tail(self) -> None:
        """Show the end of the log and follow it from there, in a thread of its own."""
        if self.tail is not None:
            self.tail.close()
        self.tail = LogTail(self.path)
        self.at_tail = self.opening = True
        self._paint([])
        self._follow_worker(self.tail)

    @work(thread=True, exclusive=True, group="tail", exit_on_error=False)
    def _follow_worker(self, tail: LogTail) -> None:
        worker = get_current_worker()
        while not (worker.is_cancelled or tail.closed.is_set()):
            if (self.follow or not tail.opened) and tail.poll():
                self.post_message(TailGrew())
            tail.closed.wait(POLL_SECONDS)

    @on(TailGrew)
    def _tail_grew(self) -> None:
        if not ((self.follow or self.opening) and self.at_tail and self.tail is not None):
            return
        new = self.tail.take()
        if new:
            self.opening = False
            self.lines.extend(new)
            self._write(new, scroll_end=True)
            self._bar()

    def _paint(self, lines: Iterable[str], scroll_end: bool | None = None) -> None:
        self.lines = deque(lines, maxlen=VIEW_LINES)
        self.query_one("#log", RichLog).clear()
        self._write(self.lines, scroll_end)

    def _write(self, lines: Iterable[str], scroll_end: bool | None = None) -> None:
        """One write for a whole batch: the widget renders and trims once, not once a line."""
        batch = list(lines)
        if batch:
            self.query_one("#log", RichLog).write(
                Text("\n").join(log_line(line) for line in batch), scroll_end=scroll_end)

    def _bar(self, message: str = "") -> None:
        status = "following" if self.follow else "paused (F follows)"
        tries = f"try {self.try_number} of {len(self.tries)}" if self.tries else ""
        found = f"  match {self.match_index + 1}/{len(self.matches)}" if self.matches else ""
        size = f"  {size_text(self.tail.size)}" if self.tail is not None and self.tail.size else ""
        self.query_one("#logbar", Static).update(
            message or f"{tries}  {status}  {len(self.lines)} lines{found}{size}  "
                       f"{display_path(self.path)}")

    # -- keys ------------------------------------------------------------------------------
    def action_follow(self) -> None:
        self.follow = not self.follow
        if self.follow and not self.at_tail and self.path:
            self._open_tail()  # back from a jump: the end of the log, followed again
        elif self.follow:
            self.query_one("#log", RichLog).scroll_end(animate=False)
        self._bar()

    def action_wrap(self) -> None:
        log = self.query_one("#log", RichLog)
        log.wrap = not log.wrap
        log.clear()
        self._write(self.lines)

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
        self.at_tail = False
        self._paint(lines, scroll_end=False)
        log = self.query_one("#log", RichLog)
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
