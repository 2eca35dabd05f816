"""The datasets screen (`7`, SPEC 9): every dataset with its newest partition, age, freshness
verdict, producers and consumers; below the list, the selected dataset's lineage: the tasks that
write it and what they read, the DAGs that consume it and what they write, each with the state
of its newest run, and what a consumer waits for."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from flowtui.app.base import NAV, focus_now
from flowtui.app.lists import FILTER, ListTable, TableScreen, sync_table
from flowtui.app.render import ago, state_text
from flowtui.runner.freshness import policies as freshness_policies
from flowtui.runner.freshness import verdict
from flowtui.runner.text import visible


@dataclass(slots=True)
class Side:
    """A producer (``dag.task``) or consumer (DAG) with its newest run's state and the
    datasets on its other side (what a producer reads, what a consumer writes)."""
    name: str
    state: str | None
    other: list[str]
    waiting: list[str] = field(default_factory=list)
    dag_id: str = ""
    reads: bool = False  # a task naming it in inlets, not a DAG scheduled by it


@dataclass(slots=True)
class DatasetRow:
    name: str
    partition: str | None
    newest_at: float | None
    events: int
    verdict: str  # fresh, stale: why, or "no policy"
    producers: list[Side]
    consumers: list[Side]


SHOWN = 300  # rows in the list; the rest are reached by the filter


@dataclass(slots=True)
class DatasetPage:
    rows: list[DatasetRow]  # stale first, then by name; at most SHOWN
    total: int  # datasets known (events, pipelines, flowtui.toml)
    matching: int  # of them, those the filter keeps
    stale: int


class DatasetsScreen(TableScreen):
    TITLE = "Datasets"
    HINT = "tab: the selected dataset's lineage; enter on a dataset there follows it"
    COLUMNS = ("dataset", "newest", "age", "freshness", "producers", "consumers")
    BINDINGS = [*NAV, FILTER, *TableScreen.MOVES,
                Binding("tab", "switch", "Lineage", id="lineage")]

    def __init__(self) -> None:
        super().__init__()
        self.rows_by_key: dict[str, DatasetRow] = {}
        self._pending: str | None = None  # a dataset to select once the list shows it

    def body(self) -> ComposeResult:
        yield from super().body()
        yield Static("", id="lineage-head")
        lineage = ListTable(cursor_type="row", id="lineage", show_header=False)
        for name in ("state", "node", "note"):
            lineage.add_column(name, key=name)
        yield lineage

    def fetch(self, data: Any) -> DatasetPage:
        store = data.store
        dags = self.app.ops.dags()
        now = self.app.clock.now()
        watched, _ = freshness_policies(dags, self.app.config.raw)
        newest_state: dict[str, str | None] = {}

        def state_of(dag_id: str) -> str | None:
            if dag_id not in newest_state:
                runs = store.list_runs(dag_id, limit=1)
                newest_state[dag_id] = str(runs[0].state.value) if runs else None
            return newest_state[dag_id]

        producers: dict[str, list[Side]] = {}
        consumers: dict[str, list[Side]] = {}
        for dag in dags.values():
            for task in dag.tasks.values():
                name_ = f"{dag.dag_id}.{task.task_id}"
                for name in task.outlets:
                    producers.setdefault(name, []).append(
                        Side(name_, state_of(dag.dag_id), list(task.inlets), dag_id=dag.dag_id))
                for name in task.inlets:  # a task that reads it is downstream too
                    consumers.setdefault(name, []).append(
                        Side(name_, state_of(dag.dag_id), list(task.outlets),
                             dag_id=dag.dag_id, reads=True))
            if dag.datasets is not None:
                writes = sorted({o for t in dag.tasks.values() for o in t.outlets})
                found = store.datasets.readiness(dag.dag_id, dag.datasets.datasets,
                                                 dag.datasets.match)
                waiting = [f"a run for {'new events' if dag.datasets.match == 'any' else p} is "
                           "due (the runner creates it)" for p in found.ready]
                waiting += [f"waiting for {', '.join(missing)} {partition}"
                            for partition, missing in found.waiting.items()]
                for name in dag.datasets.datasets:
                    consumers.setdefault(name, []).append(
                        Side(dag.dag_id, state_of(dag.dag_id), writes, waiting,
                             dag_id=dag.dag_id))
        # Only what the screen shows is read in full: stale datasets (only a watched one can
        # be), then the first SHOWN names the filter keeps. 10,000 datasets are 10,000 names.
        known = set(store.datasets.names()) | set(producers) | set(consumers) | set(watched)
        text = self.filter_text

        def matches(name: str) -> bool:
            return not text or text in name.lower() or any(
                text in side.name.lower() for side in (*producers.get(name, ()),
                                                       *consumers.get(name, ())))

        kept = sorted(name for name in known if matches(name))
        summaries = {s.name: s for s in store.datasets.summaries(list(watched))}
        stale = {name for name in watched if verdict(
            watched, name, summaries[name].newest.at if name in summaries else None,
            now).startswith("stale")}
        chosen = [n for n in kept if n in stale] + [n for n in kept if n not in stale]
        chosen = chosen[:SHOWN]
        summaries.update((s.name, s) for s in store.datasets.summaries(chosen))
        rows = []
        for name in chosen:
            s = summaries.get(name)
            newest = s.newest if s else None
            rows.append(DatasetRow(name, newest.partition if newest else None,
                                   newest.at if newest else None, s.events if s else 0,
                                   verdict(watched, name, newest.at if newest else None, now),
                                   producers.get(name, []), consumers.get(name, [])))
        return DatasetPage(rows, len(known), len(kept), len(stale))

    def show(self, page: DatasetPage) -> None:
        now = self.app.clock.now()
        rows = []
        self.rows_by_key = {}
        for item in page.rows:  # the filter again: a repaint before the next read
            if not self.keep(item.name, *(p.name for p in item.producers),
                             *(c.name for c in item.consumers)):
                continue
            self.rows_by_key[item.name] = item
            verdict = Text(item.verdict.split(":")[0],
                           style="bold red" if item.verdict.startswith("stale") else "")
            rows.append((item.name, (  # names are free text: plain Text, escapes made visible
                Text(shown(item.name), overflow="ellipsis"),
                Text(shown(item.partition or "-")),
                ago(item.newest_at, now) if item.newest_at else "never", verdict,
                Text(", ".join(p.name for p in item.producers) or "-"),
                Text(shown(", ".join(c.name for c in item.consumers if not c.reads) or "-")))))
        sync_table(self.table, rows, caps={4: 30, 5: 30})
        if self._pending in self.rows_by_key:  # followed from a lineage while filtered out
            name, self._pending = self._pending, None
            self._select(name)
        title = (f"Datasets: {page.total:,}" + (f", {page.stale} stale" if page.stale else "") +
                 (f"; the first {SHOWN} of {page.matching:,} shown, / narrows"
                  if page.matching > SHOWN else "")
                 ) if page.total else "Datasets: none yet (name them with outlets: on a task)"
        self.query_one(".title", Static).update(title)
        self._paint_lineage()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "table":
            self._paint_lineage()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.data_table.id == "lineage":
            self._follow(str(event.row_key.value))
        else:  # Enter on a dataset walks into its lineage
            focus_now(self.lineage)

    @property
    def lineage(self) -> DataTable:
        return self.query_one("#lineage", DataTable)

    def action_move(self, where: str) -> None:
        if self.focused is self.lineage:
            table = self.lineage
            if table.row_count:
                if where in ("top", "bottom"):
                    table.move_cursor(row=0 if where == "top" else table.row_count - 1,
                                      animate=False)
                else:
                    getattr(table, f"action_cursor_{where}" if where in ("up", "down") else
                            f"action_{where}")()
            return
        super().action_move(where)

    def action_switch(self) -> None:
        """Tab: between the list and the selected dataset's lineage."""
        focus_now(self.table if self.focused is self.lineage else self.lineage)

    def _follow(self, key: str) -> None:
        """Enter on a lineage row: a dataset becomes the one shown (its own lineage around
        it, as the graph view moves from task to task); a DAG opens its screen."""
        kind, _, name = key.split("|", 1)[1].partition(":")
        if kind == "none":
            return
        if kind == "dag":
            from flowtui.app.dag_screen import DagScreen

            self.app.push_screen(DagScreen(name))
            return
        if name not in self.rows_by_key:  # filtered out, or past the rows shown
            self._pending = name
            self._set_filter(name.lower())
            return
        self._select(name)

    def _select(self, name: str) -> None:
        table = self.table
        for index, row_key in enumerate(table.rows):
            if str(row_key.value) == name:
                table.move_cursor(row=index, animate=False)
                break
        self._paint_lineage()
        focus_now(self.lineage)
        for index, row_key in enumerate(self.lineage.rows):  # the cursor on it, in the middle
            if str(row_key.value).endswith("|here:" + name):
                self.lineage.move_cursor(row=index, animate=False)

    def _paint_lineage(self) -> None:
        item = self.rows_by_key.get(self.current_key() or "")
        head = self.query_one("#lineage-head", Static)
        if item is None:
            head.update("")
            sync_table(self.lineage, [])
            return
        text = Text()
        text.append(shown(item.name), style="bold")
        text.append(f"  {item.events} event{'' if item.events == 1 else 's'}, newest "
                    f"{shown(item.partition or '-')}  freshness: {item.verdict}")
        head.update(text)
        rows: list[tuple[str, tuple]] = []

        def add(kind: str, name: str, level: int, state: str | None, label: str,
                note: str) -> None:
            """One node, indented by its place in the flow: what the writers read, the
            writers, this dataset, what consumes or reads it, what those write."""
            style = "bold reverse" if kind == "here" else "bold" if kind == "ds" else ""
            cells = (state_text(self.app, state) if state else Text(""),
                     Text.assemble("  " * level, (shown(label), style)),
                     Text(shown(note), style="italic"))
            rows.append((f"{len(rows)}|{kind}:{name}", cells))

        if not item.producers:
            add("none", "", 1, None, "(no task names it in outlets)", "")
        for side in item.producers:
            for other in side.other:
                add("ds", other, 0, None, other, "read by " + side.name)
            add("dag", side.dag_id, 1, side.state, side.name, "writes it")
        add("here", item.name, 2, None, item.name,
            f"newest {item.partition or '-'}, {item.verdict}")
        for side in item.consumers:
            add("dag", side.dag_id, 3, side.state, side.name,
                "; ".join(side.waiting) or ("reads it" if side.reads else "scheduled by it"))
            for other in side.other:
                add("ds", other, 4, None, other, "written by " + side.name)
        if not item.consumers:
            add("none", "", 3, None, "(no DAG is scheduled by it, no task reads it)", "")
        sync_table(self.lineage, rows, caps={1: 50})


def shown(text: str) -> str:
    """A dataset name or partition (free text, from YAML or `datasets emit`) as one visible
    line: control characters shown, never sent to the terminal."""
    return visible(text, inline=True)
