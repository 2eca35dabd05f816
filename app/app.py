"""The flowtui Textual app: modes for the top-level screens, live refresh, themes."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textual import events, on
from textual.app import App, SystemCommand
from textual.message import Message
from textual.screen import Screen

from flowtui.app.backfills_screen import BackfillsScreen
from flowtui.app.datasets_screen import DatasetsScreen
from flowtui.app.acting import TaskActions
from flowtui.app.base import FlowScreen, ReadFailed
from flowtui.app.keys import KeyDone, KeyOrder
from flowtui.app.data import READ_ERRORS, Data, Header, read_problem
from flowtui.app.lists import (
    AlertsScreen, DagsScreen, ImportErrorsScreen, NowScreen, RunnerScreen, RunsScreen, SlaScreen,
)
from flowtui.app.operations import Operations
from flowtui.runner.clock import SYSTEM, Clock
from flowtui.runner.config import Config
from flowtui.store.views import ChangeMark
from flowtui.themes import CSS_PATH, THEMES

REFRESH_SECONDS = 1.0
MODE_NAMES = ("now", "dags", "runs", "alerts", "sla", "runner", "backfills", "datasets")


PREBUILD_AFTER = 1.0  # seconds after the first paint before other screens are built
PREBUILD_EVERY = 0.3  # between two of them, so keys typed meanwhile are not held up


class FlowtuiApp(App[None]):
    CSS_PATH = str(CSS_PATH)
    TITLE = "flowtui"
    MODES = {"now": NowScreen, "dags": DagsScreen, "runs": RunsScreen, "alerts": AlertsScreen,
             "sla": SlaScreen, "runner": RunnerScreen, "backfills": BackfillsScreen,
             "datasets": DatasetsScreen}
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, config: Config, *, read_only: bool = False, theme: str = "dark",
                 start_mode: str = "now", refresh_seconds: float = REFRESH_SECONDS,
                 clock: Clock = SYSTEM) -> None:
        super().__init__()
        self.config = config
        self.clock = clock
        self.read_only = read_only
        self.ops = Operations(config)
        self.start_mode = start_mode
        self.refresh_seconds = refresh_seconds
        self._last_change: ChangeMark | None = None
        self.read_problem: str | None = None  # why the last read of the store failed
        self.dag_ids: list[str] = []  # as the last poll read them (the palette offers them)
        self.last_read_at: float | None = None  # when a read last succeeded
        self.first_paint_at: float | None = None
        self._warmed = False
        self.last_looked = load_last_looked(config.home)
        self.keys = KeyOrder(self, super().on_event)
        for item in THEMES.values():
            self.register_theme(item)
        self.theme = THEMES.get(theme, THEMES["dark"]).name

    # -- data ------------------------------------------------------------------------------
    class StoreChecked(Message):
        """A poll read the change mark, the header and the DAGs the store knows."""

        def __init__(self, change: ChangeMark, header: Header, dag_ids: list[str]) -> None:
            super().__init__()
            self.change, self.header, self.dag_ids = change, header, dag_ids

    @contextmanager
    def reading(self) -> Iterator[Data]:
        """A read connection of the caller's own (a worker thread's), closed when it is done:
        none is left open between reads."""
        data = Data(self.config, self.read_only)
        try:
            yield data
        finally:
            data.close()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded:
            await self.keys.key(event)  # in typed order, each where the one before left focus
        else:
            await super().on_event(event)

    @on(KeyDone)
    async def _key_done(self) -> None:
        await self.keys.done()

    def on_mount(self) -> None:
        self.switch_mode(self.start_mode)
        self._poll()

    def on_unmount(self) -> None:
        save_last_looked(self.config.home, self.clock.now())

    def _poll(self) -> None:
        self.run_worker(self._check_changes, thread=True, exclusive=True, group="poll",
                        exit_on_error=False)

    def _check_changes(self) -> None:
        try:
            with self.reading() as data:
                change = data.changes()
                # The header on a timer of its own: a runner killed with -9 writes nothing, so
                # no change would ever repaint it.
                header = data.header(self.clock.now())
                dag_ids = data.views.dag_ids()
        except READ_ERRORS as error:
            self.post_message(ReadFailed(read_problem(error)))
            return
        finally:
            self.call_from_thread(self.set_timer, self.refresh_seconds, self._poll)
        self.post_message(self.StoreChecked(change, header, dag_ids))

    def shown_screen(self) -> FlowScreen | None:
        """The flowtui screen on top, if one is (a dialog or help over it: none; while the
        app starts or stops: none)."""
        stack = self._screen_stacks.get(self.current_mode) or []
        screen = stack[-1] if stack else None
        return screen if isinstance(screen, FlowScreen) else None

    @on(TaskActions.TaskOpened)
    def _open_task(self, message: TaskActions.TaskOpened) -> None:
        from flowtui.app.task_screen import TaskScreen

        self.push_screen(TaskScreen(message.task))

    @on(TaskActions.LogsOpened)
    def _open_log(self, message: TaskActions.LogsOpened) -> None:
        from flowtui.app.log_screen import LogScreen

        self.push_screen(LogScreen(message.task))

    @on(StoreChecked)
    def _checked(self, message: StoreChecked) -> None:
        self.read_succeeded()
        self.dag_ids = message.dag_ids
        screen = self.shown_screen()
        if screen is not None:
            screen.paint_health(message.header)
        if message.change != self._last_change:
            self._last_change = message.change
            if screen is not None:
                screen.store_changed(message.change)

    @on(ReadFailed)
    def _read_failed(self, message: ReadFailed) -> None:
        """Say why the store cannot be read; the next poll that reads it repaints the screen
        (what it shows meanwhile is the last good read)."""
        self.read_problem = message.problem
        self._last_change = None
        screen = self.shown_screen()
        if screen is not None:
            screen.paint_health(None)

    def read_succeeded(self) -> None:
        self.last_read_at = self.clock.now()
        if self.read_problem is not None:
            self.read_problem = None
            screen = self.shown_screen()
            if screen is not None:
                screen.paint_health(None)

    @property
    def last_change(self) -> ChangeMark | None:
        """The store's change counter as the app last saw it (events id, newest heartbeat)."""
        return self._last_change

    def painted(self, screen: Screen) -> None:
        if self.first_paint_at is None:
            self.first_paint_at = time.perf_counter()
        if not self._warmed:
            # Once the first screen is up, read the pipelines in the background (1,000 DAG
            # files take ~0.6 s), then build the other screens one by one while idle: a
            # screen's first build costs ~120 ms, paid here instead of after its key.
            self._warmed = True
            self.run_worker(self.ops.dags, thread=True, group="warm", exit_on_error=False)
            self.set_timer(PREBUILD_AFTER, self._prebuild_next)

    def _prebuild_next(self) -> None:
        init = getattr(self, "_init_mode", None)  # Textual's own step of switch_mode
        if init is None or not self.is_running:
            return
        for mode in self.MODES:
            if mode not in self._screen_stacks:
                try:
                    init(mode)
                except Exception:  # a later Textual may differ: the screen builds on its key
                    return
                self.set_timer(PREBUILD_EVERY, self._prebuild_next)
                return

    # -- navigation ------------------------------------------------------------------------
    def action_mode(self, name: str) -> None:
        """A number key opens that screen itself, never a stack left open there earlier."""
        self.switch_mode(name)
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def action_help(self) -> None:
        from flowtui.app.help import LOG_KEYS, HelpScreen
        from flowtui.app.log_screen import LogScreen

        screen = self.screen
        seen: dict[str, str] = {}
        for key, binding in screen._bindings:  # type: ignore[attr-defined]
            for b in binding if isinstance(binding, list) else [binding]:
                if b.description and b.id and b.action not in ("app.help",):
                    seen.setdefault(b.key_display or _key_name(key), b.description)
        lines = [(k, v) for k, v in seen.items()]
        if isinstance(screen, LogScreen):
            lines.append(("log", LOG_KEYS))
        self.push_screen(HelpScreen(lines, getattr(screen, "TITLE", "") or "flowtui"))

    def action_import_errors(self) -> None:
        self.push_screen(ImportErrorsScreen())

    def _open_dag(self, dag_id: str, action: str | None = None) -> None:
        from flowtui.app.dag_screen import DagScreen

        screen = DagScreen(dag_id)
        self.push_screen(screen)
        if action is not None:
            self.call_after_refresh(screen.run_action, action)

    def get_system_commands(self, screen: Screen) -> Any:
        """Every screen, every DAG and every action, from any screen (Textual's own extras
        that mean nothing here are left out; quit stays)."""
        for command in super().get_system_commands(screen):
            if command.title.lower() == "quit":
                yield command
        for index, name in enumerate(MODE_NAMES):
            yield SystemCommand(f"Go to {name} ({index})", f"Open the {name} screen",
                                lambda n=name: self.action_mode(n))
        yield SystemCommand("Import errors", "Files that do not load, and why",
                            self.action_import_errors)
        for dag_id in self.dag_ids:
            yield SystemCommand(f"DAG {dag_id}", "Open its grid and graph",
                                lambda d=dag_id: self._open_dag(d))
            if not self.read_only:
                for verb, action in (("Trigger", "trigger"), ("Backfill", "backfill"),
                                     ("Pause or unpause", "pause")):
                    yield SystemCommand(f"{verb} {dag_id}", f"{verb} the DAG {dag_id}",
                                        lambda d=dag_id, a=action: self._open_dag(d, a))
        for key, binding in screen._bindings:  # type: ignore[attr-defined]
            for b in binding if isinstance(binding, list) else [binding]:
                if b.description and not b.action.startswith("app.") and (
                        not self.read_only or b.action not in _MUTATING):
                    yield SystemCommand(f"{b.description} ({b.key_display or _key_name(key)})",
                                        f"{b.description} on this screen",
                                        lambda a=b.action, s=screen: s.run_action(a))
        for name in THEMES:
            yield SystemCommand(f"Theme: {name}", "Switch the colour theme",
                                lambda n=name: setattr(self, "theme", THEMES[n].name))


_MUTATING = {"clear", "retry", "mark", "kill", "trigger", "backfill", "pause", "ack", "resolve"}


def _key_name(key: str) -> str:
    return {"question_mark": "?", "slash": "/", "colon": ":", "left_square_bracket": "[",
            "right_square_bracket": "]", "space": "space", "escape": "esc", "home": "Home",
            "end": "End", "pageup": "PgUp", "pagedown": "PgDn", "left": "←", "right": "→",
            "up": "↑", "down": "↓"}.get(key, key)


def _seen_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "flowtui" / "last-looked.json"


def load_last_looked(home: Path) -> float | None:
    """When this user last closed the TUI on this home: Now marks what is newer as new."""
    try:
        value = json.loads(_seen_file().read_text()).get(str(home))
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def save_last_looked(home: Path, at: float) -> None:
    path = _seen_file()
    try:
        seen = json.loads(path.read_text())
        if not isinstance(seen, dict):
            seen = {}
    except (OSError, ValueError):
        seen = {}
    seen[str(home)] = at
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(seen))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home folder: nothing is marked new next time, nothing breaks


def make_app(config: Config, **options: Any) -> FlowtuiApp:
    """The one factory for the CLI and the tests."""
    return FlowtuiApp(config, **options)
