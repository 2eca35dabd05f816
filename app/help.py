"""``?``: every key of the screen below, with what it does."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

LOG_KEYS = ("F follow · e error line · / search the whole log · n/N next/previous (wraps) · "
            "[ ] tries · w wrap · o pager · y copy path · Home/g End/G")


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help-close")]

    def __init__(self, bindings: list[tuple[str, str]], title: str) -> None:
        super().__init__()
        self.bindings_list = bindings
        self.title_text = title

    def compose(self) -> ComposeResult:
        width = max((len(k) for k, _ in self.bindings_list), default=4) + 2
        cells = [f"{key:<{width}} {text}" for key, text in self.bindings_list]
        half = (len(cells) + 1) // 2
        column = max((len(c) for c in cells[:half]), default=0) + 3
        lines = [f"{left:<{column}}{right}" for left, right in
                 zip(cells[:half], cells[half:] + [""])]
        with Vertical(classes="dialog"):
            yield Label(f"Keys: {self.title_text}"[:70], classes="title")
            with VerticalScroll(classes="changes"):
                yield Static("\n".join(lines))
            yield Static("\nctrl+p or : opens the command palette (every action); "
                         "ctrl+q quits.", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
