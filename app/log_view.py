"""The log viewer's widgets: the window of lines (each strip knowing its line's byte offset),
the path line, and the pager command."""
from __future__ import annotations

import os
import shlex
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widgets import RichLog, Static

from flowtui.app.render import display_path
from flowtui.runner.text import visible

EXCERPT_STYLE = Style(bold=True, color="red", reverse=True)  # reverse: visible in monochrome
MATCH_STYLE = Style(reverse=True)


def fit_path(path: str, width: int) -> str:
    """A path in one line of ``width`` cells: ``~`` for the home folder, shortened from the left
    with … at a folder boundary where one fits, so it never wraps mid-word."""
    text = display_path(path)
    if len(text) <= width:
        return text
    if width < 2:
        return "…"
    cut = text[len(text) - (width - 1):]
    slash = cut.find(os.sep)
    if 0 <= slash < len(cut) - 1:
        cut = cut[slash:]
    return "…" + cut


def pager_command(path: str, environ: Any = os.environ) -> list[str]:
    """The operator's ``$PAGER`` (default ``less``) with its own arguments, on ``path``."""
    return [*(shlex.split(environ.get("PAGER", "")) or ["less"]), path]


class PathLine(Static):
    """The log's path, fitted to the width it has."""

    DEFAULT_CSS = "PathLine { height: 1; padding: 0 1; }"

    def __init__(self, **options: Any) -> None:
        super().__init__("", **options)
        self.path = ""

    def show_path(self, path: str) -> None:
        self.path = path
        self.refresh()

    def render(self) -> Text:
        return Text(fit_path(self.path, self.content_region.width or 80), no_wrap=True)


class LogView(RichLog, can_focus=False):
    """The lines of the window; keys go to the screen, which knows what lies beyond them.

    Every line is written with its byte offset in the file as style meta, so a strip (wrapped or
    not) tells which line it belongs to and a line can be found among the strips.

    While ``pinned_to_end``, the view stays on the last line whatever changes its height (a
    horizontal scrollbar that appears once long lines are measured, a resize): the end of the
    log is what is on screen, not the line before it."""

    pinned_to_end = False

    def _size_updated(self, size: Any, virtual_size: Any, container_size: Any,
                      layout: bool = True) -> bool:
        changed = super()._size_updated(size, virtual_size, container_size, layout)
        self._stay_at_end()
        return changed

    def watch_show_horizontal_scrollbar(self, shown: bool) -> None:
        self._stay_at_end()

    def watch_virtual_size(self, size: Any) -> None:
        self._stay_at_end()

    def _stay_at_end(self) -> None:
        if self.pinned_to_end:
            self.call_after_refresh(self._to_end)

    def _to_end(self) -> None:
        if self.pinned_to_end:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def offset_at(self, y: int) -> int | None:
        """The offset of the line shown at strip ``y`` or, for a note, the next line."""
        for strip in self.lines[max(0, y):]:
            offset = _offset_of(strip)
            if offset is not None:
                return offset
        return None

    def strip_of(self, offset: int) -> int | None:
        """The first strip of the line at ``offset`` (or of the first line after it)."""
        for index, strip in enumerate(self.lines):
            at = _offset_of(strip)
            if at is not None and at >= offset:
                return index
        return None


def styled(offset: int | None, line: str, excerpt: int | None, pattern: str) -> Text:
    """One line of output: control characters as text, only the error excerpt's line in the
    error style, search matches marked."""
    shown = visible(line.rstrip("\n"))
    if offset is None:
        return Text(shown, style="dim italic")
    text = Text(shown, style=Style(meta={"at": offset}))
    if offset == excerpt:
        text.stylize(EXCERPT_STYLE)
    elif shown.startswith("::flowtui "):
        text.stylize("dim")
    if pattern:
        text.highlight_words([pattern], MATCH_STYLE, case_sensitive=False)
    return text




def _offset_of(strip: Strip) -> int | None:
    for segment in strip:
        style = segment.style
        if style is not None and style._meta is not None:
            at = style.meta.get("at")
            if at is not None:
                return int(at)
    return None
