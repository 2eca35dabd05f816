"""The datasets screen (`7`, SPEC 9): every dataset with its newest partition, age, freshness
verdict, producers and consumers; below the list, the selected dataset's lineage: the tasks that
write it and what they read, the DAGs that consume it and what they write, each with the state
of its newest run, and what a consumer waits for."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from flowtui.app.base import NAV
from flowtui.app.lists import FILTER, TableScreen, sync_table
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


@dataclass(slots=True)
class DatasetRow:
    name: str
    partition: str | None
    newest_at: float | None
    events: int
    verdict: str  # fresh, stale: why, or "no policy"
    producers: list[Side]
    consumers: list[Side]


class DatasetsScreen(TableScreen):
    TITLE = "Datasets"
    HINT = "the selected dataset's lineage is below the list"
    COLUMNS = ("dataset", "newest", "age", "freshness", "producers", "consumers")
    BINDINGS = [*NAV, FILTER, *TableScreen.MOVES]

    def __init__(self) -> None:
        super().__init__()
        self.rows_by_key: dict[str, DatasetRow] = {}

    def body(self) -> ComposeResult:
        yield from super().body()
        yield Static("", id="now-detail")

    def fetch(self, data: Any) -> list[DatasetRow]:
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
                for name in task.outlets:
                    producers.setdefault(name, []).append(
                        Side(f"{dag.dag_id}.{task.task_id}", state_of(dag.dag_id),
                             list(task.inlets)))
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
                        Side(dag.dag_id, state_of(dag.dag_id), writes, waiting))
        summaries = {s.name: s for s in store.datasets.summaries()}
        rows = []
        for name in sorted(set(summaries) | set(producers) | set(consumers) | set(watched)):
            s = summaries.get(name)
            newest = s.newest if s else None
            rows.append(DatasetRow(name, newest.partition if newest else None,
                                   newest.at if newest else None, s.events if s else 0,
                                   verdict(watched, name, newest.at if newest else None, now),
                                   producers.get(name, []), consumers.get(name, [])))
        return rows

    def show(self, items: list[DatasetRow]) -> None:
        now = self.app.clock.now()
        rows = []
        self.rows_by_key = {}
        for item in items:
            names = [p.name for p in item.producers] + [c.name for c in item.consumers]
            if not self.keep(item.name, *names):
                continue
            self.rows_by_key[item.name] = item
            verdict = Text(item.verdict.split(":")[0],
                           style="bold red" if item.verdict.startswith("stale") else "")
            rows.append((item.name, (  # names are free text: plain Text, escapes made visible
                Text(shown(item.name), overflow="ellipsis"),
                Text(shown(item.partition or "-")),
                ago(item.newest_at, now) if item.newest_at else "never", verdict,
                Text(", ".join(p.name for p in item.producers) or "-"),
                Text(shown(", ".join(c.name for c in item.consumers) or "-")))))
        sync_table(self.table, rows, caps={4: 30, 5: 30})
        self.query_one(".title", Static).update(
            "Datasets" if items else "Datasets: none yet (name them with outlets: on a task)")
        self._paint_lineage()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._paint_lineage()

    def _paint_lineage(self) -> None:
        item = self.rows_by_key.get(self.current_key() or "")
        detail = self.query_one("#now-detail", Static)
        if item is None:
            detail.update("")
            return
        text = Text()
        text.append(shown(item.name), style="bold")
        text.append(f"  {item.events} events, newest {shown(item.partition or '-')}  "
                    f"freshness: {item.verdict}\n")
        text.append("written by\n", style="bold")
        for side in item.producers or [Side("(no task names it in outlets)", None, [])]:
            self._side(text, side, "reads")
        text.append("read by\n", style="bold")
        for side in item.consumers or [Side("(no DAG is scheduled by it)", None, [])]:
            self._side(text, side, "writes")
        detail.update(text)

    def _side(self, text: Text, side: Side, verb: str) -> None:
        text.append("  ")
        if side.state is not None:
            text.append_text(state_text(self.app, side.state))
            text.append("  ")
        text.append(shown(side.name))
        if side.other:
            text.append(f"  {verb} {shown(', '.join(side.other))}")
        for line in side.waiting:
            text.append(f"\n    {shown(line)}", style="italic")
        text.append("\n")


def shown(text: str) -> str:
    """A dataset name or partition (free text, from YAML or `datasets emit`) as one visible
    line: control characters shown, never sent to the terminal."""
    return visible(text, inline=True)
