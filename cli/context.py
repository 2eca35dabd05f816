"""What the CLI's commands share: a home's pipelines, DAGs, database and runs, and JSON output."""
from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flowtui.runner.config import Config
from flowtui.runner.loader import LoadResult, load_folder
from flowtui.runner.model import DagSpec
from flowtui.runner.text import visible
from flowtui.store import Store
from flowtui.store.models import Run
from flowtui.usage import UsageError

NO_DATABASE = ("no flowtui database in {home}; run 'flowtui runner' or 'flowtui run' there "
               "first, or check --home")


def emit_json(document: Any) -> None:
    """The command's one JSON document on stdout."""
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


# -- pipelines -------------------------------------------------------------------------------
def load_pipelines(config: Config) -> LoadResult:
    return load_folder(config.pipelines, config.dag_file_timeout)


def find_dag(result: LoadResult, dag_id: str, config: Config) -> DagSpec:
    """A loaded DAG, else a usage error that says why it is missing (a broken file, a typo)."""
    if dag_id in result.dags:
        return result.dags[dag_id]
    broken = [e for e in result.errors if Path(e.fileloc).stem == dag_id]
    if broken:
        first_line = visible(str(broken[0]).splitlines()[0], inline=True)
        raise UsageError(f"DAG {dag_id!r} cannot be loaded: {first_line} "
                         "('flowtui dags check' shows the details)")
    raise UsageError(unknown_dag(dag_id, result.dags, str(config.pipelines)))


def unknown_dag(dag_id: str, known: Iterable[str], where: str) -> str:
    """"unknown DAG" with the closest known id, else the known ids."""
    names = sorted(known)
    close = difflib.get_close_matches(dag_id, names, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {close[0]!r}?"
    else:
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        hint = f"(known: {shown or 'none'})"
    return f"unknown DAG {dag_id!r} in {where}{'; ' if close else ' '}{hint}"


def parse_conf(text: str | None) -> dict[str, Any]:
    """``--conf``: a JSON object, or a usage error that shows one."""
    if not text:
        return {}
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--conf is not valid JSON ({exc.msg} at character {exc.pos}); "
                         "pass an object such as '{\"source\": \"staging\"}'") from None
    if not isinstance(conf, dict):
        raise UsageError("--conf must be a JSON object such as '{\"source\": \"staging\"}'")
    return conf


# -- the store -------------------------------------------------------------------------------
def open_store(config: Config, readonly: bool = False) -> Store:
    """The home's database, created (and migrated) when it is missing."""
    return Store.open(config.database, readonly=readonly)


def read_store(config: Config) -> Store:
    """The home's database, for a command that reads or acts on what was recorded. A home
    without one is most often a typo in --home: say so rather than show an empty answer."""
    if not config.has_database():
        raise UsageError(NO_DATABASE.format(home=config.home))
    # Opened for writing so that a database another process is still creating gets its schema
    # (or waits for it) instead of looking empty; nothing is written when it is up to date.
    return open_store(config)


def known_dag(store: Store, dag_id: str) -> None:
    """Raise "unknown DAG" unless the store has seen ``dag_id`` (a definition or a run)."""
    names = {d.dag_id for d in store.dags()}
    if dag_id in names or store.list_runs(dag_id, limit=1):
        return
    raise UsageError(unknown_dag(dag_id, names, str(store.path)))


def find_run(store: Store, dag_id: str, run_id: str) -> Run:
    """A recorded run (``latest`` for the newest), else a usage error naming what is there."""
    run = store.get_run(dag_id, run_id)
    if run is None:
        known_dag(store, dag_id)
        if not store.list_runs(dag_id, limit=1):
            raise UsageError(f"DAG {dag_id!r} has no runs in {store.path}")
        raise UsageError(f"DAG {dag_id!r} has no run {run_id!r}; "
                         f"'flowtui runs list {dag_id}' lists its runs")
    return run
