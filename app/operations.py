"""What the TUI's keys do: the same runner and store functions as the CLI commands."""
from __future__ import annotations

import threading
from typing import Any, Callable

from flowtui.runner import actions
from flowtui.runner.config import Config
from flowtui.runner.loader import load_folder, pipeline_files
from flowtui.runner.model import DagSpec
from flowtui.store import Store
from flowtui.store.models import TaskInstance


class Operations:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._dags: dict[str, DagSpec] = {}
        self._snapshot: tuple | None = None  # the files and times of the last read
        self._loading = threading.Lock()

    def dags(self) -> dict[str, DagSpec]:
        """The pipelines folder, re-read when a file changed (by one reader at a time: the
        others wait for its result instead of reading every file beside it)."""
        with self._loading:
            files = pipeline_files(self.config.pipelines) if self.config.pipelines.is_dir() else []
            snapshot = tuple((str(p), p.stat().st_mtime_ns) for p in files)
            if snapshot != self._snapshot:
                self._dags = load_folder(self.config.pipelines, self.config.dag_file_timeout).dags
                self._snapshot = snapshot
            return self._dags

    def loaded(self) -> dict[str, DagSpec] | None:
        """The DAGs of the last read of the pipelines folder, without reading it (None: no read
        has finished yet). A screen that can paint from the store alone paints with this
        first, instead of waiting for 1,000 files to be parsed."""
        return None if self._snapshot is None else self._dags

    def dag(self, dag_id: str) -> DagSpec:
        dag = self.dags().get(dag_id)
        if dag is None:
            raise actions.ActionError(f"DAG {dag_id!r} is not loaded from "
                                      f"{self.config.pipelines} (see import errors)")
        return dag

    def _store(self) -> Store:
        return Store.open(self.config.database)

    def planner(self, dag_id: str, task_ids: list[str],
                tis: list[TaskInstance]) -> Callable[[dict[str, bool]], list[str]]:
        """The tasks an action's options change, worked out from the DAG and the run's task
        instances as given: toggling an option reads nothing."""
        dag = self.dag(dag_id)
        by_id = {t.task_id: t for t in tis}

        def plan(options: dict[str, bool]) -> list[str]:
            return actions.plan(dag, by_id, task_ids, downstream=options.get("downstream", False),
                                upstream=options.get("upstream", False),
                                failed_only=options.get("failed_only", False))

        return plan

    def submit(self, dag_id: str, run_pk: int, action: str, task_ids: list[str],
               options: dict | None = None) -> actions.Outcome:
        store = self._store()
        try:
            run = store.get_run_by_pk(run_pk)
            if run is None:
                raise actions.ActionError("that run no longer exists")
            return actions.submit(store, self.dag(dag_id), run, action, task_ids,
                                  options=options or {}, config=self.config)
        finally:
            store.close()

    def trigger(self, dag_id: str, date: str | None, conf: dict[str, Any]) -> str:
        from flowtui.runner.runs import parse_date

        dag = self.dag(dag_id)
        store = self._store()
        try:
            logical = parse_date(date, dag.timezone) if date else None
            return actions.trigger(store, dag, logical_date=logical, conf=conf).run_id
        finally:
            store.close()

    def set_paused(self, dag_id: str, paused: bool) -> None:
        store = self._store()
        try:
            actions.set_paused(store, dag_id, paused)
        finally:
            store.close()

    def set_alert(self, alert_id: int, state: str) -> None:
        from flowtui.runner.alerting import set_alert_state

        store = self._store()
        try:
            set_alert_state(store, alert_id, state)
            daemon = actions.live_daemon(store)
            if daemon is not None:
                actions.wake(store, daemon)
        finally:
            store.close()
