"""The base of every flowtui screen: the health line, shared keys, refresh on change."""
from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.widgets._footer import FooterKey
from textual.worker import Worker, WorkerState

from flowtui.app.data import READ_ERRORS, Data, Header, RunnerHealth, read_problem
from flowtui.app.render import ago, display_path
from flowtui.store.views import ChangeMark

NAV = [
    Binding("0", "app.mode('now')", "Now", show=False, id="mode-now"),
    Binding("1", "app.mode('dags')", "DAGs", show=False, id="mode-dags"),
    Binding("2", "app.mode('runs')", "Runs", show=False, id="mode-runs"),
    Binding("3", "app.mode('alerts')", "Alerts", show=False, id="mode-alerts"),
    Binding("4", "app.mode('sla')", "SLA", show=False, id="mode-sla"),
    Binding("5", "app.mode('runner')", "Runner", show=False, id="mode-runner"),
    Binding("6", "app.mode('backfills')", "Backfills", show=False, id="mode-backfills"),
    Binding("7", "app.mode('datasets')", "Datasets", show=False, id="mode-datasets"),
    Binding("question_mark", "app.help", "Help", id="help"),
    Binding("colon", "app.command_palette", "Palette", show=False, id="palette"),
    Binding("escape", "back", "Back", show=False, id="back"),
    Binding("q", "back_or_quit", "Quit", id="quit"),
]


def focus_now(widget: Any) -> None:
    """Move focus before the next queued key is handled. `Widget.focus` defers the move until
    after what is already queued, so keys typed ahead in one read (a fast typist, a slow SSH
    link) went to the widget that had focus before: `/gate⏎` lost its `gate`."""
    widget.screen.set_focus(widget)


class KeysFooter(Footer):
    """Textual's footer, rebuilt only when the keys it shows change, and without restyling
    each key as it mounts.

    Textual rebuilds the footer (every key a widget, then a layout of the whole screen) on
    each focus move, screen push and binding refresh, several times a frame when they come
    together: some 18 rebuilds a screen opened, most showing what was already there. Here
    the signals of one frame make one check, and the footer is rebuilt only when the keys
    shown differ. A new key also started compact and was then bound to the footer's (not
    compact) style, two full style passes a key (1.2 ms each): it gets its final style and
    class before it mounts (the palette's key, not bound to the footer, stays compact). It
    looks the same."""

    _check_pending = False
    _shown: tuple | None = None

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen and not self._check_pending:
            self._check_pending = True
            self.call_after_refresh(self._rebuild_if_changed)

    async def _rebuild_if_changed(self) -> None:
        self._check_pending = False
        if not self.is_attached:
            return
        shown = self._keys_shown()
        if shown != self._shown:
            self._shown = shown
            await self.recompose()

    def _keys_shown(self) -> tuple:
        """What ``compose`` would show: each key's display, text, action and state."""
        app = self.app
        return (self.compact, self.show_command_palette, tuple(
            (key, app.get_key_display(binding), binding.description, binding.action, enabled,
             tooltip, binding.group)
            for key, (_, binding, enabled, tooltip) in self.screen.active_bindings.items()
            if binding.show or key == app.COMMAND_PALETTE_BINDING))

    def compose(self) -> ComposeResult:
        for widget in super().compose():
            if isinstance(widget, FooterKey):
                compact = widget.has_class("-command-palette") or self.compact
                widget.set_reactive(FooterKey.compact, compact)
                widget.set_class(compact, "-compact", update=False)
            yield widget


class ReadFailed(Message):
    """A read of the store failed (posted to the app, which says so in the header)."""

    def __init__(self, problem: str) -> None:
        super().__init__()
        self.problem = problem


class FlowScreen(Screen):
    """A screen that fetches its data in a worker and repaints when the store changed."""

    BINDINGS = NAV
    TITLE = ""
    HINT = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Textual re-parses every CSS rule of the app (~40 ms) when a mode's screen is first
        # built, only because the new screen has not counted the app's CSS changes yet. The
        # rules apply to its widgets as they mount, and a later theme change still refreshes
        # every screen: the new screen is as up to date as the app.
        try:
            self._css_update_count = self.app._css_update_count
        except Exception:  # built outside a running app, or a Textual without the counter
            pass

    def compose(self) -> ComposeResult:
        yield Static("", id="health")
        yield Static(self.TITLE, classes="title")
        yield from self.body()
        if self.HINT:
            yield Static(self.HINT, classes="hint")
        yield KeysFooter()

    def body(self) -> ComposeResult:
        yield from ()

    _fetched_at_change: object = None

    def on_mount(self) -> None:
        self.reload()

    def on_screen_resume(self) -> None:
        if self._in_flight and not self.loaded:
            return  # shown while its first read runs: that read is what it paints
        if self._fetched_at_change is not None and self._fetched_at_change == self.app.last_change:
            # Nothing was written since this screen last read the store: show it as it is.
            self.paint_health(None)
            self.call_after_refresh(self.app.painted, self)
            return
        self.reload()

    # -- data ------------------------------------------------------------------------------
    class DataLoaded(Message):
        """A fetch finished: what ``show`` paints, the header, and the change it saw."""

        bubble = False

        def __init__(self, serial: int, result: Any, header: Header, change: ChangeMark) -> None:
            super().__init__()
            self.serial, self.result, self.header, self.change = serial, result, header, change

    _serial = 0  # of the newest fetch asked for: an older fetch's answer is not painted
    _shown_serial = -1

    @property
    def loaded(self) -> bool:
        """Whether a read of the store has been painted here."""
        return self._shown_serial >= 0

    def fetch(self, data: Data) -> Any:
        """Runs in a worker thread with its own read connection; returns what ``show`` gets."""
        return None

    def show(self, result: Any) -> None:
        """Runs on the main thread with what ``fetch`` returned."""

    _last_result: Any = None

    def repaint(self) -> None:
        """Paint the last read again at once (a filter changed): what is on screen matches what
        the next key acts on, before the fresh read arrives."""
        if self.loaded:
            self.show(self._last_result)

    _in_flight = False  # a fetch is running; a reload asked meanwhile runs once it is done
    _again = False  # a reload was asked while a fetch ran (a filter changed, ...)
    _again_for: ChangeMark | None = None  # the store changed to this while a fetch ran

    def reload(self) -> None:
        self._serial += 1
        if self._in_flight:
            # One read at a time: a second thread reading the same store and files beside the
            # first slows both (1,000 DAG files read three times at once took 4.9 s).
            self._again = True
            return
        self._in_flight = True
        self._fetch_worker(self._serial)

    def store_changed(self, change: ChangeMark) -> None:
        """The app saw the store at ``change``: read again unless this screen's read already
        saw it (a read that began after the change was written needs no second one)."""
        if self._fetched_at_change == change:
            return
        if self._in_flight:
            self._again_for = change  # decided when the running read says what it saw
            return
        self.reload()

    class FetchDone(Message):
        bubble = False

        def __init__(self, change: ChangeMark | None) -> None:
            super().__init__()
            self.change = change  # what the read saw (None: it failed)

    @on(FetchDone)
    def _fetch_done(self, message: FetchDone) -> None:
        self._in_flight = False
        again = self._again or (self._again_for is not None and self._again_for != message.change)
        self._again, self._again_for = False, None
        if again:
            self.reload()

    @work(thread=True, exclusive=True, group="fetch", exit_on_error=False)
    def _fetch_worker(self, serial: int) -> None:
        seen: ChangeMark | None = None  # set once the read has all it paints
        try:
            with self.app.reading() as data:
                change = data.changes()
                result = self.fetch(data)
                header = data.header(self.app.clock.now())
            seen = change
        except READ_ERRORS as error:
            self.app.post_message(ReadFailed(read_problem(error)))
            return
        finally:
            self.post_message(self.FetchDone(seen))
        self.post_message(self.DataLoaded(serial, result, header, change))

    @on(DataLoaded)
    def _loaded(self, message: DataLoaded) -> None:
        if message.serial < self._shown_serial:
            return  # a newer read was painted already
        self._shown_serial = message.serial
        self._fetched_at_change = message.change
        self.app.read_succeeded()
        self.paint_health(message.header)
        self._last_result = message.result
        self.show(message.result)
        self.call_after_refresh(self.app.painted, self)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.notify(f"{type(event.worker.error).__name__}: {event.worker.error}",
                        severity="error", timeout=8)

    def paint_health(self, header: Header | None) -> None:
        """The header: the runner's health from its heartbeat age, open alerts, read-only; or,
        while the store cannot be read, why (``header`` None keeps the last one known)."""
        if header is not None:
            self._header = header
        # None while the screen is still being composed, or already taken down (a poll's
        # answer may arrive then): its own read paints it.
        for line in self.query("#health").results(Static):
            line.update(header_text(self.app, self._header, self.app.read_problem))

    _header: Header | None = None

    # -- keys ------------------------------------------------------------------------------
    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_back_or_quit(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
        else:
            self.app.exit()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.app.read_only and action in MUTATING:
            return False
        return True


MUTATING = {"clear", "retry", "mark", "kill", "trigger", "backfill", "pause", "ack", "resolve"}


def header_text(app: Any, header: Header | None, problem: str | None = None) -> Text:
    text = Text("flowtui ", style="bold")
    if problem:
        # Said first, so a narrow terminal keeps it; the screen below is what was read last.
        text.append(f"⚠ {problem}, retrying", style="bold yellow")
        if app.last_read_at is not None:
            shown = time.strftime("%H:%M:%S", time.localtime(app.last_read_at))
            text.append(f" (shown as of {shown})")
        text.append("  ")
    elif header is not None:
        health = header.health
        if health.pid is None:
            text.append("✗ no runner", style="bold red")
            text.append(" (start 'flowtui runner')")
        elif not health.alive:
            text.append("✗ runner DOWN", style="bold red")
            text.append(f" (last heartbeat {ago(time_of(app, health), app.clock.now())})")
        elif health.problem:
            text.append("⚠ runner degraded", style="bold yellow")
            text.append(f" ({health.problem})")
        else:
            text.append("● runner", style="green")
            text.append(f" pid {health.pid}, beat {ago(time_of(app, health), app.clock.now())}")
        text.append("  ")
        text.append(f"alerts open: {header.open_alerts}",
                    style="bold red" if header.open_alerts else "")
    if app.read_only:
        text.append("  read-only", style="bold")
    text.append(f"  {display_path(app.config.home)}", style="dim")
    text.truncate(app.size.width or 80, overflow="ellipsis")
    return text


def time_of(app: Any, health: RunnerHealth) -> float | None:
    return None if health.heartbeat_age is None else app.clock.now() - health.heartbeat_age
