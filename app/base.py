"""The base of every flowtui screen: the health line, shared keys, refresh on change."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from flowtui.app.render import ago, display_path

NAV = [
    Binding("0", "app.mode('now')", "Now", show=False, id="mode-now"),
    Binding("1", "app.mode('dags')", "DAGs", show=False, id="mode-dags"),
    Binding("2", "app.mode('runs')", "Runs", show=False, id="mode-runs"),
    Binding("3", "app.mode('alerts')", "Alerts", show=False, id="mode-alerts"),
    Binding("4", "app.mode('sla')", "SLA", show=False, id="mode-sla"),
    Binding("5", "app.mode('runner')", "Runner", show=False, id="mode-runner"),
    Binding("6", "app.mode('backfills')", "Backfills", show=False, id="mode-backfills"),
    Binding("question_mark", "app.help", "Help", id="help"),
    Binding("colon", "app.command_palette", "Palette", show=False, id="palette"),
    Binding("escape", "back", "Back", show=False, id="back"),
    Binding("q", "back_or_quit", "Quit", id="quit"),
]


class FlowScreen(Screen):
    """A screen that fetches its data in a worker and repaints when the store changed."""

    BINDINGS = NAV
    TITLE = ""
    HINT = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="health")
        yield Static(self.TITLE, classes="title")
        yield from self.body()
        if self.HINT:
            yield Static(self.HINT, classes="hint")
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    _fetched_at_change: object = None

    def on_mount(self) -> None:
        self.reload()

    def on_screen_resume(self) -> None:
        if self._fetched_at_change is not None and self._fetched_at_change == self.app.last_change:
            # Nothing was written since this screen last read the store: show it as it is.
            self.call_after_refresh(self.app.painted, self)
            return
        self.reload()

    # -- data ------------------------------------------------------------------------------
    def fetch(self, data: Any) -> Any:
        """Runs in a worker thread with its own read connection; returns what ``show`` gets."""
        return None

    def show(self, result: Any) -> None:
        """Runs on the main thread with what ``fetch`` returned."""

    def reload(self) -> None:
        self._fetch_worker()

    @work(thread=True, exclusive=True, group="fetch", exit_on_error=False)
    def _fetch_worker(self) -> Any:
        data = self.app.thread_data()
        change = data.changes()
        return self.fetch(data), data.runner_health(), data.open_alerts(), change

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "fetch" and event.state == WorkerState.SUCCESS:
            result, health, alerts, change = worker.result
            self._fetched_at_change = change
            self.paint_health(health, alerts)
            self.show(result)
            self.call_after_refresh(self.app.painted, self)
        elif event.state == WorkerState.ERROR:
            self.notify(f"{type(worker.error).__name__}: {worker.error}", severity="error",
                        timeout=8)

    def paint_health(self, health: Any, alerts: int) -> None:
        """The header: the runner's health from its heartbeat age, open alerts, read-only."""
        self.query_one("#health", Static).update(header_text(self.app, health, alerts))

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


def header_text(app: Any, health: Any, alerts: int) -> Text:
    text = Text("flowtui ", style="bold")
    if health.pid is None:
        text.append("✗ no runner", style="bold red")
        text.append(" (start 'flowtui runner')")
    elif not health.alive:
        text.append("✗ runner DOWN", style="bold red")
        text.append(f" (last heartbeat {ago(time_of(health))})")
    elif health.problem:
        text.append("⚠ runner degraded", style="bold yellow")
        text.append(f" ({health.problem})")
    else:
        text.append("● runner", style="green")
        text.append(f" pid {health.pid}, beat {ago(time_of(health))}")
    text.append("  ")
    text.append(f"alerts open: {alerts}", style="bold red" if alerts else "")
    if app.read_only:
        text.append("  read-only", style="bold")
    text.append(f"  {display_path(app.config.home)}", style="dim")
    text.truncate(app.size.width or 80, overflow="ellipsis")
    return text


def time_of(health: Any) -> float | None:
    import time

    return None if health.heartbeat_age is None else time.time() - health.heartbeat_age
