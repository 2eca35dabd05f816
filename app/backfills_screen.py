"""Backfills in the TUI: the screen that lists them and pauses, resumes, cancels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import work
from textual.binding import Binding
from textual.widgets import Static

from flowtui.app.backfill_dialog import change_backfill
from flowtui.app.base import NAV
from flowtui.app.dialogs import ConfirmDialog
from flowtui.app.lists import FILTER, TableScreen, sync_table
from flowtui.app.render import ago
from flowtui.runner import backfill as bf
from flowtui.runner.clock import iso


# -- the screen ----------------------------------------------------------------------------
@dataclass(slots=True)
class BackfillRow:
    backfill: Any
    progress: dict[str, int]
    timezone: str

    @property
    def total(self) -> int:
        p = self.progress
        return p["done"] + p["failed"] + p["running"] + p["left"]

    def label(self) -> str:
        b = self.backfill
        return f"backfill {b.id} of {b.dag_id} ({self.range()})"

    def range(self) -> str:
        b = self.backfill
        return (f"{(iso(b.start_date, self.timezone) or '')[:10]} … "
                f"{(iso(b.end_date, self.timezone) or '')[:10]}")


def bar(done: int, total: int, width: int = 10) -> str:
    filled = round(width * done / total) if total else width
    return "█" * filled + "░" * (width - filled)


class BackfillsScreen(TableScreen):
    """Every backfill of the home: its range, progress and state; pause, resume, cancel."""

    TITLE = "Backfills"
    HINT = "p pause · u resume · x cancel · b (on DAGs) starts one"
    COLUMNS = ("id", "dag", "range", "progress", "state", "created")
    BINDINGS = [*NAV,
                Binding("p", "change('pause')", "Pause", id="backfills-pause"),
                Binding("u,R", "change('resume')", "Resume (u or R)", id="backfills-resume"),
                Binding("x,ctrl+k", "change('cancel')", "Cancel (x or ctrl+k)",
                        id="backfills-cancel"),
                FILTER, *TableScreen.MOVES]

    def __init__(self) -> None:
        super().__init__()
        self.rows_by_key: dict[str, BackfillRow] = {}

    def fetch(self, data: Any) -> list[BackfillRow]:
        store = data.store
        zones = {d.dag_id: d.timezone for d in store.dags()}
        return [BackfillRow(b, bf.progress(store, b), zones.get(b.dag_id, "UTC"))
                for b in bf.list_backfills(store)]

    def show(self, items: list[BackfillRow]) -> None:
        rows = []
        self.rows_by_key = {}
        now = self.app.clock.now()
        for item in items:
            b, p = item.backfill, item.progress
            if not self.keep(b.dag_id, b.state):
                continue
            key = str(b.id)
            self.rows_by_key[key] = item
            finished = p["done"] + p["failed"]
            state = b.state + (f", {p['failed']} failed" if p["failed"] else "")
            rows.append((key, (key, b.dag_id, item.range(),
                               f"{finished}/{item.total} {bar(finished, item.total)}", state,
                               ago(b.created_at, now))))
        sync_table(self.table, rows)
        self.query_one(".title", Static).update(
            "Backfills" if items else "Backfills: none yet (press b on a DAG to start one)")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "change" and self.app.read_only:
            return False
        return super().check_action(action, parameters)

    def action_change(self, action: str) -> None:
        row = self.rows_by_key.get(self.current_key() or "")
        if row is None:
            return
        p = row.progress
        what = {"pause": [f"  no new run of it starts; {p['running']} running run(s) finish"],
                "resume": [f"  its {p['left']} queued run(s) start again, "
                           f"{row.backfill.parallelism} at a time"],
                "cancel": [f"  its {p['left']} queued run(s) are removed",
                           f"  its {p['running']} running run(s) are stopped",
                           f"  the {p['done'] + p['failed']} finished run(s) stay"]}[action]
        verb = action.capitalize()

        def done(ok: bool | None) -> None:
            if ok:
                self._change(row.backfill.id, action)

        self.app.push_screen(ConfirmDialog(f"{verb} {row.label()}?", what, verb), done)

    @work(thread=True, group="act", exit_on_error=False)
    def _change(self, backfill_id: int, action: str) -> None:
        try:
            message, severity = change_backfill(self.app.config, backfill_id, action), "information"
        except (bf.BackfillError, OSError) as exc:
            message, severity = str(exc), "error"
        self.app.call_from_thread(self.notify, message, severity=severity, timeout=6,
                                  markup=False)
        self.app.call_from_thread(self.reload)
