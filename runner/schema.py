"""The kind and range of every pipeline key: one table for YAML and Python DAGs alike.

A check takes the raw value and the DAG's params and returns the value to keep, or raises
``ValueError`` with what to write instead. Ranges are what the runner can schedule: a value that
passes here cannot overflow a timer, an SQLite integer or a file name later.
"""
from __future__ import annotations

import datetime as dt
import functools
import math
import re
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowtui.runner.durations import parse_duration
from flowtui.runner.model import (
    DAG_KEYS, MATCHES, TASK_KEYS, TRIGGER_RULES, WEIGHT_RULES, DatasetSchedule,
)
from flowtui.runner.templating import check_shell_template, check_template

Check = Callable[[Any, dict[str, Any]], Any]

MAX_ID = 100  # ids become file and folder names under logs/
MAX_COUNT = 2**31 - 1  # slots, runs, weights: far from SQLite's 2^63 even when summed
MAX_RETRIES = 1000  # exponential backoff doubles the delay per try
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0",
           "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
           "@midnight": "0 0 * * *"}


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(f"{what} {value!r} may hold only letters, digits, _, - and .")
    if len(value) > MAX_ID:
        raise ValueError(f"{what} {value[:40]}... is {len(value)} characters long; at most "
                         f"{MAX_ID} are allowed, since it becomes a file name: shorten it")
    return value


# -- value kinds -----------------------------------------------------------------------------
def duration(optional: bool = False) -> Check:
    def check(value: Any, params: dict[str, Any]) -> float | None:
        if value is None and optional:
            return None
        return parse_duration(value)
    return check


def count(low: int, high: int = MAX_COUNT) -> Check:
    def check(value: Any, params: dict[str, Any]) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}, not {value!r}")
        return value
    return check


def choice(noun: str, *options: str, hint: str = "") -> Check:
    def check(value: Any, params: dict[str, Any]) -> str:
        if value not in options:
            raise ValueError(f"unknown {noun} {value!r}; use {hint or ', '.join(options)}")
        return value
    return check


def flag(value: Any, params: dict[str, Any]) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def text(value: Any, params: dict[str, Any]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {value!r}")
    return value


def queue_name(value: Any, params: dict[str, Any]) -> str:
    if not isinstance(value, str) or not value.strip() or "," in value or value != value.strip():
        raise ValueError(f"must be a queue name such as gpu (no commas or spaces), not {value!r}")
    return value


def template(value: Any, params: dict[str, Any]) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("YAML read this as a boolean; quote it")
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {value!r}")
    check_template(value, params)
    return value


def shell_command(value: Any, params: dict[str, Any]) -> str | None:
    """A shell command's template: also one the shell would expand (not in a quoted heredoc)."""
    command = template(value, params)
    if command is not None:
        check_shell_template(command)
    return command


def env_map(value: Any, params: dict[str, Any]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of NAME: value, not {value!r}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, (str, int, float, type(None))):
            raise ValueError(f"must map names to strings or numbers, not {key!r}: {item!r}")
        out[key] = "" if item is None else str(item)
        check_template(out[key], params)
    return out


def names(value: Any, params: dict[str, Any]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a list of names, not {value!r}")
    return list(value)


def dataset_names(value: Any, params: dict[str, Any]) -> list[str]:
    """Dataset names: free text (``/`` and ``.`` allowed), never empty."""
    found = names(value, params)
    if any(not n.strip() for n in found):
        raise ValueError("a dataset name cannot be empty; write it, for example warehouse.orders")
    return found


def fraction(value: Any, params: dict[str, Any]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"must be a number from 0.0 to 1.0, not {value!r}")
    return float(value)


def exit_code(value: Any, params: dict[str, Any]) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not 0 < value < 256):
        raise ValueError(f"must be an exit code from 1 to 255 (or null), not {value!r}")
    return value


def exit_codes(value: Any, params: dict[str, Any]) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v < 256 for v in value):
        raise ValueError(f"must be a list of exit codes from 1 to 255 such as [1, 75], "
                         f"not {value!r}")
    return list(value)


_WINDOW = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


def window(value: Any, params: dict[str, Any]) -> str | None:
    if value is None:
        return None
    match = _WINDOW.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"must look like \"06:00-22:00\", not {value!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"{value!r} is not a time range: hours go from 00 to 23 (24:00 only "
                         "as the end), minutes from 00 to 59")
    if (h1, m1) == (h2 % 24, m2):
        raise ValueError(f"{value!r} is empty and never opens; give the hours the task may "
                         "start in, such as \"06:00-22:00\", or drop window to start any time")
    return f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"


_SENSOR_KINDS = ("file", "task", "http", "command")


def sensor(value: Any, params: dict[str, Any]) -> dict[str, Any] | None:
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
    if kind == "command":
        check_shell_template(arg)
    return {kind: arg}


def plain_params(value: Any, params: dict[str, Any]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"must be a mapping of NAME: value, not {value!r}")
    for key, item in value.items():
        if not _is_plain(item):
            raise ValueError(f"{key}: must be a string, number, true/false, null, or a list or "
                             f"mapping of these, not {item!r}")
    return dict(value)


def _is_plain(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 32:
        return False
    if isinstance(value, list):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def circuit_breaker(value: Any, params: dict[str, Any]) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"consecutive_failures"}:
        raise ValueError(f"must be a mapping such as {{consecutive_failures: 5}}, not {value!r}")
    try:
        limit = count(1)(value["consecutive_failures"], params)
    except ValueError as exc:
        raise ValueError(f"consecutive_failures {exc}") from None
    return {"consecutive_failures": limit}


def sla(value: Any, params: dict[str, Any]) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in (
            "deadline", "within"):
        raise ValueError("must be {deadline: \"08:00\"} or {within: 2h}")
    key, arg = next(iter(value.items()))
    if key == "deadline":
        if not isinstance(arg, str) or not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", arg):
            raise ValueError(f"deadline must be a time like \"08:00\", not {arg!r}")
        return {"deadline": arg}
    try:
        return {"within": parse_duration(arg)}
    except ValueError as exc:
        raise ValueError(f"within: {exc}") from None


def freshness(value: Any, where: str = "freshness") -> dict[str, Any]:
    """``{max_age: 26h}`` or ``{deadline: "08:00"}`` (in the producing DAG's timezone)."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in (
            "max_age", "deadline"):
        raise ValueError(f"{where} must be {{max_age: 26h}} or {{deadline: \"08:00\"}}")
    key, arg = next(iter(value.items()))
    if key == "deadline":
        if not isinstance(arg, str) or not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", arg):
            raise ValueError(f"{where}: deadline must be a time like \"08:00\", not {arg!r}")
        return {"deadline": arg}
    try:
        return {"max_age": parse_duration(arg)}
    except ValueError as exc:
        raise ValueError(f"{where}: max_age: {exc}") from None


def dataset_block(value: Any, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A DAG's ``datasets:`` block: ``{NAME: {freshness: {max_age: 26h}}}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("must map dataset names to their settings, for example "
                         "{warehouse.orders: {freshness: {max_age: 26h}}}")
    out: dict[str, dict[str, Any]] = {}
    for name, settings in value.items():
        if not isinstance(settings, dict) or set(settings) - {"freshness"}:
            raise ValueError(f"{name}: takes freshness: {{max_age: 26h}} or "
                             "{deadline: \"08:00\"}")
        if "freshness" in settings:
            out[str(name)] = freshness(settings["freshness"], f"{name}: freshness")
    return out


def timezone(value: Any, params: dict[str, Any]) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be an IANA name such as Europe/Berlin, not {value!r}")
    try:
        return ZoneInfo(value).key
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}; use an IANA name such as Europe/Berlin "
                         "or UTC") from None


def instant(value: Any, tz: str) -> float | None:
    """A date (midnight in ``tz``) or an ISO datetime as a Unix time."""
    zone = ZoneInfo(tz)
    if isinstance(value, str):
        try:
            value = (dt.date.fromisoformat(value) if len(value) == 10
                     else dt.datetime.fromisoformat(value))
        except ValueError:
            pass
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if isinstance(value, dt.datetime):
        try:
            if not 1900 <= value.year <= 9998:
                raise OverflowError
            return (value if value.tzinfo else value.replace(tzinfo=zone)).timestamp()
        except (OverflowError, ValueError, OSError):
            raise ValueError(f"{value.isoformat()} is out of range; use a date from 1900 "
                             "to 9998") from None
    raise ValueError(f"must be a date (2026-01-01) or an ISO datetime, not {value!r}")


# -- schedules -------------------------------------------------------------------------------
def schedule(value: Any, params: dict[str, Any]) -> str | DatasetSchedule | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return dataset_schedule(value, params)
    if not isinstance(value, str):
        raise ValueError(f"must be a cron expression or a preset such as @daily, not {value!r}")
    expr = PRESETS.get(value.strip(), value.strip())
    if expr.startswith("@"):
        raise ValueError(f"unknown schedule preset {value!r}; use @hourly, @daily, @weekly, @monthly, "
                         "@yearly or a cron expression")
    if len(expr.split()) != 5 or not cron_valid(expr):
        raise ValueError(f"bad cron expression {value!r}; write five fields (minute hour "
                         "day-of-month month day-of-week), e.g. '0 6 * * *'")
    if not cron_fires(expr):
        raise ValueError(f"cron expression {value!r} never fires: no month has that day; "
                         "fix the day-of-month or month field")
    return value.strip()


def dataset_schedule(value: dict, params: dict[str, Any]) -> DatasetSchedule:
    unknown = set(value) - {"datasets", "match", "cron"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}; a schedule mapping takes "
                         "datasets, match and cron")
    datasets = names(value.get("datasets"), params)  # (empty names are refused below)
    if not datasets or not all(d.strip() for d in datasets):
        raise ValueError("datasets: name at least one dataset, for example "
                         "{datasets: [warehouse.orders]}")
    match = value.get("match", "same_partition")
    if match not in MATCHES:
        raise ValueError(f"match: must be same_partition or any, not {match!r}")
    cron = value.get("cron")
    if cron is not None and not isinstance(cron, str):
        raise ValueError(f"cron: must be a cron expression or a preset, not {cron!r}")
    return DatasetSchedule(tuple(dict.fromkeys(datasets)), match,
                           schedule(cron, params) if cron else None)  # type: ignore[arg-type]


_CRON_FIELD = re.compile(r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*")
_CRON_LIMITS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


@functools.lru_cache(maxsize=1024)
def cron_valid(expr: str) -> bool:
    """Plain numeric cron fields are checked here; names, L, # and the rest by croniter."""
    fields = expr.split()
    plain = True
    for field_text, (low, high) in zip(fields, _CRON_LIMITS):
        if not _CRON_FIELD.fullmatch(field_text):
            plain = False
            break
        for part in field_text.split(","):
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


@functools.lru_cache(maxsize=1024)
def cron_fires(expr: str) -> bool:
    """Whether the expression ever matches a real date (``0 0 30 2 *`` never does)."""
    fields = expr.split()
    if fields[2] == "*" or fields[3] == "*" or fields[4] != "*":
        return True  # any day of a month, or day-of-week widens the match
    from croniter import croniter

    try:
        # A leap day recurs within 8 years; croniter gives up when nothing matches.
        croniter(expr, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except Exception:
        return False
    return True


# -- the tables ------------------------------------------------------------------------------
TASK_SCHEMA: dict[str, Check] = {
    "command": shell_command, "shell": choice("shell", "sh", "bash"), "deps": names,
    "trigger_rule": choice("trigger rule", *TRIGGER_RULES), "retries": count(0, MAX_RETRIES),
    "retry_delay": duration(), "retry_exponential_backoff": flag,
    "max_retry_delay": duration(optional=True), "retry_jitter": fraction,
    "retry_on_exit_codes": exit_codes, "execution_timeout": duration(optional=True),
    "kill_grace": duration(), "skip_exit_code": exit_code, "pool": text,
    "pool_slots": count(1), "queue": queue_name, "priority_weight": count(-MAX_COUNT),
    "weight_rule": choice("weight rule", *WEIGHT_RULES, hint="downstream, upstream or absolute"),
    "cwd": template, "env": env_map, "window": window,
    "heartbeat_timeout": duration(optional=True), "sensor": sensor,
    "poke_interval": duration(), "timeout": duration(optional=True), "soft_fail": flag,
    "mode": choice("mode", "poke", "reschedule"), "outlets": dataset_names, "inlets": dataset_names,
    "description": text,
}

# DAG keys checked on their own; dag_id, timezone-bound dates, params, defaults and tasks are
# checked by the loader, which needs them to check the rest.
DAG_SCHEMA: dict[str, Check] = {
    "description": text, "schedule": schedule, "timezone": timezone, "catchup": flag,
    "max_active_runs": count(1), "max_active_tasks": count(1),
    "dagrun_timeout": duration(optional=True), "paused": flag, "tags": names, "owner": text,
    "env": env_map, "alerts": names, "sla": sla, "circuit_breaker": circuit_breaker,
    "datasets": dataset_block,
}
DAG_STRUCTURE = frozenset({"dag_id", "start_date", "end_date", "params", "defaults", "tasks"})

assert set(TASK_SCHEMA) == TASK_KEYS, "every task key needs a check"
assert set(DAG_SCHEMA) | DAG_STRUCTURE == DAG_KEYS, "every DAG key needs a check"

