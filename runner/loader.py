"""Loading pipeline folders: YAML and Python files into validated ``DagSpec``s and clear errors."""
from __future__ import annotations

import difflib
import gc
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowtui.runner.model import (
    DAG_DEFAULTS, DAG_KEYS, TASK_KEYS, DagSpec, DatasetSchedule, TaskSpec,
)
from flowtui.runner.pyimport import DEFAULT_TIMEOUT, Importer
from flowtui.runner.pyload import read_limited
from flowtui.runner.schema import (
    DAG_SCHEMA, PRESETS, TASK_SCHEMA, check_id, instant, plain_params,
)
from flowtui.runner.templating import TemplateError
from flowtui.runner.yamlfile import (
    AliasBombError, DuplicateKeyError, LineDict, error_line, error_text, load_yaml,
)

if TYPE_CHECKING:
    from flowtui.store import Store

__all__ = ["PRESETS", "LoadError", "LoadResult", "load_folder", "load_yaml_text",
           "pipeline_files", "build_dag", "find_cycle", "record_load"]
_IMPORTS_FLOWTUI = re.compile(r"^\s*(from\s+flowtui\b|import\s+flowtui\b)", re.M)


@dataclass(slots=True)
class LoadError:
    fileloc: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.fileloc}:{self.line}" if self.line else self.fileloc
        return f"{where}: {self.message}"


@dataclass(slots=True)
class LoadResult:
    dags: dict[str, DagSpec] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    # Datasets written by DAGs kept out for a loop through datasets: known names all the same.
    refused_outlets: set[str] = field(default_factory=set)


def record_load(store: Store, result: LoadResult) -> None:
    """Record one load of the pipelines folder in the store: its DAGs and its import errors."""
    from flowtui.store.models import DagRecord, ImportError_

    now = store.now()
    records = [DagRecord(d.dag_id, d.fileloc, d.description,
                         d.datasets.describe() if d.datasets else d.schedule, d.timezone,
                         d.owner, d.tags, d.paused, None, True, len(d.tasks), now)
               for d in result.dags.values()]
    errors = [ImportError_(e.fileloc, e.line, e.message, now) for e in result.errors]
    store.sync_dags(records, errors, result.files)
    consumers = {d.dag_id: d.datasets.datasets for d in result.dags.values() if d.datasets}
    if consumers:
        store.datasets.register_consumers(consumers)


class _Invalid(ValueError):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def pipeline_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for name in sorted(files):
            if name.endswith((".yaml", ".yml", ".py")) and not name.startswith("."):
                found.append(Path(root) / name)
    return found


def load_folder(folder: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT) -> LoadResult:
    """Load every pipeline file; one bad file never hides the good ones.

    Python files are imported in a child process, each within ``timeout`` seconds.
    """
    # Parsing allocates many small objects that all stay alive: the cyclic GC would only
    # rescan them over and over.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_folder(folder, timeout)
    finally:
        if enabled:
            gc.enable()


def _load_folder(folder: str | os.PathLike[str], timeout: float) -> LoadResult:
    result = LoadResult()
    base = Path(folder)
    if not base.is_dir():
        result.errors.append(LoadError(str(base), None,
                                       "pipelines folder not found; pass --pipelines DIR or set "
                                       "FLOWTUI_PIPELINES"))
        return result
    texts: list[tuple[Path, str | LoadError]] = []
    for path in pipeline_files(base):
        text = _read(path)
        if isinstance(text, str) and path.suffix == ".py" and not _IMPORTS_FLOWTUI.search(text):
            continue  # a helper script, not a pipeline file
        texts.append((path, text))
    python = [str(p) for p, text in texts if isinstance(text, str) and p.suffix == ".py"]
    origin: dict[str, str] = {}
    # The import process works through the Python files while the YAML files are parsed here.
    with Importer(python, timeout) as importer:
        for path, text in texts:
            fileloc = str(path)
            result.files.append(fileloc)
            if isinstance(text, LoadError):
                result.errors.append(text)
                continue
            if path.suffix == ".py":
                specs, errors = python_specs(fileloc, importer.reply(fileloc))
            else:
                specs, errors = load_yaml_text(fileloc, text, path.stem)
            result.errors.extend(errors)
            for spec in specs:
                if spec.dag_id in result.dags:
                    result.errors.append(LoadError(
                        fileloc, spec.line,
                        f"dag_id {spec.dag_id!r} is already defined in {origin[spec.dag_id]}; "
                        "give one of them another dag_id"))
                    continue
                origin[spec.dag_id] = fileloc
                result.dags[spec.dag_id] = spec
    _set_aside_dataset_loops(result)
    return result


def _set_aside_dataset_loops(result: LoadResult) -> None:
    """A DAG scheduled by a dataset that it writes, itself or through other DAGs, would trigger
    itself for ever (each run's event makes the next run): every DAG on such a loop is an
    error of its file, kept out like a DAG that does not parse."""
    writes = {d.dag_id: {o for t in d.tasks.values() for o in t.outlets}
              for d in result.dags.values()}
    after: dict[str, list[str]] = {dag_id: [] for dag_id in result.dags}
    for consumer in result.dags.values():
        if consumer.datasets is None:
            continue
        for producer, outlets in writes.items():
            if outlets & set(consumer.datasets.datasets):
                after[producer].append(consumer.dag_id)
    on_loop: dict[str, list[str]] = {}
    for start in after:
        path, seen, stack = [start], {start}, [iter(after[start])]
        while stack:  # depth-first from ``start``: a way back to it is a loop
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                path.pop()
                continue
            if nxt == start:
                on_loop.setdefault(start, [*path, start])
                break
            if nxt not in seen:
                seen.add(nxt)
                path.append(nxt)
                stack.append(iter(after[nxt]))
    for dag_id, loop in on_loop.items():
        spec = result.dags.pop(dag_id)
        result.refused_outlets |= writes[dag_id]
        result.errors.append(LoadError(
            spec.fileloc, spec.line,
            f"DAG {dag_id!r} would trigger itself through datasets ({' -> '.join(loop)}): "
            "a DAG must not be scheduled by a dataset it writes, itself or downstream"))


def _read(path: Path) -> str | LoadError:
    try:
        return read_limited(path)
    except (OSError, UnicodeDecodeError) as exc:
        return LoadError(str(path), None, f"cannot read the file: {exc}")


# -- YAML ------------------------------------------------------------------------------------
def load_yaml_text(fileloc: str, text: str, stem: str) -> tuple[list[DagSpec], list[LoadError]]:
    try:
        data = load_yaml(text)
    except DuplicateKeyError as exc:
        return [], [LoadError(fileloc, exc.line, f"{exc}; remove or rename one of them")]
    except AliasBombError as exc:
        return [], [LoadError(fileloc, None, str(exc))]
    except RecursionError:
        return [], [LoadError(fileloc, None, "the YAML is nested too deeply; flatten it")]
    except Exception as exc:  # yaml.YAMLError and its subclasses
        return [], [LoadError(fileloc, error_line(exc),  # type: ignore[arg-type]
                              f"YAML syntax error: {error_text(exc)}; fix the YAML syntax")]  # type: ignore[arg-type]
    if data is None:
        return [], [LoadError(fileloc, None, "the file is empty; define dag_id and tasks")]
    if not isinstance(data, dict):
        return [], [LoadError(fileloc, 1, "the file must be a mapping with keys such as "
                                          "dag_id, schedule and tasks")]
    data.setdefault("dag_id", stem)
    try:
        return [build_dag(data, fileloc)], []
    except _Invalid as exc:
        return [], [LoadError(fileloc, exc.line, str(exc))]


# -- Python ----------------------------------------------------------------------------------
def python_specs(fileloc: str, reply: tuple[Any, ...]) -> tuple[list[DagSpec], list[LoadError]]:
    """The DAGs of one Python file from the import process's reply."""
    if reply[0] != "ok":
        return [], [LoadError(fileloc, reply[1], str(reply[2]))]
    specs: list[DagSpec] = []
    errors: list[LoadError] = []
    for dag in reply[1]:
        data = dag["data"]
        if dag["duplicates"]:
            task_id, line = dag["duplicates"][0]
            errors.append(LoadError(fileloc, line, f"duplicate task id {task_id!r} in DAG "
                                                   f"{data.get('dag_id')!r}; give each task its "
                                                   "own id"))
            continue
        try:
            specs.append(build_dag(data, fileloc, dag_line=dag["line"],
                                   task_lines=dag["task_lines"], callables=dag["callables"]))
        except _Invalid as exc:
            errors.append(LoadError(fileloc, exc.line, str(exc)))
    return specs, errors


# -- validation shared by both formats --------------------------------------------------------
def _closest(key: str, valid: frozenset[str]) -> str:
    match = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(valid))}"


def _line(data: Any, key: Any) -> int | None:
    if isinstance(data, LineDict):
        return data.lines.get(key, data.line)
    return None


def build_task(task_id: str, raw: Any, defaults: dict[str, Any], line: int | None,
               params: dict[str, Any]) -> TaskSpec:
    if raw is None:
        raw = {}
    if isinstance(raw, str):
        raw = {"command": raw}
    if not isinstance(raw, dict):
        raise _Invalid(f"task {task_id!r} must be a mapping of task keys (command, deps, ...)", line)
    try:
        check_id(task_id, "task id")
    except ValueError as exc:
        raise _Invalid(str(exc), line) from None
    values = dict(defaults)  # validated once per DAG by the caller
    for key, value in raw.items():
        if key not in TASK_KEYS:
            raise _Invalid(f"task {task_id!r}: unknown key {key!r}{_closest(str(key), TASK_KEYS)}",
                           _line(raw, key) or line)
        try:
            values[key] = TASK_SCHEMA[key](value, params)
        except ValueError as exc:
            message = str(exc)
            word = getattr(raw, "words", {}).get(key)
            if word is not None and isinstance(value, bool):
                message = (f"YAML read {word!r} as the boolean {str(value).lower()}; "
                           f"quote it: {key}: \"{word}\"")
            raise _Invalid(f"task {task_id!r}: {key}: {message}", _line(raw, key) or line) from None
    return TaskSpec(task_id=str(task_id), line=line, **values)


def build_dag(data: dict[str, Any], fileloc: str, *, dag_line: int | None = None,
              task_lines: dict[str, int | None] | None = None,
              callables: dict[str, str] | None = None) -> DagSpec:
    """Validate one DAG's raw mapping and build its ``DagSpec``; raises ``_Invalid``.

    ``callables`` names the function of each Python ``@task`` (a Python DAG's tasks need
    neither command nor sensor).
    """
    line = dag_line if dag_line is not None else getattr(data, "line", None)

    def at(key: str) -> int | None:
        return _line(data, key) or line

    for key in data:
        if key not in DAG_KEYS:
            raise _Invalid(f"unknown DAG key {key!r}{_closest(str(key), DAG_KEYS)}",
                           _line(data, key) or line)
    try:
        dag_id = check_id(data.get("dag_id"), "dag_id")
    except ValueError as exc:
        raise _Invalid(str(exc), at("dag_id")) from None
    try:
        params = plain_params(data.get("params"), {})
    except ValueError as exc:
        raise _Invalid(f"params: {exc}", at("params")) from None
    opts: dict[str, Any] = {}
    for key, check in DAG_SCHEMA.items():
        if key not in data:
            default = DAG_DEFAULTS[key]
            opts[key] = default.copy() if isinstance(default, (list, dict)) else default
            continue
        try:
            opts[key] = check(data[key], params)
        except ValueError as exc:
            raise _Invalid(f"{key}: {exc}", at(key)) from None
    dates: dict[str, float | None] = {}
    for key in ("start_date", "end_date"):
        try:
            dates[key] = None if data.get(key) is None else instant(data[key], opts["timezone"])
        except ValueError as exc:
            raise _Invalid(f"{key}: {exc}", at(key)) from None
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise _Invalid("defaults must be a mapping of task keys", at("defaults"))
    checked_defaults: dict[str, Any] = {}
    for key, value in defaults.items():
        where = _line(defaults, key) or at("defaults")
        if key not in TASK_KEYS or key in ("deps",):
            raise _Invalid(f"defaults: unknown task key {key!r}{_closest(str(key), TASK_KEYS)}",
                           where)
        try:
            checked_defaults[key] = TASK_SCHEMA[key](value, params)
        except ValueError as exc:
            raise _Invalid(f"defaults: {key}: {exc}", where) from None
    tasks_raw = data.get("tasks")
    if not isinstance(tasks_raw, dict) or not tasks_raw:
        raise _Invalid("a DAG needs at least one task under tasks:", at("tasks"))
    callables = callables or {}
    tasks: dict[str, TaskSpec] = {}
    for task_id, raw in tasks_raw.items():
        tline = (task_lines or {}).get(task_id) or _line(tasks_raw, task_id)
        try:
            spec = build_task(task_id, raw, checked_defaults, tline, params)
        except TemplateError as exc:
            raise _Invalid(f"task {task_id!r}: {exc}", tline) from None
        spec.python_callable = callables.get(spec.task_id)
        if spec.command is None and spec.sensor is None and spec.python_callable is None:
            raise _Invalid(f"task {task_id!r} has neither command nor sensor; add "
                           "command: <shell command>", tline)
        tasks[spec.task_id] = spec
    for spec in tasks.values():
        for dep in spec.deps:
            if dep not in tasks:
                raise _Invalid(f"task {spec.task_id!r} depends on unknown task {dep!r}"
                               f"{_closest_task(dep, tasks)}", spec.line)
    cron, by_data = opts["schedule"], None
    if isinstance(cron, DatasetSchedule):
        cron, by_data = cron.cron, cron
    spec = DagSpec(
        dag_id=dag_id, fileloc=fileloc, tasks=tasks, description=opts["description"],
        schedule=cron, datasets=by_data, timezone=opts["timezone"], start_date=dates["start_date"],
        end_date=dates["end_date"], catchup=opts["catchup"],
        max_active_runs=opts["max_active_runs"], max_active_tasks=opts["max_active_tasks"],
        dagrun_timeout=opts["dagrun_timeout"], paused=opts["paused"], tags=opts["tags"],
        owner=opts["owner"], params=params, env=opts["env"], alerts=opts["alerts"],
        sla=opts["sla"], circuit_breaker=opts["circuit_breaker"], freshness=opts["datasets"],
        line=line,
    )
    finish_dag(spec)
    return spec


def _closest_task(name: str, tasks: dict[str, TaskSpec]) -> str:
    match = difflib.get_close_matches(name, list(tasks), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else "; add it under tasks: or fix the name"


def find_cycle(tasks: dict[str, TaskSpec]) -> list[str] | None:
    """A cycle as the list of tasks on it in order (first repeated at the end), or None."""
    colour: dict[str, int] = {}
    stack: list[str] = []
    for start in tasks:
        if colour.get(start):
            continue
        # Iterative DFS over upstream edges keeps deep chains clear of the recursion limit.
        frames = [(start, iter(tasks[start].deps))]
        colour[start] = 1
        stack.append(start)
        while frames:
            node, deps = frames[-1]
            nxt = next(deps, None)
            if nxt is None:
                frames.pop()
                stack.pop()
                colour[node] = 2
                continue
            state = colour.get(nxt, 0)
            if state == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                return list(reversed(cycle))
            if state == 0:
                colour[nxt] = 1
                stack.append(nxt)
                frames.append((nxt, iter(tasks[nxt].deps)))
    return None


def finish_dag(spec: DagSpec) -> None:
    """Check for cycles, then derive downstream lists and priority weights."""
    cycle = find_cycle(spec.tasks)
    if cycle:
        raise _Invalid(f"the tasks form a cycle: {' -> '.join(cycle)}; remove one of these "
                       "dependencies", spec.tasks[cycle[0]].line or spec.line)
    downstream: dict[str, list[str]] = {t: [] for t in spec.tasks}
    for task in spec.tasks.values():
        for dep in task.deps:
            downstream[dep].append(task.task_id)
    spec.downstream = downstream
    order = spec.topological_order()
    index = {t: i for i, t in enumerate(order)}
    # Descendant and ancestor sets as int bitsets: cheap to union even for long chains.
    below: dict[str, int] = {}
    for task_id in reversed(order):
        bits = 0
        for child in downstream[task_id]:
            bits |= below[child] | (1 << index[child])
        below[task_id] = bits
    above: dict[str, int] = {}
    for task_id in order:
        bits = 0
        for dep in spec.tasks[task_id].deps:
            bits |= above[dep] | (1 << index[dep])
        above[task_id] = bits
    weights = [spec.tasks[t].priority_weight for t in order]
    uniform = len(set(weights)) <= 1
    for task_id, task in spec.tasks.items():
        if task.weight_rule == "absolute":
            spec.priority[task_id] = task.priority_weight
            continue
        bits = above[task_id] if task.weight_rule == "upstream" else below[task_id]
        if uniform:
            extra = bits.bit_count() * task.priority_weight
        else:
            extra = sum(weights[i] for i in range(bits.bit_length()) if bits >> i & 1)
        spec.priority[task_id] = task.priority_weight + extra
