"""Loading pipeline folders: YAML and Python files into validated ``DagSpec``s and clear errors."""
from __future__ import annotations

import datetime as dt
import difflib
import functools
import gc
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowtui.runner import dsl
from flowtui.runner.durations import parse_duration
from flowtui.runner.model import (
    DAG_DEFAULTS, DAG_KEYS, DURATION_KEYS, TASK_KEYS, TRIGGER_RULES, WEIGHT_RULES,
    DagSpec, TaskSpec,
)
from flowtui.runner.templating import TemplateError, check_template
from flowtui.runner.yamlfile import DuplicateKeyError, LineDict, error_line, error_text, load_yaml

PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0",
           "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
           "@midnight": "0 0 * * *"}
_IMPORTS_FLOWTUI = re.compile(r"^\s*(from\s+flowtui\b|import\s+flowtui\b)", re.M)
_TASK_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


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


def load_folder(folder: str | os.PathLike[str]) -> LoadResult:
    """Load every pipeline file; one bad file never hides the good ones."""
    # Parsing allocates many small objects that all stay alive: the cyclic GC would only
    # rescan them over and over.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_folder(folder)
    finally:
        if enabled:
            gc.enable()


def _load_folder(folder: str | os.PathLike[str]) -> LoadResult:
    result = LoadResult()
    base = Path(folder)
    if not base.is_dir():
        result.errors.append(LoadError(str(base), None,
                                       "pipelines folder not found; pass --pipelines DIR or set "
                                       "FLOWTUI_PIPELINES"))
        return result
    origin: dict[str, str] = {}
    for path in pipeline_files(base):
        fileloc = str(path)
        if path.suffix == ".py":
            text = _read(path, result, fileloc)
            if text is None or not _IMPORTS_FLOWTUI.search(text):
                continue  # a helper script, not a pipeline file
            specs, errors = load_python(path, text)
        else:
            text = _read(path, result, fileloc)
            if text is None:
                continue
            specs, errors = load_yaml_text(fileloc, text, path.stem)
        result.files.append(fileloc)
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
    return result


def _read(path: Path, result: LoadResult, fileloc: str) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        result.files.append(fileloc)
        result.errors.append(LoadError(fileloc, None, f"cannot read the file: {exc}"))
        return None


# -- YAML ------------------------------------------------------------------------------------
def load_yaml_text(fileloc: str, text: str, stem: str) -> tuple[list[DagSpec], list[LoadError]]:
    try:
        data = load_yaml(text)
    except DuplicateKeyError as exc:
        return [], [LoadError(fileloc, exc.line, f"{exc}; remove or rename one of them")]
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
def load_python(path: Path, text: str | None = None) -> tuple[list[DagSpec], list[LoadError]]:
    fileloc = str(path)
    dags, error = exec_pipeline_file(path, text)
    if error is not None:
        return [], [error]
    specs: list[DagSpec] = []
    errors: list[LoadError] = []
    for dag in dags:
        if dag.duplicates:
            task_id, line = dag.duplicates[0]
            errors.append(LoadError(fileloc, line, f"duplicate task id {task_id!r} in DAG "
                                                   f"{dag.dag_id!r}; give each task its own id"))
            continue
        try:
            spec = build_dag(dag.as_dict(), fileloc, dag_line=dag.line,
                             task_lines={t.task_id: t.line for t in dag.tasks.values()})
        except _Invalid as exc:
            errors.append(LoadError(fileloc, exc.line, str(exc)))
            continue
        for task_id, task_obj in dag.tasks.items():
            spec.tasks[task_id].python_callable = task_obj.fn
        specs.append(spec)
    return specs, errors


def exec_pipeline_file(path: Path, text: str | None = None) -> tuple[list[dsl.DAG], LoadError | None]:
    """Execute a Python pipeline file and return the DAG objects it created."""
    fileloc = str(path)
    if text is None:
        text = path.read_text(encoding="utf-8")
    module_name = f"flowtui_pipeline_{abs(hash(fileloc))}"
    namespace: dict[str, Any] = {"__name__": module_name, "__file__": fileloc}
    previous = dsl._collected
    dsl._collected = collected = []
    dsl._context.clear()
    parent = str(path.parent)
    added_path = parent not in sys.path
    if added_path:
        sys.path.insert(0, parent)
    try:
        code = compile(text, fileloc, "exec")
        exec(code, namespace)
    except dsl.AuthoringError as exc:
        return [], LoadError(fileloc, exc.line, str(exc))
    except SyntaxError as exc:
        return [], LoadError(fileloc, exc.lineno, f"Python syntax error: {exc.msg}; fix the syntax")
    except BaseException as exc:  # an import-time exception: report it with its traceback
        tb = traceback.extract_tb(exc.__traceback__)
        line = next((f.lineno for f in reversed(tb) if f.filename == fileloc), None)
        user_tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # drop our exec()
        detail = "".join(traceback.format_exception(type(exc), exc, user_tb)).rstrip()
        return [], LoadError(fileloc, line, f"exception while importing the file: "
                                            f"{type(exc).__name__}: {exc}\n{detail}")
    finally:
        dsl._collected = previous
        dsl._context.clear()
        if added_path:
            sys.path.remove(parent)
    return collected, None


# -- validation shared by both formats --------------------------------------------------------
def _closest(key: str, valid: frozenset[str]) -> str:
    match = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(valid))}"


def _line(data: Any, key: Any) -> int | None:
    if isinstance(data, LineDict):
        return data.lines.get(key, data.line)
    return None


def _timezone(name: Any, line: int | None) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise _Invalid(f"timezone must be an IANA name such as Europe/Berlin, not {name!r}", line)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _Invalid(f"unknown timezone {name!r}; use an IANA name such as Europe/Berlin or UTC",
                       line) from None


def _instant(value: Any, tz: ZoneInfo, key: str, line: int | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=tz)
        return moment.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=tz).timestamp()
    if isinstance(value, str):
        try:
            if len(value) == 10:
                return _instant(dt.date.fromisoformat(value), tz, key, line)
            return _instant(dt.datetime.fromisoformat(value), tz, key, line)
        except ValueError:
            pass
    raise _Invalid(f"{key} must be a date (2026-01-01) or an ISO datetime, not {value!r}", line)


def check_schedule(schedule: Any, line: int | None) -> str | None:
    if schedule is None:
        return None
    if not isinstance(schedule, str):
        raise _Invalid(f"schedule must be a cron expression or a preset such as @daily, "
                       f"not {schedule!r}", line)
    expr = PRESETS.get(schedule.strip(), schedule.strip())
    if expr.startswith("@"):
        raise _Invalid(f"unknown schedule preset {schedule!r}; use @hourly, @daily, @weekly, "
                       "@monthly, @yearly or a cron expression", line)
    if len(expr.split()) != 5 or not _cron_valid(expr):
        raise _Invalid(f"bad cron expression {schedule!r}; write five fields "
                       "(minute hour day-of-month month day-of-week), e.g. '0 6 * * *'", line)
    return schedule.strip()


_CRON_FIELD = re.compile(r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*")
_CRON_LIMITS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


@functools.lru_cache(maxsize=1024)
def _cron_valid(expr: str) -> bool:
    """Plain numeric cron fields are checked here; names, L, # and the rest by croniter."""
    fields = expr.split()
    plain = True
    for text, (low, high) in zip(fields, _CRON_LIMITS):
        if not _CRON_FIELD.fullmatch(text):
            plain = False
            break
        for part in text.split(","):
            base, _, step = part.partition("/")
            if step and not 1 <= int(step) <= high:
                return False
            if base != "*":
                first, _, last = base.partition("-")
                if not low <= int(first) <= high or (last and not int(first) <= int(last) <= high):
                    return False
    if plain:
        return True
    from croniter import croniter

    return bool(croniter.is_valid(expr))


def _window(value: Any, line: int | None) -> str | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", str(value))
    if not match or int(match.group(1)) > 24 or int(match.group(3)) > 24 \
            or int(match.group(2)) > 59 or int(match.group(4)) > 59:
        raise _Invalid(f"window must look like \"06:00-22:00\", not {value!r}", line)
    return str(value).strip()


def _int(value: Any, key: str, line: int | None, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _Invalid(f"{key} must be a whole number of at least {minimum}, not {value!r}", line)
    return value


def _str_map(value: Any, key: str, line: int | None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(f"{key} must be a mapping of NAME: value, not {value!r}", line)
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _str_list(value: Any, key: str, line: int | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"{key} must be a list of names, not {value!r}", line)
    return list(value)


def build_task(task_id: str, raw: Any, defaults: dict[str, Any], line: int | None,
               params: dict[str, Any]) -> TaskSpec:
    if raw is None:
        raw = {}
    if isinstance(raw, str):
        raw = {"command": raw}
    if not isinstance(raw, dict):
        raise _Invalid(f"task {task_id!r} must be a mapping of task keys (command, deps, ...)", line)
    if not _TASK_ID.match(str(task_id)):
        raise _Invalid(f"task id {task_id!r} may hold only letters, digits, _, - and .", line)
    values = dict(defaults)  # validated once per DAG by the caller
    for key, value in raw.items():
        if key not in TASK_KEYS:
            raise _Invalid(f"task {task_id!r}: unknown key {key!r}{_closest(key, TASK_KEYS)}",
                           _line(raw, key) or line)
        try:
            values[key] = _task_value(key, value, params)
        except ValueError as exc:
            message = str(exc)
            word = getattr(raw, "words", {}).get(key)
            if word is not None and isinstance(value, bool):
                message = (f"YAML read {word!r} as the boolean {str(value).lower()}; "
                           f"quote it: {key}: \"{word}\"")
            raise _Invalid(f"task {task_id!r}: {key}: {message}", _line(raw, key) or line) from None
    return TaskSpec(task_id=str(task_id), line=line, **values)


def _task_value(key: str, value: Any, params: dict[str, Any]) -> Any:
    if key in DURATION_KEYS:
        return None if value is None else parse_duration(value)
    if key == "trigger_rule":
        if value not in TRIGGER_RULES:
            raise ValueError(f"unknown trigger rule {value!r}; use one of {', '.join(TRIGGER_RULES)}")
        return value
    if key == "weight_rule":
        if value not in WEIGHT_RULES:
            raise ValueError(f"unknown weight rule {value!r}; use downstream, upstream or absolute")
        return value
    if key == "mode":
        if value not in ("poke", "reschedule"):
            raise ValueError(f"unknown mode {value!r}; use poke or reschedule")
        return value
    if key == "shell":
        if value not in ("sh", "bash"):
            raise ValueError(f"unknown shell {value!r}; use sh or bash")
        return value
    if key in ("retries", "pool_slots"):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "pool_slots" else 0):
            raise ValueError(f"must be a whole number of at least {1 if key == 'pool_slots' else 0}, "
                             f"not {value!r}")
        return value
    if key == "priority_weight":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {value!r}")
        return value
    if key == "skip_exit_code":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 < value < 256):
            raise ValueError(f"must be an exit code from 1 to 255 (or null), not {value!r}")
        return value
    if key == "retry_on_exit_codes":
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in value):
            raise ValueError(f"must be a list of exit codes such as [1, 75], not {value!r}")
        return list(value)
    if key == "retry_jitter":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"must be a number from 0.0 to 1.0, not {value!r}")
        return float(value)
    if key in ("retry_exponential_backoff", "soft_fail"):
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
        return value
    if key == "deps":
        return _str_list_value(value)
    if key in ("outlets", "inlets"):
        return _str_list_value(value)
    if key == "env":
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping of NAME: value, not {value!r}")
        out = {str(k): "" if v is None else str(v) for k, v in value.items()}
        for v in out.values():
            check_template(v, params)
        return out
    if key in ("command", "cwd"):
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError("YAML read this as a boolean; quote it")
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {value!r}")
        check_template(value, params)
        return value
    if key == "window":
        return _window(value, None)
    if key == "sensor":
        return _sensor(value, params)
    if key in ("pool", "description"):
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {value!r}")
        return value
    return value


def _str_list_value(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a list of names, not {value!r}")
    return list(value)


_SENSOR_KINDS = ("file", "task", "http", "command")


def _sensor(value: Any, params: dict[str, Any]) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in _SENSOR_KINDS:
        raise ValueError("must be exactly one of {file: GLOB}, {task: DAG.TASK}, {http: URL}, "
                         f"{{command: CMD}}, not {value!r}")
    kind, arg = next(iter(value.items()))
    if not isinstance(arg, str) or not arg:
        raise ValueError(f"{kind} sensor needs a string argument, not {arg!r}")
    if kind == "task" and "." not in arg:
        raise ValueError(f"task sensor must name dag_id.task_id, not {arg!r}")
    check_template(arg, params)
    return {kind: arg}


def build_dag(data: dict[str, Any], fileloc: str, *, dag_line: int | None = None,
              task_lines: dict[str, int | None] | None = None) -> DagSpec:
    """Validate one DAG's raw mapping and build its ``DagSpec``; raises ``_Invalid``."""
    line = dag_line if dag_line is not None else getattr(data, "line", None)

    def at(key: str) -> int | None:
        return _line(data, key) or line

    for key in data:
        if key not in DAG_KEYS:
            raise _Invalid(f"unknown DAG key {key!r}{_closest(str(key), DAG_KEYS)}",
                           _line(data, key) or line)
    dag_id = data.get("dag_id")
    if not isinstance(dag_id, str) or not _TASK_ID.match(dag_id):
        raise _Invalid(f"dag_id {dag_id!r} may hold only letters, digits, _, - and .",
                       at("dag_id"))
    opts = {k: data.get(k, v) for k, v in DAG_DEFAULTS.items()}
    tz = _timezone(opts["timezone"], at("timezone"))
    schedule = check_schedule(opts["schedule"], at("schedule"))
    params = opts["params"] or {}
    if not isinstance(params, dict):
        raise _Invalid(f"params must be a mapping, not {params!r}", at("params"))
    defaults = opts["defaults"] or {}
    if not isinstance(defaults, dict):
        raise _Invalid("defaults must be a mapping of task keys", at("defaults"))
    checked_defaults: dict[str, Any] = {}
    for key, value in defaults.items():
        where = _line(defaults, key) or at("defaults")
        if key not in TASK_KEYS or key in ("deps",):
            raise _Invalid(f"defaults: unknown task key {key!r}{_closest(str(key), TASK_KEYS)}",
                           where)
        try:
            checked_defaults[key] = _task_value(key, value, params)
        except ValueError as exc:
            raise _Invalid(f"defaults: {key}: {exc}", where) from None
    tasks_raw = opts["tasks"]
    if not isinstance(tasks_raw, dict) or not tasks_raw:
        raise _Invalid("a DAG needs at least one task under tasks:", at("tasks"))
    env = _str_map(opts["env"], "env", at("env"))
    for value in env.values():
        try:
            check_template(value, params)
        except TemplateError as exc:
            raise _Invalid(f"env: {exc}", at("env")) from None
    tasks: dict[str, TaskSpec] = {}
    for task_id, raw in tasks_raw.items():
        tline = (task_lines or {}).get(task_id) or _line(tasks_raw, task_id)
        try:
            spec = build_task(str(task_id), raw, checked_defaults, tline, params)
        except TemplateError as exc:
            raise _Invalid(f"task {task_id!r}: {exc}", tline) from None
        is_python = task_lines is not None and spec.command is None and spec.sensor is None
        if spec.command is None and spec.sensor is None and not is_python:
            raise _Invalid(f"task {task_id!r} has neither command nor sensor; add "
                           "command: <shell command>", tline)
        tasks[spec.task_id] = spec
    for spec in tasks.values():
        for dep in spec.deps:
            if dep not in tasks:
                raise _Invalid(f"task {spec.task_id!r} depends on unknown task {dep!r}"
                               f"{_closest_task(dep, tasks)}", spec.line)
    dagrun_timeout = opts["dagrun_timeout"]
    try:
        dagrun_timeout = None if dagrun_timeout is None else parse_duration(dagrun_timeout)
    except ValueError as exc:
        raise _Invalid(f"dagrun_timeout: {exc}", at("dagrun_timeout")) from None
    sla = opts["sla"]
    if sla is not None:
        sla = _sla(sla, at("sla"))
    spec = DagSpec(
        dag_id=dag_id, fileloc=fileloc, tasks=tasks, description=str(opts["description"] or ""),
        schedule=schedule, timezone=tz.key,
        start_date=_instant(opts["start_date"], tz, "start_date", at("start_date")),
        end_date=_instant(opts["end_date"], tz, "end_date", at("end_date")),
        catchup=bool(opts["catchup"]),
        max_active_runs=_int(opts["max_active_runs"], "max_active_runs",
                             at("max_active_runs"), 1),
        max_active_tasks=_int(opts["max_active_tasks"], "max_active_tasks",
                              at("max_active_tasks"), 1),
        dagrun_timeout=dagrun_timeout, paused=bool(opts["paused"]),
        tags=_str_list(opts["tags"], "tags", at("tags")),
        owner=str(opts["owner"] or ""), params=dict(params), env=env,
        alerts=_str_list(opts["alerts"], "alerts", at("alerts")),
        sla=sla, circuit_breaker=opts["circuit_breaker"], line=line,
    )
    finish_dag(spec)
    return spec


def _sla(value: Any, line: int | None) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in (
            "deadline", "within"):
        raise _Invalid("sla must be {deadline: \"08:00\"} or {within: 2h}", line)
    key, arg = next(iter(value.items()))
    if key == "deadline":
        if not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", str(arg)):
            raise _Invalid(f"sla.deadline must be a time like \"08:00\", not {arg!r}", line)
        return {"deadline": str(arg)}
    try:
        return {"within": parse_duration(arg)}
    except ValueError as exc:
        raise _Invalid(f"sla.within: {exc}", line) from None


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
