"""A task instance: every try, the live reason it is not running, process and metadata."""
from __future__ import annotations

import json
import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from flowtui.app.acting import TASK_BINDINGS, TaskActions, TaskRef
from flowtui.app.base import NAV, FlowScreen
from flowtui.app.lists import sync_table
from flowtui.app.render import clock, display_path, state_text
from flowtui.render import visible
from flowtui.runner.durations import format_duration


class TaskScreen(TaskActions, FlowScreen):
    BINDINGS = [*NAV, *[b for b in TASK_BINDINGS if b.action not in ("open", "select")]]

    def __init__(self, ref: TaskRef) -> None:
        super().__init__()
        self.ref = ref
        self.selected: set[TaskRef] = set()
        self.TITLE = f"{ref.dag_id} / {ref.run_id} / {ref.task_id}"

    def body(self) -> ComposeResult:
        yield Static("", id="detail")
        table = DataTable(cursor_type="row", id="table")
        for name in ("try", "state", "start", "end", "duration", "exit", "pid", "cpu", "memory",
                     "reason"):
            table.add_column(name, key=name)
        yield table

    def fetch(self, data: Any) -> Any:
        tis = {t.task_id: t for t in data.task_instances(self.ref.run_pk)}
        return tis.get(self.ref.task_id), data.tries(self.ref.run_pk, self.ref.task_id)

    def show(self, result: Any) -> None:
        ti, tries = result
        if ti is None:
            self.query_one("#detail", Static).update("This task is not in the run any more.")
            return
        detail = Text()
        detail.append_text(state_text(self.app, ti.state))
        detail.append(f"   try {ti.try_number} of {ti.max_tries}   pool {ti.pool}")
        if ti.duration is not None:
            detail.append(f"   took {format_duration(ti.duration)}")
        if ti.state != "running":
            why = ti.reason or {"success": "finished successfully", "none": "not considered yet"
                                }.get(ti.state, "")
            detail.append(f"\nwhy not running: {visible(why)}" if ti.state not in (
                "success",) else f"\n{visible(why)}")
        last = tries[-1] if tries else None
        if last is not None:
            if last.progress is not None:
                filled = int(last.progress / 5)
                detail.append(f"\nprogress [{'█' * filled}{'·' * (20 - filled)}] "
                              f"{last.progress:.0f}%")
            if last.metadata:
                detail.append(f"\nmetadata {json.dumps(last.metadata)}")
            if last.end_date is None and last.pid:
                detail.append(f"\npid {last.pid}  heartbeat {clock(last.heartbeat_at)}")
            detail.append(f"\nlog {display_path(last.log_path)}", style="dim")
        self.query_one("#detail", Static).update(detail)
        rows = []
        for t in tries:
            took = (t.end_date or time.time()) - t.start_date
            rows.append((str(t.try_number), (
                str(t.try_number), state_text(self.app, t.state), clock(t.start_date),
                clock(t.end_date), format_duration(took),
                "-" if t.exit_code is None else str(t.exit_code), str(t.pid or "-"),
                "-" if t.cpu_percent is None else f"{t.cpu_percent:.0f}%",
                "-" if t.rss_bytes is None else f"{t.rss_bytes / 1e6:.0f} MB",
                visible(t.reason))))
        sync_table(self.query_one("#table", DataTable), rows)

    def current_task(self) -> TaskRef | None:
        return self.ref

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_logs()

    def action_logs(self) -> None:
        from flowtui.app.log_screen import LogScreen

        table = self.query_one("#table", DataTable)
        try_number = None
        if table.row_count:
            key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
            try_number = int(str(key.value))
        self.app.push_screen(LogScreen(self.ref, try_number))
