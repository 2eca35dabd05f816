"""A DAG: its grid of runs x tasks, its graph with live states and the critical path, a chart
of recent run durations, and a Gantt view of one run."""
from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from flowtui.app.acting import TASK_BINDINGS, DagActions, TaskActions, TaskRef
from flowtui.app.base import NAV, FlowScreen
from flowtui.app.render import state_colour, state_text
from flowtui.render import GLYPHS
from flowtui.runner.durations import format_duration

VIEWS = ("grid", "graph", "chart", "gantt")


class DagScreen(DagActions, TaskActions, FlowScreen):
    BINDINGS = [*NAV, *TASK_BINDINGS,
                Binding("g", "toggle_view", "Grid/graph", id="grid-graph"),
                Binding("d", "durations", "Durations", id="durations"),
                Binding("D", "view('chart')", "Run chart", id="chart"),
                Binding("G", "view('gantt')", "Gantt", id="gantt"),
                Binding("t", "trigger", "Trigger", id="dag-trigger"),
                Binding("b", "backfill", "Backfill", id="dag-backfill"),
                Binding("p", "pause", "Pause/unpause", id="dag-pause")]

    def __init__(self, dag_id: str, focus_run: int | None = None) -> None:
        super().__init__()
        self.dag_id = dag_id
        self.focus_run = focus_run
        self.view = "grid"
        self.show_durations = False
        self.selected: set[TaskRef] = set()
        self.grid_data: Any = None
        self.TITLE = f"DAG {dag_id}"

    def body(self) -> ComposeResult:
        yield DataTable(cursor_type="cell", id="grid")
        with VerticalScroll(id="graph-scroll"):
            yield Static("", id="graph")
        yield Static("", id="detail")

    def on_mount(self) -> None:
        self.query_one("#graph-scroll").display = False
        super().on_mount()

    # -- data ------------------------------------------------------------------------------
    def fetch(self, data: Any) -> Any:
        try:
            dag = self.app.ops.dag(self.dag_id)
            order = dag.topological_order()
        except Exception:
            dag, order = None, []
        grid = data.grid(self.dag_id, order, limit=25)
        durations = data.durations(self.dag_id, 40)
        history = {}
        for task_id in grid.task_ids:
            history[task_id] = [ti.duration for (pk, t), ti in grid.cells.items()
                                if t == task_id and ti.state == "success" and ti.duration]
        return dag, grid, durations, history

    def show(self, result: Any) -> None:
        self.dag, self.grid_data, self.durations, self.history = result
        self._paint()

    def _paint(self) -> None:
        grid = self.grid_data
        if grid is None:
            return
        title = f"DAG {self.dag_id}  view: {self.view}  (g grid/graph, D chart, G gantt)"
        self.query_one(".title", Static).update(title)
        table = self.query_one("#grid", DataTable)
        scroll = self.query_one("#graph-scroll")
        table.display = self.view == "grid"
        scroll.display = self.view != "grid"
        if self.view == "grid":
            self._paint_grid(table, grid)
        elif self.view == "graph":
            self.query_one("#graph", Static).update(self._graph_text())
        elif self.view == "chart":
            self.query_one("#graph", Static).update(self._chart_text())
        else:
            self.query_one("#graph", Static).update(self._gantt_text())
        self._paint_detail()

    def _paint_grid(self, table: DataTable, grid: Any) -> None:
        columns = [str(run.pk) for run in grid.runs]
        if [str(c.value) for c in table.columns][1:] != columns or table.row_count != len(grid.task_ids):
            cursor = table.cursor_coordinate
            table.clear(columns=True)
            table.add_column("task", key="task")
            for run in grid.runs:
                label = (run.run_id.split("__", 1)[-1][:10])
                table.add_column(Text(label[5:] if len(label) >= 10 else label, style=
                                      state_colour(self.app, run.state)), key=str(run.pk))
            for task_id in grid.task_ids:
                table.add_row(*self._grid_cells(grid, task_id), key=task_id)
            if self.focus_run is not None and str(self.focus_run) in columns:
                table.move_cursor(row=0, column=columns.index(str(self.focus_run)) + 1)
                self.focus_run = None
            elif grid.runs:
                table.move_cursor(row=min(cursor.row, table.row_count - 1),
                                  column=max(1, min(cursor.column or len(columns),
                                                    len(columns))))
            return
        for task_id in grid.task_ids:
            for column, cell in zip(["task", *columns], self._grid_cells(grid, task_id)):
                if str(table.get_cell(task_id, column)) != str(cell):
                    table.update_cell(task_id, column, cell)

    def _grid_cells(self, grid: Any, task_id: str) -> list[Any]:
        cells: list[Any] = [task_id]
        for run in grid.runs:
            ti = grid.cells.get((run.pk, task_id))
            if ti is None:
                cells.append(" ")
                continue
            mark = "*" if TaskRef(self.dag_id, run.pk, run.run_id, task_id) in self.selected else ""
            text = Text(GLYPHS.get(ti.state, "?") + mark, style=state_colour(self.app, ti.state))
            if self.show_durations and ti.duration is not None:
                text.append(f" {format_duration(ti.duration)}", style="dim")
            cells.append(text)
        return cells

    def refresh_selection(self) -> None:
        self._paint()

    def _selected_run(self) -> Any:
        grid = self.grid_data
        if grid is None or not grid.runs:
            return None
        if self.view == "grid":
            column = self.query_one("#grid", DataTable).cursor_coordinate.column
            if column >= 1 and column - 1 < len(grid.runs):
                return grid.runs[column - 1]
        return grid.runs[-1]

    def current_task(self) -> TaskRef | None:
        grid = self.grid_data
        run = self._selected_run()
        if grid is None or run is None:
            return None
        if self.view == "grid":
            row = self.query_one("#grid", DataTable).cursor_coordinate.row
            if row >= len(grid.task_ids):
                return None
            task_id = grid.task_ids[row]
        else:
            failed = [t for t in grid.task_ids if (grid.cells.get((run.pk, t)) and
                      grid.cells[(run.pk, t)].state in ("failed", "up_for_retry", "running"))]
            task_id = failed[0] if failed else grid.task_ids[0]
        return TaskRef(self.dag_id, run.pk, run.run_id, task_id)

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        event.stop()
        if event.coordinate.column == 0:
            return
        self.action_open()

    def on_data_table_cell_highlighted(self) -> None:
        self._paint_detail()

    def _paint_detail(self) -> None:
        ref = self.current_task()
        run = self._selected_run()
        if ref is None or run is None:
            self.query_one("#detail", Static).update("no runs yet: t triggers one")
            return
        ti = self.grid_data.cells.get((ref.run_pk, ref.task_id))
        line = Text(f"{run.run_id}  ")
        line.append_text(state_text(self.app, run.state))
        if ti is not None:
            line.append(f"\n{ref.task_id}: ")
            line.append_text(state_text(self.app, ti.state))
            line.append(f"   try {ti.try_number}/{ti.max_tries}")
            if ti.duration is not None:
                line.append(f"  {format_duration(ti.duration)}")
            if ti.reason:
                line.append(f"\n{ti.reason}")
        self.query_one("#detail", Static).update(line)

    # -- graph, chart, gantt ---------------------------------------------------------------
    def _critical_path(self, run_pk: int | None) -> list[str]:
        dag = self.dag
        if dag is None:
            return []

        def typical(task_id: str) -> float:
            values = sorted(self.history.get(task_id) or [0.0])
            return values[len(values) // 2]

        best: dict[str, tuple[float, list[str]]] = {}
        for task_id in dag.topological_order():
            deps = dag.tasks[task_id].deps
            base = max((best[d] for d in deps), key=lambda b: b[0], default=(0.0, []))
            best[task_id] = (base[0] + typical(task_id), base[1] + [task_id])
        return max(best.values(), key=lambda b: b[0], default=(0.0, []))[1]

    def _graph_text(self) -> Text:
        dag = self.dag
        if dag is None:
            return Text("The DAG's file does not load now; see import errors (i on the DAGs "
                        "screen).")
        run = self._selected_run()
        layers = dag.layers()
        critical = set(self._critical_path(run.pk if run else None))
        text = Text(f"{run.run_id if run else 'no run yet'}   ")
        text.append("* critical path", style="bold")
        text.append("\n\n")
        for depth in range(max(layers.values(), default=-1) + 1):
            for task_id in [t for t in dag.topological_order() if layers[t] == depth]:
                ti = self.grid_data.cells.get((run.pk, task_id)) if run else None
                state = ti.state if ti else "none"
                text.append("   " * depth)
                text.append(f"{GLYPHS.get(state, '?')} ", style=state_colour(self.app, state))
                text.append(task_id, style="bold" if task_id in critical else "")
                text.append(" *" if task_id in critical else "")
                deps = dag.tasks[task_id].deps
                if deps:
                    text.append(f"  <- {', '.join(deps)}", style="dim")
                rule = dag.tasks[task_id].trigger_rule
                if rule != "all_success":
                    text.append(f"  [{rule}]", style="dim")
                text.append("\n")
        return text

    def _chart_text(self) -> Text:
        rows = [r for r in self.durations if r[2] is not None]
        if not rows:
            return Text("No finished runs yet.")
        longest = max(r[2] for r in rows) or 1.0
        width = max(10, self.size.width - 50)
        text = Text("Recent run durations (oldest at the top)\n\n")
        for run_id, state, seconds in rows:
            bar = "█" * max(1, int(width * seconds / longest))
            text.append(f"{run_id[-25:]:>25} ")
            text.append(bar, style=state_colour(self.app, state if state != "running" else "running"))
            text.append(f" {format_duration(seconds)}\n")
        return text

    def _gantt_text(self) -> Text:
        run = self._selected_run()
        if run is None:
            return Text("No run yet.")
        cells = [self.grid_data.cells.get((run.pk, t)) for t in self.grid_data.task_ids]
        started = [c for c in cells if c is not None and c.start_date is not None]
        if not started:
            return Text(f"{run.run_id}: no task has started yet.")
        t0 = min(c.start_date for c in started)
        t1 = max((c.end_date or time.time()) for c in started)
        span = max(t1 - t0, 1e-3)
        width = max(10, self.size.width - 40)
        critical = set(self._critical_path(run.pk))
        text = Text(f"{run.run_id}: where the time went ({format_duration(span)}; * critical path)\n\n")
        for ti in cells:
            if ti is None:
                continue
            text.append(f"{ti.task_id[:22]:>22}{'*' if ti.task_id in critical else ' '} ")
            if ti.start_date is None:
                text.append("·\n", style="dim")
                continue
            offset = int(width * (ti.start_date - t0) / span)
            length = max(1, int(width * ((ti.end_date or time.time()) - ti.start_date) / span))
            text.append(" " * offset)
            text.append("▇" * length, style=state_colour(self.app, ti.state))
            text.append(f" {format_duration((ti.end_date or time.time()) - ti.start_date)}\n")
        return text

    # -- keys ------------------------------------------------------------------------------
    def action_toggle_view(self) -> None:
        self.view = "graph" if self.view == "grid" else "grid"
        self._paint()

    def action_view(self, name: str) -> None:
        self.view = name if self.view != name else "grid"
        self._paint()

    def action_durations(self) -> None:
        self.show_durations = not self.show_durations
        if self.grid_data is not None:
            self.query_one("#grid", DataTable).clear(columns=True)
        self._paint()

    def _dag_id(self) -> str:
        return self.dag_id
