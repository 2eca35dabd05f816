"""The list screens: Now (triage), DAGs, runs, runner health, import errors, alerts, SLA."""
from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static

from flowtui.app.acting import TASK_BINDINGS, DagActions, TaskActions, TaskRef
from flowtui.app.base import NAV, FlowScreen
from flowtui.app.render import ago, clock, short_run, state_text
from flowtui.render import GLYPHS
from flowtui.runner.durations import format_duration


def sync_table(table: DataTable, rows: list[tuple[str, tuple]]) -> None:
    """Update a table in place by row key: changed cells only; rebuilt only when rows were
    added, removed or reordered (keeps the cursor and avoids flicker on live updates)."""
    keys = [key for key, _ in rows]
    current = [str(k.value) for k in table.rows]
    _size_columns(table, rows)
    with table.app.batch_update():
        if current != keys:
            cursor = table.cursor_row
            table.clear()
            for key, cells in rows:
                table.add_row(*cells, key=key)
            if rows:
                table.move_cursor(row=min(cursor, len(rows) - 1))
            return
        columns = list(table.columns)
        for key, cells in rows:
            for column, old, new in zip(columns, table.get_row(key), cells):
                if str(old) != str(new):
                    table.update_cell(key, column, new)


def _size_columns(table: DataTable, rows: list[tuple[str, tuple]], cap: int = 70) -> None:
    """Give each column the width of its widest cell now, instead of DataTable measuring new
    rows later when idle (a frame drawn before that shows every column cut to its label)."""
    from rich.cells import cell_len

    for index, column in enumerate(table.ordered_columns):
        widest = cell_len(column.label.plain)
        for _, cells in rows:
            if index < len(cells):
                cell = cells[index]
                widest = max(widest, cell_len(cell.plain if isinstance(cell, Text) else str(cell)))
        width = min(widest, cap)
        if column.auto_width or column.width != width:
            column.auto_width = False
            column.width = width
            table.refresh()


class TableScreen(FlowScreen):
    COLUMNS: tuple[str, ...] = ()

    def body(self) -> ComposeResult:
        table = DataTable(cursor_type="row", zebra_stripes=True, id="table")
        for name in self.COLUMNS:
            table.add_column(name, key=name)
        yield table
        yield Input(placeholder="filter (enter to apply, esc to close)", id="filter")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if hasattr(self, "action_open"):
            self.action_open()

    @property
    def table(self) -> DataTable:
        return self.query_one("#table", DataTable)

    def current_key(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return str(key.value)

    # -- filter ----------------------------------------------------------------------------
    filter_text = ""

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("visible")
        box.focus()

    @on(Input.Submitted, "#filter")
    def _filter(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip().lower()
        event.input.remove_class("visible")
        self.table.focus()
        self.reload()

    def keep(self, *values: str) -> bool:
        return not self.filter_text or any(self.filter_text in v.lower() for v in values)


FILTER = Binding("slash", "filter", "Filter", id="filter")


class NowScreen(TaskActions, TableScreen):
    """Triage: what failed, is retrying or runs unusually long, across all DAGs."""

    TITLE = "Now: failed, retrying and unusually long tasks, newest first (last 24 h)"
    COLUMNS = ("when", "state", "dag", "task", "run", "try", "why")
    BINDINGS = [*NAV, *TASK_BINDINGS, FILTER]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, Any] = {}
        self.selected: set[TaskRef] = set()

    def fetch(self, data: Any) -> Any:
        return data.now_items(time.time() - 86400)

    def show(self, items: list) -> None:
        rows = []
        self.items = {}
        for item in items:
            if not self.keep(item.dag_id, item.task_id, item.state, item.reason):
                continue
            key = f"{item.run_pk}:{item.task_id}"
            self.items[key] = item
            rows.append((key, (ago(item.since), state_text(self.app, item.state), item.dag_id,
                               item.task_id, short_run(item.run_id),
                               f"{item.try_number}/{item.max_tries}",
                               Text(item.reason or "", overflow="ellipsis"))))
        sync_table(self.table, rows)
        if not rows:
            self.query_one(".title", Static).update(
                "Now: nothing failed, nothing retrying, nothing running long in the last 24 h ✓")
        else:
            self.query_one(".title", Static).update(self.TITLE)

    def current_task(self) -> TaskRef | None:
        key = self.current_key()
        item = self.items.get(key or "")
        return TaskRef(item.dag_id, item.run_pk, item.run_id, item.task_id) if item else None


class DagsScreen(DagActions, TableScreen):
    TITLE = "DAGs"
    COLUMNS = ("dag", "schedule", "last runs", "running", "paused", "problems")
    BINDINGS = [*NAV, Binding("enter", "open", "Open", id="open-dag"),
                Binding("t", "trigger", "Trigger", id="trigger"),
                Binding("b", "backfill", "Backfill", id="backfill"),
                Binding("p", "pause", "Pause/unpause", id="pause"),
                Binding("i", "errors", "Import errors", id="errors"), FILTER]

    def __init__(self) -> None:
        super().__init__()
        self.rows_by_key: dict[str, Any] = {}

    def fetch(self, data: Any) -> Any:
        return data.dag_rows(), len(data.import_errors())

    def show(self, result: Any) -> None:
        rows_data, error_count = result
        rows = []
        self.rows_by_key = {}
        for row in rows_data:
            if not self.keep(row.dag_id, row.schedule or ""):
                continue
            self.rows_by_key[row.dag_id] = row
            glyphs = Text()
            for state in row.last_states:
                glyphs.append(GLYPHS.get(state, "?") + " ", style=f"{_run_colour(self.app, state)}")
            problems = []
            if row.has_error:
                problems.append("file has errors")
            if not row.is_active:
                problems.append("file gone")
            paused = ("⏸ " + (row.paused_reason or "paused")) if row.paused else ""
            rows.append((row.dag_id, (row.dag_id, row.schedule or "manual", glyphs,
                                      str(row.running or ""), paused, ", ".join(problems))))
        sync_table(self.table, rows)
        suffix = f"   ({error_count} import error(s): press i)" if error_count else ""
        self.query_one(".title", Static).update(f"DAGs{suffix}")

    def _dag_id(self) -> str | None:
        return self.current_key()

    def _paused(self, dag_id: str) -> bool:
        row = self.rows_by_key.get(dag_id)
        return bool(row and row.paused)

    def action_open(self) -> None:
        from flowtui.app.dag_screen import DagScreen

        dag_id = self._dag_id()
        if dag_id:
            self.app.push_screen(DagScreen(dag_id))

    def action_errors(self) -> None:
        self.app.push_screen(ImportErrorsScreen())

def _run_colour(app: Any, state: str) -> str:
    from flowtui.app.render import state_colour

    return state_colour(app, {"queued": "queued", "running": "running", "success": "success",
                              "failed": "failed"}.get(state, "none"))


class RunsScreen(TableScreen):
    TITLE = "Runs, newest first"
    COLUMNS = ("dag", "run", "type", "state", "started", "duration")
    BINDINGS = [*NAV, Binding("enter", "open", "Open", id="open-run"), FILTER]

    def fetch(self, data: Any) -> Any:
        return data.runs(300)

    def show(self, runs: list) -> None:
        self.runs = {str(r.pk): r for r in runs}
        rows = [(str(r.pk), (r.dag_id, r.run_id, r.run_type, state_text(self.app, r.state),
                             clock(r.start_date),
                             format_duration((r.end_date or time.time()) - r.start_date)
                             if r.start_date else "-"))
                for r in runs if self.keep(r.dag_id, r.run_id, r.state, r.run_type)]
        sync_table(self.table, rows)

    def action_open(self) -> None:
        from flowtui.app.dag_screen import DagScreen

        key = self.current_key()
        run = getattr(self, "runs", {}).get(key or "")
        if run is not None:
            self.app.push_screen(DagScreen(run.dag_id, focus_run=run.pk))


class RunnerScreen(TableScreen):
    TITLE = "Runners and pools"
    COLUMNS = ("id", "kind", "host", "pid", "started", "heartbeat", "state")
    BINDINGS = [*NAV]

    def body(self) -> ComposeResult:
        yield from super().body()
        yield Static("", id="detail")

    def fetch(self, data: Any) -> Any:
        return data.runners(), data.pools(), data.audit(8)

    def show(self, result: Any) -> None:
        runners, pools, audit = result
        rows = []
        for r in runners:
            state = "stopped" if r[6] else ("alive" if time.time() - r[5] < 15 else "silent")
            rows.append((str(r[0]), (str(r[0]), r[1], r[2], str(r[3]), clock(r[4]), ago(r[5]),
                                     state)))
        sync_table(self.table, rows)
        lines = ["pools: " + "   ".join(f"{p.name} {p.used}/{p.size}" for p in pools),
                 "recent operator actions:"]
        lines += [f"  {clock(a[0])}  {a[1]}  {a[2]}  {a[3]} {a[4]} {a[5]}" for a in audit]
        self.query_one("#detail", Static).update("\n".join(lines))


class ImportErrorsScreen(FlowScreen):
    TITLE = "Import errors (fix these files; valid DAGs keep running)"

    def body(self) -> ComposeResult:
        yield Static("", id="graph")

    def fetch(self, data: Any) -> Any:
        return data.import_errors()

    def show(self, errors: list) -> None:
        from flowtui.render import visible

        text = "\n\n".join(f"{f}:{line}\n  {visible(msg)}" if line else f"{f}\n  {visible(msg)}"
                           for f, line, msg in errors) or "No import errors ✓"
        self.query_one("#graph", Static).update(Text(text))


class AlertsScreen(FlowScreen):
    TITLE = "Alerts"

    def body(self) -> ComposeResult:
        yield Static("", id="graph")

    def fetch(self, data: Any) -> Any:
        return data.open_alerts()

    def show(self, count: int) -> None:
        self.query_one("#graph", Static).update(
            f"{count} open alert(s).\n\nAlert policies and channels are configured in "
            "flowtui.toml (section 7 of the product contract); until they are, failures show "
            "on the Now screen (0).")


class SlaScreen(FlowScreen):
    TITLE = "SLA"

    def body(self) -> ComposeResult:
        yield Static("", id="graph")

    def fetch(self, data: Any) -> Any:
        return [r for r in data.dag_rows() if r]

    def show(self, rows: list) -> None:
        self.query_one("#graph", Static).update(
            "SLA deadlines (sla: {deadline: ...} or {within: ...} in a DAG) and predicted "
            "finishes appear here once SLA tracking is enabled for this home.")
