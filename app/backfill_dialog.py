"""Starting a backfill from the TUI: its dialog, preview and the runner calls behind it (the
same functions as `flowtui backfill ...`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from flowtui.app.dialogs import Dialog, KeyButton, plain
from flowtui.runner import actions
from flowtui.runner import backfill as bf
from flowtui.runner.clock import iso
from flowtui.runner.config import Config
from flowtui.runner.model import DagSpec
from flowtui.store import Store


# -- what the keys do (the same runner functions as `flowtui backfill ...`) ---------------------
@dataclass(slots=True)
class Preview:
    runs: list[str]  # local start of each run it creates, in the order they start
    skipped: list[str]  # "date  why" for each date left alone
    error: str | None = None

    def summary(self) -> str:
        if self.error:
            return self.error
        skips = f"; skips {len(self.skipped)} date(s)" if self.skipped else ""
        if not self.runs:
            return f"nothing to run{skips}"
        return f"creates {len(self.runs)} run(s): {self.runs[0]} … {self.runs[-1]}{skips}"


def _check(config: Config, values: dict) -> str | None:
    for name in ("start", "end"):
        if not values[name]:
            return f"{name} date is empty: type it as YYYY-MM-DD"
    if not values["parallelism"].isdigit() or int(values["parallelism"]) < 1:
        return f"parallelism {values['parallelism']!r} must be a whole number, 1 or more"
    if values["pool"] and config.pool_size(values["pool"]) is None:
        return f"pool {values['pool']!r} is not defined; add it under [pools] in flowtui.toml"
    return None


def preview_backfill(config: Config, dag: DagSpec, values: dict) -> Preview:
    """What ``flowtui backfill --dry-run`` lists, for the dialog (runs in a worker thread)."""
    error = _check(config, values)
    if error:
        return Preview([], [], error)
    store = Store.open(config.database)
    try:
        plan, _ = bf.prepare(store, dag, values["start"], values["end"],
                             reprocess=values["reprocess"], order=values["order"])
    except bf.BackfillError as exc:
        return Preview([], [], str(exc))
    finally:
        store.close()
    starts = [iso(i.start, dag.timezone) or "" for i in plan.create]
    skips = [iso(i.start, dag.timezone) or "" for i, _ in plan.skip]
    # Whole days read as dates; anything finer keeps its time.
    cut = 10 if all(s[11:16] == "00:00" for s in starts + skips) else 16
    return Preview([s[:cut].replace("T", " ") for s in starts],
                   [f"{s[:cut].replace('T', ' ')}  {why}" for s, (_, why) in zip(skips, plan.skip)])


def start_backfill(config: Config, dag: DagSpec, values: dict) -> str:
    """Create the backfill as the CLI does and wake the runner; say what happened."""
    store = Store.open(config.database)
    try:
        # The CLI's call: checked, planned and queued in one write transaction, so a backfill
        # queued since the preview is planned around, never doubled.
        backfill_id, plan = bf.queue_backfill(
            store, dag, values["start"], values["end"], reprocess=values["reprocess"],
            order=values["order"], parallelism=int(values["parallelism"]),
            pool=values["pool"] or None)
        daemon = actions.live_daemon(store)
        if backfill_id is not None and daemon is not None:
            actions.wake(store, daemon)
    finally:
        store.close()
    if backfill_id is None:
        return f"nothing to backfill for {dag.dag_id}: every date was skipped since the preview"
    runner = ("the runner starts them" if daemon else
              "no runner is alive: start 'flowtui runner' to execute them")
    return (f"Backfill {backfill_id} of {dag.dag_id}: {len(plan.create)} run(s) queued, "
            f"at most {values['parallelism']} at once; {runner}. Press 6 to follow it.")


def change_backfill(config: Config, backfill_id: int, action: str) -> str:
    """Pause, resume or cancel, as ``flowtui backfill pause|resume|cancel ID`` does."""
    store = Store.open(config.database)
    try:
        change = bf.change_state(store, backfill_id, action)
    finally:
        store.close()
    stopping = f"; stopping {change.stopping} running run(s)" if change.stopping else ""
    return f"Backfill {backfill_id} of {change.backfill.dag_id} {change.state}{stopping}"


# -- the dialog ----------------------------------------------------------------------------
class BackfillDialog(Dialog[dict | None]):
    """Backfill: range, parallelism, order, reprocess and pool; Enter previews the runs, and
    Enter again (nothing edited since) starts them."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="backfill-dialog-cancel"),
                Binding("enter", "enter", "Preview, then start", show=False,
                        id="backfill-dialog-enter")]
    EDITING = "[enter] preview the runs   [tab] next field   [esc] cancel"

    def __init__(self, dag_id: str, preview: Callable[[dict], Preview]) -> None:
        super().__init__()
        self.dag_id, self.preview = dag_id, preview
        self.previewed: dict | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="backfill-dialog"):
            yield Label(plain(f"Backfill {self.dag_id}"), classes="title")
            with Horizontal(classes="field"):
                yield Label("start")
                yield Input(placeholder="YYYY-MM-DD", id="start", compact=True)
                yield Label("end")
                yield Input(placeholder="YYYY-MM-DD", id="end", compact=True)
                yield Label("parallelism")
                yield Input(value="1", id="parallelism", compact=True, restrict=r"[0-9]*")
            with Horizontal(classes="field"):
                yield Label("order")
                yield Select([("oldest first", "oldest-first"), ("newest first", "newest-first")],
                             value="oldest-first", allow_blank=False, id="order", compact=True)
                yield Label("reprocess")
                yield Select([("skip dates with runs", "none"), ("re-run failed", "failed"),
                              ("re-run all finished", "completed")], value="none",
                             allow_blank=False, id="reprocess", compact=True)
            with Horizontal(classes="field"):
                yield Label("pool")
                yield Input(placeholder="each task's own", id="pool", compact=True)
            yield Static(plain("Fill in the dates, then preview the runs."), id="count")
            with VerticalScroll(id="backfill-preview"):
                yield Static("", id="plan")
            yield Static("", id="error", classes="error")
            yield self.keys_line(self.EDITING)
            with Horizontal(classes="buttons"):
                yield KeyButton("Cancel", "esc", id="cancel")
                yield KeyButton("Preview", "enter", id="preview", variant="primary")
                yield KeyButton("Start", "enter", id="start-backfill", variant="warning",
                                disabled=True)

    def on_mount(self) -> None:
        self.query_one("#start", Input).focus()

    def _values(self) -> dict:
        text = {name: self.query_one(f"#{name}", Input).value.strip()
                for name in ("start", "end", "parallelism", "pool")}
        return {**text, "order": self.query_one("#order", Select).value,
                "reprocess": self.query_one("#reprocess", Select).value}

    @on(Input.Changed)
    @on(Select.Changed)
    def _edited(self) -> None:
        if self.previewed is not None and self.previewed != self._values():
            self.previewed = None
            self.query_one("#start-backfill", Button).disabled = True
            self.query_one(".keys", Static).update(plain(self.EDITING))

    @on(Input.Submitted)
    def action_enter(self) -> None:
        if self.previewed is not None and self.previewed == self._values():
            self._start()
        else:
            self._preview()

    @on(Button.Pressed, "#preview")
    def _preview(self) -> None:
        self.say("error", "")
        self.say("count", "working out the runs...")
        self._run_preview(self._values())

    class Previewed(Message):
        """The runs the values shown would create were worked out."""

        bubble = False

        def __init__(self, values: dict, preview: Preview) -> None:
            super().__init__()
            self.values, self.preview = values, preview

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def _run_preview(self, values: dict) -> None:
        self.post_message(self.Previewed(values, self.preview(values)))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "preview" and event.state == WorkerState.ERROR:
            self.say("count", "")
            self.say("error", f"cannot preview: {event.worker.error}")

    @on(Previewed)
    def _previewed(self, message: Previewed) -> None:
        values, result = message.values, message.preview
        if values != self._values():
            return  # edited while it was worked out: that preview is stale
        self.say("error", result.error or "")
        self.say("count", "" if result.error else result.summary())
        self.say("plan", "\n".join([f"  run   {r}" for r in result.runs] +
                                   [f"  skip  {s}" for s in result.skipped]))
        if result.error is None and result.runs:
            self.previewed = values
            self.query_one("#start-backfill", Button).disabled = False
            self.query_one(".keys", Static).update(plain(
                f"[enter] start these {len(result.runs)} run(s)   [esc] cancel   "
                "(after an edit, enter previews again)"))

    @on(Button.Pressed, "#start-backfill")
    def _start(self) -> None:
        if self.previewed is not None and self.previewed == self._values():
            self.dismiss(self.previewed)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
