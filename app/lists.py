"""The list screens: Now (triage), DAGs, runs, runner health, import errors, alerts, SLA."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from flowtui.app.acting import TASK_BINDINGS, DagActions, TaskActions, TaskRef
from flowtui.app.base import NAV, FlowScreen, focus_now
from flowtui.app.data import (
    READ_ERRORS, AlertRow, Data, NowItem, PoolUse, read_problem,
)
from flowtui.app.render import ago, clock, display_path, short_run, state_text
from flowtui.runner.text import GLYPHS
from flowtui.runner.durations import format_countdown, format_duration
from flowtui.runner.excerpt import Excerpt
from flowtui.store.models import AuditEntry, ImportError_, Run
from flowtui.store.models import RunnerRecord
from flowtui.store.views import DagSummary


def sync_table(table: DataTable, rows: list[tuple[str, tuple]],
               caps: dict[int, int] | None = None) -> None:
    """Update a table in place by row key: changed cells only; rebuilt only when rows were
    added, removed or reordered (keeps the cursor and avoids flicker on live updates).
    ``caps`` limits some columns' widths (by index), so the last columns stay on screen."""
    keys = [key for key, _ in rows]
    current = [str(k.value) for k in table.rows]
    _size_columns(table, rows, caps or {})
    with table.app.batch_update():
        if current != keys:
            # Keep the cursor on the same item (by key), wherever it moved; if it vanished, on
            # the row that took its place.
            cursor = table.cursor_row
            selected = current[cursor] if 0 <= cursor < len(current) else None
            table.clear()
            for key, cells in rows:
                table.add_row(*cells, key=key)
            if rows:
                row = keys.index(selected) if selected in keys else min(cursor, len(rows) - 1)
                table.move_cursor(row=row, animate=False)
            return
        columns = list(table.columns)
        for key, cells in rows:
            for column, old, new in zip(columns, table.get_row(key), cells):
                if str(old) != str(new):
                    table.update_cell(key, column, new)


def _size_columns(table: DataTable, rows: list[tuple[str, tuple]],
                  caps: dict[int, int], cap: int = 70) -> None:
    """Give each column the width of its widest cell now, instead of DataTable measuring new
    rows later when idle (a frame drawn before that shows every column cut to its label)."""
    from rich.cells import cell_len

    for index, column in enumerate(table.ordered_columns):
        limit = caps.get(index, cap)
        widest = cell_len(column.label.plain)
        for _, cells in rows:
            if index < len(cells):
                cell = cells[index]
                widest = max(widest, cell_len(cell.plain if isinstance(cell, Text) else str(cell)))
        width = min(widest, limit)
        if column.auto_width or column.width != width:
            column.auto_width = False
            column.width = width
            table.refresh()


class ListTable(DataTable):
    """A row table where Home and End go to the first and last row (DataTable scrolls sideways).
    Its columns are sized by ``sync_table`` from the text it puts in, so new rows are not
    measured again cell by cell (28 us a cell: 10,000 datasets took 1.7 s to show)."""

    def _update_dimensions(self, new_rows: Any) -> None:
        columns = list(self.columns.values())
        if not columns or any(c.auto_width for c in columns) or any(
                self.rows[k].auto_height for k in new_rows if k in self.rows):
            super()._update_dimensions(new_rows)
            return
        width = sum(c.get_render_width(self) for c in columns) + self._row_label_column_width
        self.virtual_size = Size(width, self._total_row_height +
                                 (self.header_height if self.show_header else 0))

    def action_scroll_home(self) -> None:
        self.action_scroll_top()

    def action_scroll_end(self) -> None:
        self.action_scroll_bottom()


class TableScreen(FlowScreen):
    COLUMNS: tuple[str, ...] = ()
    MOVES = [Binding("j", "move('down')", "Down", show=False, id="down"),
             Binding("k", "move('up')", "Up", show=False, id="up"),
             Binding("home", "move('top')", "First", show=False, id="first"),
             Binding("end", "move('bottom')", "Last", show=False, id="last"),
             Binding("pageup", "move('page_up')", "Page up", show=False, id="page-up"),
             Binding("pagedown", "move('page_down')", "Page down", show=False, id="page-down")]

    def action_move(self, where: str) -> None:
        table = self.table
        if table.row_count == 0:
            return
        if where == "top":
            table.move_cursor(row=0, animate=False)
        elif where == "bottom":
            table.move_cursor(row=table.row_count - 1, animate=False)
        else:
            getattr(table, f"action_cursor_{where}" if where in ("up", "down") else
                    f"action_{where}")()

    def body(self) -> ComposeResult:
        table = ListTable(cursor_type="row", zebra_stripes=True, id="table")
        for name in self.COLUMNS:
            table.add_column(name, key=name)
        yield table
        yield Static("", id="filter-shown")
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
        box.value = self.filter_text
        box.add_class("visible")
        focus_now(box)

    @on(Input.Submitted, "#filter")
    def _filter(self, event: Input.Submitted) -> None:
        self._set_filter(event.value.strip().lower())

    def _set_filter(self, text: str) -> None:
        self.filter_text = text
        box = self.query_one("#filter", Input)
        box.remove_class("visible")
        focus_now(self.table)
        self._paint_filter()
        self.repaint()
        self.reload()

    def _paint_filter(self) -> None:
        """A filter in force is always shown, with how to clear it."""
        label = self.query_one("#filter-shown", Static)
        label.update(Text(f"filter: {self.filter_text}   (esc clears)") if self.filter_text else "")
        label.set_class(bool(self.filter_text), "visible")

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_class("visible"):
            box.remove_class("visible")
            focus_now(self.table)
        elif self.filter_text:
            self._set_filter("")
        else:
            super().action_back()

    def keep(self, *values: str) -> bool:
        return not self.filter_text or any(self.filter_text in v.lower() for v in values)


FILTER = Binding("slash", "filter", "Filter", id="filter")


NOW_RANGES = (("1 h", 3600.0), ("24 h", 86400.0), ("7 d", 7 * 86400.0),
              ("since you last looked", None))
NOW_LABELS = {"failed": "failed", "up_for_retry": "retrying", "upstream_failed": "upstream",
              "running": "long"}


class NowScreen(TaskActions, TableScreen):
    """Triage: what failed, is retrying or runs unusually long, across all DAGs, and below the
    list the selected task's reason, error excerpt, log tail and countdown: the answer on
    screen with zero keys."""

    TITLE = "Now"
    COLUMNS = ("new", "when", "state", "task", "try", "why")
    BINDINGS = [*NAV, *TASK_BINDINGS, FILTER, *TableScreen.MOVES,
                Binding("T", "range", "Range", id="now-range")]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, Any] = {}
        self.selected: set[TaskRef] = set()
        self.range_index = 1
        self._detail_key: str | None = None

    def body(self) -> ComposeResult:
        yield from super().body()
        yield Static("", id="now-detail")

    def fetch(self, data: Data) -> list[NowItem]:
        label, span = NOW_RANGES[self.range_index]
        now = self.app.clock.now()
        since = self.app.last_looked if span is None else now - span
        return data.now_items(since or 0.0, now)

    def show(self, items: list) -> None:
        rows = []
        self.items = {}
        looked = self.app.last_looked
        now = self.app.clock.now()
        for item in items:
            if not self.keep(item.dag_id, item.task_id, item.state, item.reason):
                continue
            key = f"{item.run_pk}:{item.task_id}"
            self.items[key] = item
            new = Text("●", style="bold yellow") if looked and item.since > looked else ""
            state = Text(f"{GLYPHS.get(item.state, '?')} {NOW_LABELS.get(item.state, item.state)}",
                         style=_state_style(self.app, item.state))
            rows.append((key, (new, ago(item.since, now).replace(" ago", ""), state,
                               Text(f"{item.dag_id}.{item.task_id}", overflow="ellipsis"),
                               f"{item.try_number}/{item.max_tries}",
                               Text(item.reason or "", overflow="ellipsis"))))
        sync_table(self.table, rows, caps={3: 30})
        label = NOW_RANGES[self.range_index][0]
        fresh = sum(1 for i in self.items.values() if looked and i.since > looked)
        title = self.query_one(".title", Static)
        if not rows:
            title.update(f"Now · {label} (T changes): nothing failed, nothing retrying, "
                         "nothing running long ✓")
        else:
            news = f" · {fresh} new since you last looked" if fresh else ""
            title.update(f"Now · {len(rows)} need a look · {label} (T changes){news}")
        self._load_detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._load_detail()

    def action_range(self) -> None:
        self.range_index = (self.range_index + 1) % len(NOW_RANGES)
        self.reload()

    def _load_detail(self) -> None:
        key = self.current_key()
        item = self.items.get(key or "")
        if item is None:
            self._detail_key = None
            self.query_one("#now-detail", Static).update(
                "" if self.items else Text("Nothing needs you here. 1 DAGs · 2 runs · "
                                           "5 runner · ? keys", style="dim"))
            return
        self._detail_key = key
        self._detail_worker(key, item)

    class DetailLoaded(Message):
        """The selected task's newest try was read: its error excerpt and log tail, or why
        they could not be read."""

        bubble = False

        def __init__(self, key: str, item: NowItem, excerpt: Excerpt | None, lines: list[str],
                     problem: str = "") -> None:
            super().__init__()
            self.key, self.item, self.excerpt, self.lines = key, item, excerpt, lines
            self.problem = problem

    @work(thread=True, exclusive=True, group="now-detail", exit_on_error=False)
    def _detail_worker(self, key: str, item: NowItem) -> None:
        from flowtui.runner.excerpt import find_excerpt, tail

        attempt = None
        try:
            with self.app.reading() as data:
                tries = data.tries(item.run_pk, item.task_id)
        except READ_ERRORS as error:
            self.post_message(self.DetailLoaded(key, item, None, [], read_problem(error)))
            return
        if tries:
            attempt = max(tries, key=lambda t: t.try_number)
        excerpt = find_excerpt(attempt.log_path) if attempt and attempt.log_path else None
        lines = tail(attempt.log_path, 4) if attempt and attempt.log_path else []
        self.post_message(self.DetailLoaded(key, item, excerpt, lines))

    @on(DetailLoaded)
    def _paint_detail(self, message: DetailLoaded) -> None:
        from flowtui.runner.text import visible

        key, item, excerpt, lines = message.key, message.item, message.excerpt, message.lines
        if key != self._detail_key:
            return  # the cursor moved on meanwhile
        text = Text()
        text.append(f"{item.dag_id}.{item.task_id}", style="bold")
        text.append(f"  {short_run(item.run_id)}  try {item.try_number}/{item.max_tries}  ")
        text.append(NOW_LABELS.get(item.state, item.state), style=_state_style(self.app, item.state))
        if item.state == "up_for_retry" and item.next_try_at:
            left = item.next_try_at - self.app.clock.now()
            text.append(f"  retry in {format_countdown(left)}" if left > 0 else
                        "  retry due now", style="bold")
        text.append("\n")
        if item.reason:
            text.append(visible(item.reason) + "\n")
        if message.problem:
            text.append(f"{message.problem}: its log is not shown (retried on the next "
                        "refresh)\n", style="bold yellow")
        elif excerpt is not None:
            text.append("error: ", style="bold red")
            text.append(visible(excerpt.text) + "\n", style="bold red")
        elif item.state in ("failed", "up_for_retry"):
            text.append("no error line found in the log\n", style="dim")
        for line in lines:
            text.append("  " + visible(line)[:300] + "\n", style="dim")
        text.append("l full log · enter task detail · c clear · r retry · m mark", style="dim")
        self.query_one("#now-detail", Static).update(text)

    def current_task(self) -> TaskRef | None:
        key = self.current_key()
        item = self.items.get(key or "")
        return TaskRef(item.dag_id, item.run_pk, item.run_id, item.task_id) if item else None


def _state_style(app: Any, state: str) -> str:
    from flowtui.app.render import state_colour

    return state_colour(app, state)


@dataclass(slots=True)
class DagsRead:
    rows: list[DagSummary]
    # by DAG id: when its next scheduled run is created; None while the DAG files are still
    # being read (the rows come from the store at once, these columns follow)
    next_runs: dict[str, float | None] | None
    import_errors: int
    slas: dict[str, Any]  # by DAG id: the SLA status of its newest run
    unrecorded: int = 0  # DAGs in the pipelines folder that no runner has recorded yet


class DagsScreen(DagActions, TableScreen):
    TITLE = "DAGs"
    COLUMNS = ("dag", "next run", "last runs", "duration", "sla", "paused", "problems",
               "schedule")
    BINDINGS = [*NAV, Binding("enter", "open", "Open", id="open-dag"),
                Binding("t", "trigger", "Trigger", id="trigger"),
                Binding("b", "backfill", "Backfill", id="backfill"),
                Binding("p", "pause", "Pause/unpause", id="pause"),
                Binding("i", "errors", "Import errors", id="errors"), FILTER, *TableScreen.MOVES]

    def __init__(self) -> None:
        super().__init__()
        self.rows_by_key: dict[str, Any] = {}

    def fetch(self, data: Data) -> DagsRead:
        rows = data.dag_rows()
        errors = len(data.import_errors())
        if self.app.ops.loaded() is None:  # the files are not read yet: paint the store now
            return DagsRead(rows, None, errors, {})
        dags = self.app.ops.dags()  # what changed since is read again (a stat a file)
        now = self.app.clock.now()
        slas: dict[str, Any] = {}
        if any(d.sla for d in dags.values()):
            for item in data.sla_rows(dags, now):  # newest run first: keep that one per DAG
                slas.setdefault(item.dag_id, item)
        fires: dict[tuple, float | None] = {}  # most DAGs share a few schedules
        next_runs = {row.dag_id: next_fire(dags[row.dag_id], now, fires) for row in rows
                     if row.dag_id in dags and not row.paused}
        unrecorded = len(set(dags) - {row.dag_id for row in rows})
        return DagsRead(rows, next_runs, errors, slas, unrecorded)

    def _files_read(self) -> None:
        """In a worker: read the DAG files (or wait for the read under way), then read again
        with the columns they give."""
        self.app.ops.dags()
        self.app.call_from_thread(self.reload)

    def show(self, result: DagsRead) -> None:
        rows_data, error_count, slas = result.rows, result.import_errors, result.slas
        now = self.app.clock.now()
        if result.next_runs is None:
            self.run_worker(self._files_read, thread=True, group="dag-files",
                            exclusive=True, exit_on_error=False)
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
            if row.has_error:  # its file is there, and broken
                problems.append("file has errors: " + ("last good kept" if row.is_active
                                                       else "not loaded"))
            elif not row.is_active:
                problems.append("file gone")
            paused = ("⏸ " + (row.paused_reason or "paused")) if row.paused else ""
            if row.running:
                glyphs.append(f"{row.running}▶", style=_run_colour(self.app, "running"))
            if row.paused:
                upcoming = "paused"
            elif result.next_runs is None:
                upcoming = "…"  # the DAG files are being read
            else:
                next_run = result.next_runs.get(row.dag_id)
                upcoming = "-" if next_run is None else "in " + format_duration(
                    max(0.0, next_run - now))
            rows.append((row.dag_id, (Text(row.dag_id, overflow="ellipsis"), upcoming, glyphs,
                                      sparkline(row.durations),
                                      _sla_cell(slas.get(row.dag_id), now),
                                      paused, ", ".join(problems), row.schedule or "manual")))
        sync_table(self.table, rows, caps={0: 26, 5: 14})
        suffix = f"   ({error_count} import error(s): press i)" if error_count else ""
        if result.unrecorded:
            suffix += (f"   ({result.unrecorded} in the pipelines folder not recorded yet: "
                       "start a runner)")
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

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> Text:
    """Run durations as bars, oldest first (an unfinished run is a gap)."""
    known = [v for v in values if v is not None]
    if not known:
        return Text("")
    top = max(known) or 1.0
    return Text("".join(" " if v is None else SPARKS[min(7, int(v / top * 7.999))]
                        for v in values), style="cyan")


def next_fire(dag: Any, now: float, known: dict[tuple, float | None] | None = None
              ) -> float | None:
    """When the DAG's next scheduled run is created (None: manual, or no fire left).
    ``known``: answers already worked out in this read, by schedule, timezone and start."""
    from flowtui.runner.schedule import fire_times

    if not isinstance(dag.schedule, str) or not dag.schedule:
        return None
    after = max(now, dag.start_date or now)
    key = (dag.schedule, dag.timezone, after)
    if known is not None and key in known:
        return known[key]
    try:
        fire = next(fire_times(dag.schedule, dag.timezone, after), None)
    except Exception:  # the runner reports an unschedulable DAG; the list still shows it
        fire = None
    if known is not None:
        known[key] = fire
    return fire


def _sla_cell(item: Any, now: float) -> Text:
    """The DAG's SLA at a glance: a countdown to the deadline of its newest run, or the verdict."""
    if item is None:
        return Text("")
    if item.verdict in ("met", "missed") or item.run_state == "success":
        return Text(item.verdict, style="green" if item.verdict == "met" else "bold red")
    left = item.deadline - now
    style = "yellow" if item.verdict == "at risk" else ""
    label = f"⏱ {format_countdown(left)}" + (" at risk" if item.verdict == "at risk" else "")
    return Text(label, style=style)


def _run_colour(app: Any, state: str) -> str:
    from flowtui.app.render import state_colour

    return state_colour(app, {"queued": "queued", "running": "running", "success": "success",
                              "failed": "failed"}.get(state, "none"))


class RunsScreen(TableScreen):
    TITLE = "Runs, newest first"
    COLUMNS = ("dag", "run", "state", "started", "duration", "type")
    BINDINGS = [*NAV, Binding("enter", "open", "Open", id="open-run"), FILTER,
                *TableScreen.MOVES]

    def fetch(self, data: Data) -> list[Run]:
        return data.runs(300)

    def show(self, runs: list[Run]) -> None:
        now = self.app.clock.now()
        self.runs = {str(r.pk): r for r in runs}
        rows = [(str(r.pk), (Text(r.dag_id, overflow="ellipsis"), short_run(r.run_id),
                             state_text(self.app, r.state), clock(r.start_date),
                             format_duration((r.end_date or now) - r.start_date)
                             if r.start_date else "-", r.run_type))
                for r in runs if self.keep(r.dag_id, r.run_id, r.state, r.run_type)]
        sync_table(self.table, rows, caps={0: 24, 1: 24})

    def action_open(self) -> None:
        from flowtui.app.dag_screen import DagScreen

        key = self.current_key()
        run = getattr(self, "runs", {}).get(key or "")
        if run is not None:
            self.app.push_screen(DagScreen(run.dag_id, focus_run=run.pk))


@dataclass(slots=True)
class RunnerRead:
    runners: list[RunnerRecord]  # newest first
    pools: list[PoolUse]
    audit: list[AuditEntry]  # the newest operator actions
    tries: dict[int, int] = field(default_factory=dict)  # runner id -> tries running now


class RunnerScreen(TableScreen):
    TITLE = "Runners and pools"
    COLUMNS = ("id", "kind", "host", "pid", "started", "heartbeat", "state", "lease", "tries")
    BINDINGS = [*NAV, *TableScreen.MOVES]

    def body(self) -> ComposeResult:
        yield from super().body()
        yield Static("", id="detail")

    def fetch(self, data: Data) -> RunnerRead:
        return RunnerRead(data.runners(), data.pools(), data.audit(8), data.open_tries())

    def show(self, result: RunnerRead) -> None:
        runners, pools, audit = result.runners, result.pools, result.audit
        now = self.app.clock.now()
        rows = []
        for r in runners:
            lease = r.lease or 15.0
            silent = now - r.heartbeat_at
            # A runner is judged by the lease it declared: past it, another host takes its runs.
            state = ("stopped" if r.stopped_at else "alive" if silent < lease else
                     "lost" if r.lease else "silent")
            left = "-" if r.stopped_at or not r.lease else (
                f"{max(0.0, lease - silent):.0f}s left" if silent < lease else "expired")
            rows.append((str(r.id), (str(r.id), r.kind, Text(r.hostname), str(r.pid),
                                     clock(r.started_at), ago(r.heartbeat_at, now), state, left,
                                     str(result.tries.get(r.id, 0)) if not r.stopped_at
                                     else "-")))
        sync_table(self.table, rows)
        lines = ["pools: " + "   ".join(f"{p.name} {p.used}/{p.size}" for p in pools),
                 "recent operator actions:"]
        lines += [f"  {clock(a.at)}  {a.user}  {a.action}  {a.dag_id or ''} {a.run_id or ''} "
                  f"{a.task_id or ''}" for a in audit]
        self.query_one("#detail", Static).update("\n".join(lines))


class ImportErrorsScreen(FlowScreen):
    TITLE = "Import errors (fix these files; valid DAGs keep running)"

    def body(self) -> ComposeResult:
        yield Static("", id="graph")

    def fetch(self, data: Data) -> list[ImportError_]:
        return data.import_errors()

    def show(self, errors: list[ImportError_]) -> None:
        from flowtui.runner.text import visible

        text = "\n\n".join(
            f"{display_path(e.fileloc)}:{e.line}\n  {visible(e.message)}" if e.line else
            f"{display_path(e.fileloc)}\n  {visible(e.message)}"
            for e in errors) or "No import errors ✓"
        self.query_one("#graph", Static).update(Text(text))


class AlertsScreen(TableScreen):
    TITLE = "Alerts: open and acked, newest first (a acks, R resolves)"
    COLUMNS = ("id", "state", "kind", "where", "summary", "next step", "level", "age",
               "severity", "deliveries")
    BINDINGS = [*NAV, Binding("a", "ack", "Ack", id="ack"),
                Binding("R", "resolve", "Resolve", id="resolve"), FILTER, *TableScreen.MOVES]

    def fetch(self, data: Data) -> list[AlertRow]:
        return data.alert_rows()

    def show(self, rows_read: list[AlertRow]) -> None:
        alerts = [row.alert for row in rows_read]
        self.alerts = {str(a.id): a for a in alerts}
        deliveries = {row.alert.id: row.deliveries for row in rows_read}
        now = self.app.clock.now()
        rows = []
        for a in alerts:
            where = " / ".join(x for x in (a.dag_id, short_run(a.run_id) if a.run_id else "",
                                           a.task_id) if x)
            if not self.keep(where, a.kind, a.state, a.summary):
                continue
            colour = {"critical": "bold red", "error": "red", "warning": "yellow"}.get(
                a.severity, "")
            nxt = ("-" if a.next_step_at is None else
                   f"in {format_duration(max(0.0, a.next_step_at - now))}")
            state = a.state + (f" by {a.acked_by}" if a.acked_by else "")
            rows.append((str(a.id), (str(a.id), Text(state, style=colour), a.kind,
                                     Text(where, overflow="ellipsis"),
                                     Text(a.summary, overflow="ellipsis"), nxt, str(a.level),
                                     ago(a.created_at, now), Text(a.severity, style=colour),
                                     deliveries[a.id] or "-")))
        sync_table(self.table, rows, caps={1: 12, 2: 12, 3: 22, 4: 36})
        self.query_one(".title", Static).update(self.TITLE if rows else "Alerts: none open ✓")

    def _current(self) -> Any:
        return getattr(self, "alerts", {}).get(self.current_key() or "")

    def action_ack(self) -> None:
        self._set("acked", "Ack", "stops its escalation and acknowledges the page")

    def action_resolve(self) -> None:
        self._set("resolved", "Resolve", "closes it and resolves the page")

    def _set(self, state: str, verb: str, what: str) -> None:
        from flowtui.app.dialogs import ConfirmDialog

        alert = self._current()
        if alert is None:
            return

        def done(ok: bool | None) -> None:
            if ok:
                self._apply(alert.id, state)

        lines = [f"  {alert.kind} {alert.dag_id} {alert.task_id}", f"  {what}"]
        self.app.push_screen(ConfirmDialog(f"{verb} alert {alert.id}?", lines, verb), done)

    @work(thread=True, group="act", exit_on_error=False)
    def _apply(self, alert_id: int, state: str) -> None:
        try:
            self.app.ops.set_alert(alert_id, state)
        except Exception as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=8)
            return
        self.app.call_from_thread(self.notify, f"alert {alert_id} {state}", timeout=4)
        self.app.call_from_thread(self.reload)


def zoned(ts: float | None) -> str:
    """A time of day with its timezone (detail views say which clock they mean)."""
    if ts is None:
        return "-"
    return time.strftime("%H:%M %Z", time.localtime(ts))


class SlaScreen(TableScreen):
    TITLE = "SLA: deadline, time left, predicted finish, critical path"
    COLUMNS = ("verdict", "dag", "run", "deadline", "left", "predicted", "critical path")
    BINDINGS = [*NAV, FILTER, *TableScreen.MOVES]

    def fetch(self, data: Data) -> list:
        return data.sla_rows(self.app.ops.dags(), self.app.clock.now())

    def show(self, items: list) -> None:
        now = self.app.clock.now()
        rows = []
        for i in items:
            if not self.keep(i.dag_id, i.run_id, i.verdict):
                continue
            colour = {"missed": "bold red", "at risk": "yellow", "met": "green",
                      "on track": "green"}.get(i.verdict, "")
            left = i.deadline - now
            rows.append((f"{i.dag_id}:{i.run_id}", (
                Text(i.verdict, style=colour), Text(i.dag_id, overflow="ellipsis"),
                short_run(i.run_id), zoned(i.deadline),
                format_countdown(left) if left > 0 else f"-{format_countdown(-left)}",
                zoned(i.predicted) if i.predicted else "-",
                " -> ".join(i.critical_path) or "-")))
        sync_table(self.table, rows, caps={1: 20, 2: 20})
        self.query_one(".title", Static).update(
            self.TITLE if rows else "SLA: no run with an SLA in the last day "
                                    "(sla: {deadline: 08:00} or {within: 2h})")
