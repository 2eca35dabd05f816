"""The log viewer: any place of a try's log by byte offset (any size), follow, search, the error.

Output is shown with control and escape characters as visible text, so a task can never change
the operator's terminal (title, colours, clipboard, cursor). Reading lives in ``log_reader``: the
view holds a bounded window of whole lines, each with its byte offset in the file, loaded around
any offset (the start, the end, the error excerpt, a search match) and followed by a worker thread
while it is the end of the log. Where the view stands is the screen's one ``place``: every scroll
the screen makes re-applies it, so no scroll queued earlier can move the view off a jump.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from collections import deque
from typing import Any, Iterable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input, Static
from textual.worker import get_current_worker

from flowtui.app.acting import TaskRef
from flowtui.app.base import NAV, FlowScreen, focus_now
from flowtui.app.log_reader import (OPEN_LINES, VIEW_LINES, Line, LogTail, Window,
                                    line_end, read_tail, read_window, search, size_text)
from flowtui.app.log_view import LogView, PathLine, pager_command, styled
from flowtui.app.render import display_path
from flowtui.runner.excerpt import find_excerpt

__all__ = ["LogScreen", "read_tail"]

POLL_SECONDS = 0.25  # how often a followed log is read: at most one repaint per poll
CONTEXT_ROWS = 4     # lines shown above a line jumped to
END = -1             # the place "the last line of the log"


class TailGrew(Message):
    """The followed log has new lines waiting; several of these collapse into one repaint."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TailGrew)


class LogScreen(FlowScreen):
    AUTO_FOCUS = ""  # keys go to the screen; the search box takes them only while shown
    BINDINGS = [*NAV,
                Binding("F", "follow", "Follow", id="log-follow"),
                Binding("e", "error", "Error line", id="log-error"),
                Binding("slash", "search", "Search", id="log-search"),
                Binding("n", "match(1)", "Next match", show=False, id="log-next"),
                Binding("N", "match(-1)", "Previous match", show=False, id="log-previous"),
                Binding("left_square_bracket", "try(-1)", "Previous try", show=False,
                        id="log-prev-try"),
                Binding("right_square_bracket", "try(1)", "Next try", show=False,
                        id="log-next-try"),
                Binding("w", "wrap", "Wrap", id="log-wrap"),
                Binding("o", "pager", "Pager", id="log-pager"),
                Binding("y", "copy_path", "Copy path", id="log-copy"),
                Binding("home,g", "start", "Start of log", show=False, key_display="Home/g",
                        id="log-start"),
                Binding("end,G", "end", "End of log", show=False, key_display="End/G",
                        id="log-end"),
                # Moving: the window of lines loads more of the file at its edges.
                Binding("up,k", "line(-1)", show=False),
                Binding("down,j", "line(1)", show=False),
                Binding("pageup", "page(-1)", show=False),
                Binding("pagedown", "page(1)", show=False),
                Binding("left", "sideways(-8)", show=False),
                Binding("right", "sideways(8)", show=False)]

    def __init__(self, ref: TaskRef, try_number: int | None = None) -> None:
        super().__init__()
        self.ref = ref
        self.try_number = try_number
        self.tries: list[Any] = []
        self.path = ""
        self.tail: LogTail | None = None
        self.at_tail = True  # the window is the end of the log, growing while followed
        self.opening = False  # the end of a newly opened log is shown even while paused
        self.follow = True
        self.running = False
        self.lines: deque[str] = deque(maxlen=VIEW_LINES)
        self.offsets: deque[int | None] = deque(maxlen=VIEW_LINES)
        self.window_end = 0  # the byte after the window's last line (when not the tail)
        self.file_size = 0
        self._place: tuple[int, int] = (END, 0)  # (byte offset of a line, its row on screen)
        self.moves = 0  # bumped by every key that moves the view: late answers then give way
        self.excerpt: int | None = None  # the offset of the error excerpt's line, once found
        self.pattern = ""
        self.match: int | None = None  # the offset of the line of the current match
        self.note = ""
        self.TITLE = f"log: {ref.dag_id} / {ref.run_id} / {ref.task_id}"

    def body(self) -> ComposeResult:
        yield PathLine(id="logpath")
        yield LogView(highlight=False, markup=False, wrap=False, max_lines=VIEW_LINES,
                      auto_scroll=False, id="log")
        yield Input(placeholder="search the whole log (enter)", id="filter", disabled=True)
        yield Static("", id="logbar")

    @property
    def place(self) -> tuple[int, int]:
        return self._place

    @place.setter
    def place(self, value: tuple[int, int]) -> None:
        """Where the view goes; at the end, it stays there while its layout settles."""
        self._place = value
        for log in self.query(LogView):
            log.pinned_to_end = value[0] == END

    def on_mount(self) -> None:
        self.place = self._place

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
            self.excerpt = self.match = None
            self.note = ""
            self.query_one(PathLine).show_path(self.path)
            self._open_tail()
        self._bar()

    def _open_tail(self) -> None:
        """Show the end of the log and follow it from there, in a thread of its own."""
        if self.tail is not None:
            self.tail.close()
        self.tail = LogTail(self.path)
        self.at_tail = self.opening = True
        self.place = (END, 0)
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
        new = self.tail.take_lines()
        if new:
            self.opening = False
            self.file_size = self.tail.size
            self._add(new)
            self._bar()

    def _show_window(self, window: Window, row: int) -> None:
        """The lines of ``window``, with its target line at ``row`` of the screen."""
        if self.tail is not None:
            self.tail.close()  # a window elsewhere in the file is not followed
        self.at_tail = self.opening = self.follow = False
        self.window_end, self.file_size = window.end, window.size
        target = window.lines[window.target][0] if window.lines else None
        self.place = (target if target is not None else 0, row)
        self._paint(window.lines)

    # -- painting --------------------------------------------------------------------------
    def _paint(self, lines: Iterable[Line]) -> None:
        batch = list(lines)
        self.offsets = deque((o for o, _ in batch), maxlen=VIEW_LINES)
        self.lines = deque((t for _, t in batch), maxlen=VIEW_LINES)
        self.query_one(LogView).clear()
        self._write(batch)

    def _add(self, batch: list[Line]) -> None:
        self.offsets.extend(o for o, _ in batch)
        self.lines.extend(t for _, t in batch)
        self._write(batch)

    def _write(self, batch: list[Line]) -> None:
        """One write for a whole batch (the widget renders and trims once), then the view goes
        where ``place`` says, now and again after the next refresh (once the layout settled)."""
        if batch:
            texts = (styled(o, t, self.excerpt, self.pattern) for o, t in batch)
            self.query_one(LogView).write(Text("\n").join(texts), scroll_end=False)
        self._go()
        self.call_after_refresh(self._go)

    def _go(self) -> None:
        log = self.query_one(LogView)
        offset, row = self.place
        if offset == END:
            log.scroll_to(y=log.max_scroll_y, animate=False, immediate=True)
            return
        strip = log.strip_of(offset)
        if strip is not None:
            log.scroll_to(y=max(0, strip - row), animate=False, immediate=True)

    def _top(self) -> int | None:
        """The offset of the line at the top of the screen."""
        log = self.query_one(LogView)
        return log.offset_at(int(log.scroll_y))

    def _bar(self, message: str = "") -> None:
        if message:
            self.note = message
        status = "following" if self.follow and self.at_tail else "paused (F follows)"
        tries = f"try {self.try_number} of {len(self.tries)}" if self.tries else ""
        first = self.offsets[0] if self.offsets else None
        if self.at_tail:
            where = "end of the log"
        elif first == 0 or first is None:
            where = "start of the log"
        else:
            where = f"{100 * first // max(1, self.file_size)}% into the log"
        size = f" ({size_text(self.file_size)})" if self.file_size else ""
        # The note first: it is what the last key did, and 80 columns cut the end.
        self.query_one("#logbar", Static).update(
            Text(f"{self.note}  {status}  {where}{size}  {tries}".strip(), no_wrap=True,
                 overflow="ellipsis"))

    # -- keys: moving ----------------------------------------------------------------------
    def _moved(self) -> None:
        """The operator moved the view: it stays where they put it, late answers of searches
        and jumps asked for before give way, and the next search starts from here."""
        self.moves += 1
        self.note = ""
        self.match = None

    def action_line(self, step: int) -> None:
        self._scroll(step)

    def action_page(self, step: int) -> None:
        self._scroll(step * max(1, self.query_one(LogView).scrollable_content_region.height - 1))

    def action_sideways(self, step: int) -> None:
        log = self.query_one(LogView)
        log.scroll_to(x=max(0, log.scroll_x + step), animate=False, immediate=True)

    def _scroll(self, rows: int) -> None:
        self._moved()
        log = self.query_one(LogView)
        y = int(log.scroll_y) + rows
        first = next((o for o in self.offsets if o is not None), None)
        if y < 0 and first:
            self._load_before(first, -y)
        elif y > log.max_scroll_y and not self.at_tail and self.window_end < _size(self.path):
            self._load_after(y - int(log.max_scroll_y))
        else:
            log.scroll_to(y=max(0, min(y, log.max_scroll_y)), animate=False, immediate=True)
            top = self._top()
            self.place = (END, 0) if self.at_tail and y >= log.max_scroll_y else (top or 0, 0)
        self._bar()

    def _load_before(self, first: int, rows: int) -> None:
        """The window before the line at ``first``: the line above it shows ``rows`` - 1 rows
        down, as if the view had scrolled on through the file (the window keeps at least a
        screenful after that line, however tall the terminal)."""
        height = self.query_one(LogView).scrollable_content_region.height
        before = max(rows, min(OPEN_LINES * 3 // 4, OPEN_LINES - height - 1))
        self._show_window(read_window(self.path, first - 1, before=before), rows - 1)

    def _load_after(self, rows: int) -> None:
        """The window after this one, its first line ``rows`` rows from the bottom (the window
        keeps at least a screenful before that line, however tall the terminal)."""
        height = self.query_one(LogView).scrollable_content_region.height
        before = max(OPEN_LINES // 4, height + 1)
        self._show_window(read_window(self.path, self.window_end, before=before),
                          max(0, height - rows))

    def action_start(self) -> None:
        self._moved()
        self._show_window(read_window(self.path, 0, before=0), 0)
        self._bar()

    def action_end(self) -> None:
        self._moved()
        self._open_tail()
        self._bar()

    def action_follow(self) -> None:
        self._moved()
        self.follow = not self.follow
        if self.follow and not self.at_tail and self.path:
            self._open_tail()  # back from a jump: the end of the log, followed again
        elif self.follow:
            self.place = (END, 0)
            self._go()
        self._bar()

    def action_wrap(self) -> None:
        """Wrap or unwrap long lines, keeping the line at the top of the screen there."""
        log = self.query_one(LogView)
        top = self._top()
        if not (self.at_tail and log.scroll_y >= log.max_scroll_y) and top is not None:
            self.place = (top, 0)
        log.wrap = not log.wrap
        log.clear()
        self._write(list(zip(self.offsets, self.lines)))

    def action_try(self, step: int) -> None:
        numbers = [t.try_number for t in self.tries]
        if not numbers or self.try_number is None:
            return
        self._moved()
        index = max(0, min(len(numbers) - 1, numbers.index(self.try_number) + step))
        self.try_number = numbers[index]
        self.show(self.tries)

    # -- keys: jumps -----------------------------------------------------------------------
    def action_error(self) -> None:
        if not self.path:
            return
        self._moved()
        self._bar("looking for the error line…")
        self._find_error(self.path, self.moves)

    @work(thread=True, exclusive=True, group="jump", exit_on_error=False)
    def _find_error(self, path: str, moves: int) -> None:
        excerpt = find_excerpt(path)
        window = read_window(path, excerpt.offset) if excerpt is not None else None
        self.app.call_from_thread(self._error_found, path, moves, excerpt, window)

    def _error_found(self, path: str, moves: int, excerpt: Any, window: Window | None) -> None:
        if path != self.path or moves != self.moves:
            return  # the operator moved on meanwhile
        if excerpt is None or window is None:
            self._bar("no line in this log reads as an error")
            return
        self.excerpt = excerpt.offset
        self.follow = False
        self._show_window(window, CONTEXT_ROWS)
        self._bar(f"error line ({excerpt.kind})")

    def action_search(self) -> None:
        box = self.query_one("#filter", Input)
        box.disabled = False
        box.add_class("visible")
        focus_now(box)

    @on(Input.Submitted, "#filter")
    def _search(self, event: Input.Submitted) -> None:
        event.input.remove_class("visible")
        event.input.disabled = True
        self.pattern = event.value.strip()
        self.match = None
        if self.pattern and self.path:
            self._moved()
            self._bar(f"searching for {self.pattern!r}…")
            self._search_worker(self.path, self.pattern, self._top() or 0, True, self.moves)

    def action_match(self, step: int) -> None:
        if not (self.pattern and self.path):
            self._bar("no search yet: / searches the whole log")
            return
        past = self.match is not None
        origin = self.match if self.match is not None else self._top() or 0
        self._moved()
        self._bar(f"searching for {self.pattern!r}…")
        self._search_worker(self.path, self.pattern, origin, step > 0, self.moves, past)

    @work(thread=True, exclusive=True, group="jump", exit_on_error=False)
    def _search_worker(self, path: str, pattern: str, origin: int, forward: bool, moves: int,
                       past: bool = False) -> None:
        if past and forward:
            origin = line_end(path, origin)  # the next match is on a later line
        found = search(path, pattern, origin, forward)
        window = read_window(path, found[0]) if found is not None else None
        self.app.call_from_thread(self._match_found, path, pattern, moves, found, forward,
                                  window)

    def _match_found(self, path: str, pattern: str, moves: int, found: tuple[int, bool] | None,
                     forward: bool, window: Window | None) -> None:
        if path != self.path or pattern != self.pattern or moves != self.moves:
            return
        if found is None or window is None:
            self._bar(f"no match for {pattern!r} in the whole log")
            return
        self.match = found[0]
        self.follow = False
        self._show_window(window, CONTEXT_ROWS)
        wrapped = ("  search wrapped to the top" if forward else
                   "  search wrapped to the bottom") if found[1] else ""
        self._bar(f"match for {pattern!r}{wrapped}  (n next, N previous)")

    # -- keys: elsewhere -------------------------------------------------------------------
    def action_pager(self) -> None:
        """The whole log in the operator's pager, the app suspended meanwhile."""
        if not self.path:
            return
        command = pager_command(self.path)
        try:
            with self.app.suspend():
                subprocess.run(command, check=False)
        except SuspendNotSupported:
            self.notify(f"this terminal cannot hand over to a pager: run {shlex.join(command)}",
                        severity="warning", timeout=8, markup=False)
        except OSError as error:
            self.notify(f"could not run the pager {command[0]!r} ({error.strerror}): set "
                        f"$PAGER to one that is installed", severity="error", timeout=8,
                        markup=False)

    def action_copy_path(self) -> None:
        if not self.path:
            return
        self.app.copy_to_clipboard(self.path)
        self.notify(f"copied the log's path: {display_path(self.path)}", timeout=4,
                    markup=False)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
