"""A DAG: its grid of runs x tasks, its graph with live states and the critical path, a chart
of recent run durations, and a Gantt view of one run."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from flowtui.app.acting import TASK_BINDINGS, DagActions, TaskActions, TaskRef
from flowtui.app.base import NAV, FlowScreen, focus_now
from flowtui.app.data import Data
from flowtui.app.graph_view import GraphView
from flowtui.app.render import short_run, state_colour, state_text
from flowtui.runner.text import GLYPHS
from flowtui.runner.durations import format_duration
from flowtui.runner.actions import ActionError
from flowtui.runner.graph import GraphLayout, layout, shorten
from flowtui.runner.model import DagSpec
from flowtui.store.views import Grid, RunDuration

VIEWS = ("grid", "graph", "chart", "gantt")
FAILED = ("failed",)
# Where the graph view starts when the run has one: what the operator came for.
ATTENTION = ("failed", "up_for_retry", "running")


@dataclass(slots=True)
class DagRead:
    dag: DagSpec | None  # None when its file does not load now
    dag_problem: str  # why, as the graph view says it
    grid: Grid
    durations: list[RunDuration]
    history: dict[str, list[float | None]]  # by task: its recent successful durations


class RunGrid(DataTable):
    """Runs x tasks. Home/End go to the first/last task (DataTable scrolls sideways there)."""

    BINDINGS = [Binding("j", "cursor_down", show=False), Binding("k", "cursor_up", show=False),
                Binding("h", "cursor_left", show=False),
                Binding("home", "first_row", show=False), Binding("end", "last_row", show=False)]

    def action_first_row(self) -> None:
        self.move_cursor(row=0)

    def action_last_row(self) -> None:
        self.move_cursor(row=self.row_count - 1)


def column_labels(runs: list[Any]) -> list[str]:
    """Grid headers: the logical day (MM-DD); with the time when a day repeats, and the run's
    number when even that repeats, so two columns never read the same."""
    stamps = []
    for run in runs:
        parts = short_run(run.run_id).split(" ")
        stamps.append((parts[1], parts[2]) if len(parts) >= 3 else (run.run_id[-10:], ""))
    days = [day for day, _ in stamps]
    labels = [day if days.count(day) == 1 else f"{day} {hour}".strip() for day, hour in stamps]
    return [label if labels.count(label) == 1 else f"{label} #{run.pk}"
            for label, run in zip(labels, runs)]


class DagScreen(DagActions, TaskActions, FlowScreen):
    BINDINGS = [*NAV, *TASK_BINDINGS,
                Binding("g", "toggle_view", "Grid/graph", id="grid-graph"),
                Binding("j", "move(1)", "Next task (graph) or row (grid); k previous",
                        key_display="j/k", show=False, id="dag-next"),
                Binding("k", "move(-1)", "", show=False, id="dag-previous"),
                Binding("h", "follow('up')", "Graph: to an upstream task (→ a downstream one)",
                        key_display="h/←", show=False, id="dag-upstream"),
                Binding("f", "failed(1)", "Grid: next failed cell (F previous)", key_display="f/F",
                        show=False, id="dag-next-failed"),
                Binding("F", "failed(-1)", "", show=False, id="dag-previous-failed"),
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
        self.grid_data: Grid | None = None
        self.dag: DagSpec | None = None
        self.dag_problem = ""  # why the DAG's spec is not loaded, as the graph view says it
        self.durations: list[RunDuration] = []
        self.history: dict[str, list[float | None]] = {}
        self._grid_shape: Any = None
        self._layout: GraphLayout | None = None
        self._layout_key: Any = None
        self.TITLE = f"DAG {dag_id}"

    def body(self) -> ComposeResult:
        yield RunGrid(cursor_type="cell", id="grid")
        yield GraphView(id="graph-view")
        with VerticalScroll(id="graph-scroll"):
            yield Static("", id="graph")
        yield Static("", id="detail")

    def on_mount(self) -> None:
        self.query_one("#graph-scroll").display = False
        self.query_one(GraphView).display = False
        super().on_mount()

    # -- data ------------------------------------------------------------------------------
    def fetch(self, data: Data) -> DagRead:
        try:
            dag: DagSpec | None = self.app.ops.dag(self.dag_id)
            problem = ""
        except ActionError:  # not loaded from the folder: its file has an import error
            dag, problem = None, ("The DAG's file does not load now; see import errors "
                                  "(i on the DAGs screen).")
        except OSError as error:  # the pipelines folder cannot be read
            dag, problem = None, f"cannot read the pipelines folder: {error}"
        grid = data.grid(self.dag_id, dag.topological_order() if dag else [], limit=25)
        durations = data.durations(self.dag_id, 40)
        history = {}
        for task_id in grid.task_ids:
            history[task_id] = [ti.duration for (pk, t), ti in grid.cells.items()
                                if t == task_id and ti.state == "success" and ti.duration]
        return DagRead(dag, problem, grid, durations, history)

    def show(self, result: DagRead) -> None:
        self.dag, self.dag_problem = result.dag, result.dag_problem
        self.grid_data, self.durations, self.history = result.grid, result.durations, result.history
        self._paint()

    def _paint(self) -> None:
        grid = self.grid_data
        if grid is None:
            return
        hints = {"grid": "g graph, f/F failed, D chart, G gantt",
                 "graph": "g grid, j/k h/→ move", "chart": "D back", "gantt": "G back"}
        title = f"DAG {self.dag_id}  view: {self.view}  ({hints[self.view]})"
        self.query_one(".title", Static).update(title)
        table = self.query_one("#grid", DataTable)
        scroll = self.query_one("#graph-scroll")
        view = self.query_one(GraphView)
        graph_drawn = self.view == "graph" and self.dag is not None
        table.display = self.view == "grid"
        view.display = graph_drawn
        scroll.display = self.view != "grid" and not graph_drawn
        self._paint_grid(table, grid)
        if graph_drawn:
            self._paint_graph(view)
        elif self.view == "graph":
            self.query_one("#graph", Static).update(Text(self.dag_problem))
        elif self.view == "chart":
            self.query_one("#graph", Static).update(self._chart_text())
        elif self.view == "gantt":
            self.query_one("#graph", Static).update(self._gantt_text())
        self._paint_detail()

    def _paint_grid(self, table: DataTable, grid: Any) -> None:
        """Rows keyed by task id, columns by run: a rebuild (runs arrive, durations toggle) puts
        the cursor back on the task and run it was on, never on a position."""
        columns = [str(run.pk) for run in grid.runs]
        labels = column_labels(grid.runs)
        shape = (tuple(columns), tuple(labels), tuple(grid.task_ids), self.show_durations)
        if shape == self._grid_shape:
            for task_id in grid.task_ids:
                for column, cell in zip(["task", *columns], self._grid_cells(grid, task_id)):
                    if str(table.get_cell(task_id, column)) != str(cell):
                        table.update_cell(task_id, column, cell)
            return
        task_key, run_key = self._grid_cursor(table)
        old_row = table.cursor_coordinate.row
        self._grid_shape = shape
        with self.app.batch_update():
            table.clear(columns=True)
            table.add_column("task", key="task")
            for run, label in zip(grid.runs, labels):
                table.add_column(Text(label, style=state_colour(self.app, run.state)),
                                 key=str(run.pk))
            for task_id in grid.task_ids:
                table.add_row(*self._grid_cells(grid, task_id), key=task_id)
            if not grid.task_ids:
                return
            if self.focus_run is not None and str(self.focus_run) in columns:
                run_key, self.focus_run = str(self.focus_run), None
            column = (0 if run_key == "task" else columns.index(run_key) + 1
                      if run_key in columns else len(columns))
            row = (grid.task_ids.index(task_key) if task_key in grid.task_ids
                   else min(old_row, len(grid.task_ids) - 1))
            table.move_cursor(row=row, column=column, animate=False)

    @staticmethod
    def _grid_cursor(table: DataTable) -> tuple[str | None, str | None]:
        """(task id, run pk) under the grid's cursor, or Nones on an empty grid."""
        if table.row_count == 0 or not table.columns:
            return None, None
        row_key, column_key = table.coordinate_to_cell_key(table.cursor_coordinate)
        return str(row_key.value), str(column_key.value)

    def _grid_cells(self, grid: Any, task_id: str) -> list[Any]:
        cells: list[Any] = [shorten(task_id, 28)]  # the detail line below shows it whole
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
        """The run under the grid's cursor (kept while the graph shows), else the newest."""
        grid = self.grid_data
        if grid is None or not grid.runs:
            return None
        column = self.query_one("#grid", DataTable).cursor_coordinate.column
        if column >= 1 and column - 1 < len(grid.runs):
            return grid.runs[column - 1]
        return grid.runs[-1]

    def current_task(self) -> TaskRef | None:
        grid = self.grid_data
        run = self._selected_run()
        if grid is None or run is None:
            return None
        if self.view == "graph" and self.dag is not None:
            task_id = self.query_one(GraphView).selected
        else:
            task_id, _ = self._grid_cursor(self.query_one("#grid", DataTable))
        if task_id is None:
            return None
        return TaskRef(self.dag_id, run.pk, run.run_id, task_id)

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        event.stop()
        if event.coordinate.column == 0:
            return
        self.action_open()

    def on_data_table_cell_highlighted(self) -> None:
        self._paint_detail()

    def on_graph_view_node_selected(self) -> None:
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

    def _paint_graph(self, view: GraphView) -> None:
        dag = self.dag
        key = tuple((t, tuple(spec.deps)) for t, spec in dag.tasks.items())
        if key != self._layout_key or self._layout is None:
            self._layout_key = key
            self._layout = layout({t: spec.deps for t, spec in dag.tasks.items()})
        run = self._selected_run()
        states = {t: ti.state for (pk, t), ti in self.grid_data.cells.items()
                  if run is not None and pk == run.pk}
        attention = [t for t in self._layout.rows if states.get(t) in ATTENTION]
        view.show_graph(self._layout, states, set(self._critical_path(run.pk if run else None)),
                        prefer=attention[0] if attention else None,
                        outlets={t: spec.outlets for t, spec in dag.tasks.items()
                                 if spec.outlets})
        self.query_one(".title", Static).update(
            f"DAG {self.dag_id}  view: graph  {short_run(run.run_id) if run else 'no run yet'}"
            "  * = critical path  (g grid)")

    def _chart_text(self) -> Text:
        rows = [(r.run_id, r.state, r.seconds) for r in self.durations if r.seconds is not None]
        if not rows:
            return Text("No finished runs yet.")
        longest = max(seconds for _, _, seconds in rows) or 1.0
        width = max(10, self.size.width - 50)
        text = Text("Recent run durations (oldest at the top)\n\n")
        for run_id, state, seconds in rows:
            bar = "█" * max(1, int(width * seconds / longest))
            text.append(f"{run_id[-25:]:>25} ")
            text.append(bar, style=state_colour(self.app, state))
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
        now = self.app.clock.now()
        t0 = min(c.start_date for c in started)
        t1 = max((c.end_date or now) for c in started)
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
            length = max(1, int(width * ((ti.end_date or now) - ti.start_date) / span))
            text.append(" " * offset)
            text.append("▇" * length, style=state_colour(self.app, ti.state))
            text.append(f" {format_duration((ti.end_date or now) - ti.start_date)}\n")
        return text

    # -- keys ------------------------------------------------------------------------------
    def action_toggle_view(self) -> None:
        self._switch("graph" if self.view == "grid" else "grid")

    def action_view(self, name: str) -> None:
        self._switch(name if self.view != name else "grid")

    def _switch(self, view: str) -> None:
        self.view = view
        self._paint()
        target = {"grid": "#grid", "graph": "#graph-view"}.get(view, "#graph-scroll")
        widget = self.query_one(target)
        if widget.display:
            focus_now(widget)

    def action_durations(self) -> None:
        self.show_durations = not self.show_durations
        self._paint()

    def action_move(self, step: int) -> None:
        if self.view == "graph":
            self.query_one(GraphView).action_move(step)
        elif self.view == "grid":
            table = self.query_one("#grid", DataTable)
            table.action_cursor_down() if step > 0 else table.action_cursor_up()

    def action_follow(self, way: str) -> None:
        if self.view == "graph":
            self.query_one(GraphView).action_follow(way)

    def action_failed(self, direction: int) -> None:
        """Put the grid's cursor on the next (or previous) failed cell, run by run from the
        cursor (top to bottom within a run), wrapping around."""
        grid = self.grid_data
        table = self.query_one("#grid", DataTable)
        if grid is None or self.view != "grid" or not grid.task_ids:
            return
        cells = [(c, r) for c in range(len(grid.runs)) for r in range(len(grid.task_ids))]
        here = table.cursor_coordinate
        if here.column >= 1:
            start = cells.index((here.column - 1, here.row))
        else:
            start = -1 if direction > 0 else len(cells)
        for step in range(1, len(cells) + 1):
            column, row = cells[(start + direction * step) % len(cells)]
            ti = grid.cells.get((grid.runs[column].pk, grid.task_ids[row]))
            if ti is not None and ti.state in FAILED:
                table.move_cursor(row=row, column=column + 1, animate=False)
                return
        self.notify("No failed task in the runs shown.", timeout=3)

    def _dag_id(self) -> str:
        return self.dag_id
