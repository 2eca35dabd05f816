"""Entry point of a Python ``@task``'s own subprocess: import the file, call the function."""
from __future__ import annotations

import inspect
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn


class SkipTask(Exception):
    """Raised by ``ctx.skip()``: the task ends as ``skipped``."""


class TaskContext:
    """What a ``@task`` function receives: the run's dates, params, and output helpers."""

    def __init__(self, env: dict[str, str]) -> None:
        self.dag_id = env["FLOWTUI_DAG_ID"]
        self.task_id = env["FLOWTUI_TASK_ID"]
        self.run_id = env["FLOWTUI_RUN_ID"]
        self.try_number = int(env["FLOWTUI_TRY_NUMBER"])
        self.ds = env["FLOWTUI_DS"]
        self.ds_nodash = self.ds.replace("-", "")
        self.logical_date = env["FLOWTUI_LOGICAL_DATE"]
        self.ts = self.logical_date
        self.data_interval_start = env["FLOWTUI_DATA_INTERVAL_START"]
        self.data_interval_end = env["FLOWTUI_DATA_INTERVAL_END"]
        self.params: dict[str, Any] = json.loads(env.get("FLOWTUI_PARAMS") or "{}")

    def log(self, *parts: object) -> None:
        print(*parts, flush=True)

    def progress(self, done: float, total: float | None = None) -> None:
        value = f"{done:g}/{total:g}" if total else f"{done:g}"
        print(f"::flowtui progress {value}", flush=True)

    def heartbeat(self) -> None:
        print("::flowtui heartbeat", flush=True)

    def metadata(self, **values: object) -> None:
        pairs = " ".join(f"{k}={v}" for k, v in values.items())
        print(f"::flowtui metadata {pairs}", flush=True)

    def skip(self, why: str = "") -> NoReturn:
        raise SkipTask(why)


def main() -> int:
    from flowtui.runner.pyload import exec_pipeline_file

    env = dict(os.environ)
    path = Path(env["FLOWTUI_DAG_FILE"])
    dags, error = exec_pipeline_file(path)
    if error is not None:
        print(f"flowtui: cannot load {path}: {error[1]}", file=sys.stderr)
        return 1
    dag = next((d for d in dags if d.dag_id == env["FLOWTUI_DAG_ID"]), None)
    task = dag.tasks.get(env["FLOWTUI_TASK_ID"]) if dag else None
    if task is None or task.fn is None:
        print(f"flowtui: {path} no longer defines Python task {env['FLOWTUI_TASK_ID']!r} "
              f"in DAG {env['FLOWTUI_DAG_ID']!r}", file=sys.stderr)
        return 1
    ctx = TaskContext(env)
    try:
        takes_ctx = bool(inspect.signature(task.fn).parameters)
        result = task.fn(ctx) if takes_ctx else task.fn()
    except SkipTask as exc:
        print(f"skipped{': ' + str(exc) if str(exc) else ''}", flush=True)
        return int(env.get("FLOWTUI_SKIP_EXIT_CODE", "99"))
    except BaseException:  # the traceback goes to the try's log
        traceback.print_exc()
        return 1
    if result is not None:
        print(f"returned: {result!r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.exit(main())
