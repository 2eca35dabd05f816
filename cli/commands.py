"""The CLI's commands: each reads or changes state only through the runner and the store."""
from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flowtui.cli import EXIT_FAILED, EXIT_OK, UsageError
from flowtui.progress import failed_upstreams, failure_lines, logs_command
from flowtui.render import (GLYPHS, echo, local_time, run_json, table, task_errors, task_json,
                            visible)
from flowtui.runner.config import Config, load_config
from flowtui.runner.durations import format_duration
from flowtui.runner.excerpt import find_excerpt
from flowtui.runner.graph import shorten
from flowtui.runner.loader import LoadError, LoadResult, load_folder
from flowtui.runner.model import DagSpec
from flowtui.store import Store
from flowtui.store.models import DagRecord, ImportError_, Run, Try


def dispatch(args: argparse.Namespace) -> int:
    config = load_config(getattr(args, "home", None), getattr(args, "pipelines", None))
    command = args.command
    if command == "run":
        return cmd_run(args, config)
    if command == "dags" and args.dags_command in ("list", "check", "show"):
        return {"list": cmd_dags_list, "check": cmd_dags_check,
                "show": cmd_dags_show}[args.dags_command](args, config)
    if command == "dags" and args.dags_command in ("pause", "unpause"):
        from flowtui.commands_ops import cmd_pause

        return cmd_pause(args, config, args.dags_command == "pause")
    if command == "ui":
        from flowtui.commands_ui import cmd_ui

        return cmd_ui(args, config)
    if command in ("alerts", "sla"):
        from flowtui import commands_alerts

        return int(getattr(commands_alerts, f"cmd_{command}")(args, config))
    if command == "backfill":
        from flowtui.commands_backfill import cmd_backfill

        return cmd_backfill(args, config)
    if command in ("runner", "trigger", "clear", "retry", "mark", "kill"):
        from flowtui import commands_ops

        return int(getattr(commands_ops, f"cmd_{command}")(args, config))
    if command == "runs":
        return cmd_runs_list(args, config)
    if command == "tasks":
        return cmd_tasks_list(args, config)
    if command == "logs":
        return cmd_logs(args, config)
    raise UsageError(f"unknown command {command!r}")


def _emit_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _open_store(config: Config, readonly: bool = False) -> Store:
    return Store.open(config.db_path, readonly=readonly)


def _load(config: Config) -> LoadResult:
    return load_folder(config.pipelines, config.dag_file_timeout)


def _dag(result: LoadResult, dag_id: str, config: Config) -> DagSpec:
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


def sync(store: Store, result: LoadResult) -> None:
    records = [DagRecord(d.dag_id, d.fileloc, d.description, d.schedule, d.timezone, d.owner,
                         d.tags, d.paused, None, True, len(d.tasks), time.time())
               for d in result.dags.values()]
    errors = [ImportError_(e.fileloc, e.line, e.message, time.time()) for e in result.errors]
    store.sync_dags(records, errors, result.files)


# -- run -------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from flowtui.runner.runs import parse_date, run_in_foreground
    from flowtui.progress import make_listener

    result = _load(config)
    dag = _dag(result, args.dag_id, config)
    conf = _parse_conf(args.conf)
    logical_date = parse_date(args.date, dag.timezone) if args.date else None
    store = _open_store(config)
    sync(store, result)
    # With --json, stdout carries the one JSON document: progress lines go to stderr.
    listener, display = make_listener(dag, live=sys.stdout.isatty() and not args.json,
                                      out=sys.stderr if args.json else sys.stdout)
    try:
        run = run_in_foreground(store, config, dag, logical_date=logical_date, conf=conf,
                                listener=listener)
    finally:
        display.close()
    tis = store.task_instances(run.pk)
    errors = task_errors(store, run)
    if args.json:
        document = run_json(run)
        document["tasks"] = [task_json(ti, errors.get(ti.task_id)) for ti in tis]
        _emit_json(document)
    else:
        counts: dict[str, int] = {}
        for ti in tis:
            counts[ti.state] = counts.get(ti.state, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        took = format_duration((run.end_date or time.time()) - (run.start_date or time.time()))
        echo(f"run {run.run_id} of {run.dag_id}: {run.state} in {took} ({summary})")
        for line in failure_lines(args, config, dag, run, tis, errors):
            print(line)
    return EXIT_OK if run.state == "success" else EXIT_FAILED


def _parse_conf(text: str | None) -> dict[str, Any]:
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


# -- dags ------------------------------------------------------------------------------------
def _error_json(e: Any) -> dict[str, Any]:
    return {"file": e.fileloc, "line": e.line, "message": e.message}


def _runner_errors(store: Store | None, result: LoadResult) -> list[ImportError_]:
    """The DAGs of this folder that the runner set aside because scheduling them failed."""
    if store is None:
        return []
    files = set(result.files)
    return [e for e in store.import_errors() if e.origin == "runner" and e.fileloc in files]


def cmd_dags_list(args: argparse.Namespace, config: Config) -> int:
    result = _load(config)
    paused: dict[str, tuple[bool, str | None]] = {}
    store = read_store(config) if config.db_path.exists() else None
    if store is not None:
        paused = {d.dag_id: (d.paused, d.paused_reason) for d in store.dags()}
    aside = _runner_errors(store, result)
    if args.json:
        _emit_json({
            "dags": [{"dag_id": d.dag_id, "file": d.fileloc, "schedule": d.schedule,
                      "timezone": d.timezone, "tasks": len(d.tasks), "tags": d.tags,
                      "owner": d.owner,
                      "paused": paused.get(d.dag_id, (d.paused, None))[0],
                      "paused_reason": paused.get(d.dag_id, (d.paused, None))[1]}
                     for d in sorted(result.dags.values(), key=lambda d: d.dag_id)],
            "errors": [_error_json(e) for e in result.errors],
            "runner_errors": [_error_json(e) for e in aside],
        })
        return EXIT_OK
    rows = []
    for d in sorted(result.dags.values(), key=lambda d: d.dag_id):
        is_paused, why = paused.get(d.dag_id, (d.paused, None))
        rows.append([d.dag_id, d.schedule or "manual", d.timezone, str(len(d.tasks)),
                     ("paused" + (f" ({why})" if why else "")) if is_paused else "",
                     os.path.relpath(d.fileloc)])
    print(table(rows, ["DAG", "SCHEDULE", "TIMEZONE", "TASKS", "PAUSED", "FILE"]))
    if result.errors:
        print(f"\n{len(result.errors)} import error(s); see 'flowtui dags check'")
    if aside:
        print(f"\n{len(aside)} DAG(s) set aside by the runner:")
        for error in aside:
            echo(f"  {LoadError(error.fileloc, error.line, error.message)}")
    return EXIT_OK


def cmd_dags_check(args: argparse.Namespace, config: Config) -> int:
    started = time.perf_counter()
    result = _load(config)
    took = time.perf_counter() - started
    from flowtui.runner.alerting import dag_policy_errors, parse_alerting

    toml = str(config.home / "flowtui.toml")
    alerting = parse_alerting(config.raw, toml)
    result.errors.extend(LoadError(toml, None, e.split(": ", 1)[1] if e.startswith(toml) else e)
                         for e in alerting.errors)
    result.errors.extend(LoadError(e.split(": ", 1)[0], None, e.split(": ", 1)[1])
                         for e in dag_policy_errors(alerting, result.dags))
    aside = _runner_errors(read_store(config) if config.db_path.exists() else None, result)
    if args.json:
        _emit_json({"dags": sorted(result.dags), "files": len(result.files),
                    "errors": [_error_json(e) for e in result.errors],
                    "runner_errors": [_error_json(e) for e in aside]})
    else:
        for error in result.errors:
            print(visible(str(error)))
        for error in aside:
            print(visible(f"{LoadError(error.fileloc, error.line, error.message)} "
                          "(recorded by the runner)"))
        problems = len(result.errors) + len(aside)
        status = "OK" if not problems else f"{problems} error(s)"
        print(f"{len(result.files)} file(s), {len(result.dags)} DAG(s), {status} "
              f"({took * 1000:.0f} ms)")
    return EXIT_FAILED if result.errors or aside else EXIT_OK


def cmd_dags_show(args: argparse.Namespace, config: Config) -> int:
    from flowtui.runner.graph import draw_layers, next_fire_times

    result = _load(config)
    dag = _dag(result, args.dag_id, config)
    echo(f"{dag.dag_id}  ({visible(os.path.relpath(dag.fileloc), inline=True)})")
    if dag.description:
        echo(dag.description)
    echo(f"schedule: {dag.schedule or 'manual only'}  timezone: {dag.timezone}  "
         f"tasks: {len(dag.tasks)}  max_active_runs: {dag.max_active_runs}")
    print()
    echo(draw_layers(dag))
    print()
    rows = []
    for task_id in dag.topological_order():
        t = dag.tasks[task_id]
        kind = "python" if t.python_callable else "sensor" if t.sensor else t.shell
        rows.append([task_id, kind, t.trigger_rule, str(t.retries), str(dag.priority[task_id]),
                     t.pool, ", ".join(t.deps) or "-"])
    print(table(rows, ["TASK", "KIND", "TRIGGER_RULE", "RETRIES", "PRIORITY", "POOL", "DEPS"]))
    if dag.schedule:
        print()
        fires = next_fire_times(dag, time.time(), 5)
        print("next fire times:" if fires else "no more fire times: the schedule does not fire "
              "again before the end of the calendar (year 9999)")
        for line in fires:
            echo(f"  {line}")
    return EXIT_OK


# -- runs and tasks --------------------------------------------------------------------------
NO_DATABASE = ("no flowtui database in {home}; run 'flowtui runner' or 'flowtui run' there "
               "first, or check --home")


def read_store(config: Config) -> Store:
    """The home's database, for a command that reads or acts on what was recorded. A home
    without one is most often a typo in --home: say so rather than show an empty answer."""
    if not config.db_path.exists():
        raise UsageError(NO_DATABASE.format(home=config.home))
    # Opened for writing so that a database another process is still creating gets its schema
    # (or waits for it) instead of looking empty; nothing is written when it is up to date.
    return _open_store(config)


def known_dag(store: Store, dag_id: str) -> None:
    """Raise "unknown DAG" unless the store has seen ``dag_id`` (a definition or a run)."""
    names = {d.dag_id for d in store.dags()}
    if dag_id in names or store.list_runs(dag_id, limit=1):
        return
    raise UsageError(unknown_dag(dag_id, names, str(store.path)))


def _get_run(store: Store, dag_id: str, run_id: str) -> Run:
    run = store.get_run(dag_id, run_id)
    if run is None:
        known_dag(store, dag_id)
        if not store.list_runs(dag_id, limit=1):
            raise UsageError(f"DAG {dag_id!r} has no runs in {store.path}")
        raise UsageError(f"DAG {dag_id!r} has no run {run_id!r}; "
                         f"'flowtui runs list {dag_id}' lists its runs")
    return run


def cmd_runs_list(args: argparse.Namespace, config: Config) -> int:
    store = read_store(config)
    if args.dag_id is not None:
        known_dag(store, args.dag_id)
    runs = store.list_runs(args.dag_id, args.state, args.limit)
    if args.json:
        _emit_json([run_json(r) for r in runs])
        return EXIT_OK
    rows = [[r.dag_id, r.run_id, r.run_type, f"{GLYPHS.get(r.state, ' ')} {r.state}"
             if r.state in ("success", "failed", "running") else r.state,
             local_time(r.start_date),
             format_duration((r.end_date or time.time()) - r.start_date) if r.start_date else "-"]
            for r in runs]
    print(table(rows, ["DAG", "RUN_ID", "TYPE", "STATE", "STARTED", "DURATION"]))
    return EXIT_OK


def cmd_tasks_list(args: argparse.Namespace, config: Config) -> int:
    store = read_store(config)
    run = _get_run(store, args.dag_id, args.run_id)
    tis = store.task_instances(run.pk)
    errors = task_errors(store, run)
    if args.json:
        _emit_json([task_json(ti, errors.get(ti.task_id)) for ti in tis])
        return EXIT_OK
    echo(f"{run.dag_id} {run.run_id}: {run.state}")
    rows = [[f"{GLYPHS[ti.state]} {ti.task_id}", ti.state, f"{ti.try_number}/{ti.max_tries}",
             format_duration(ti.duration) if ti.duration is not None else "-",
             "-" if ti.exit_code is None else str(ti.exit_code), ti.reason or ""]
            for ti in tis]
    lines = table(rows, ["TASK", "STATE", "TRY", "DURATION", "EXIT", "REASON"]).split("\n")
    print(lines[0])
    width = shutil.get_terminal_size().columns
    for ti, line in zip(tis, lines[1:]):
        print(line)
        excerpt = errors.get(ti.task_id)
        if excerpt and ti.state in ("failed", "up_for_retry"):
            # Under its row, cut to one terminal line: the table stays readable.
            print(shorten("    " + visible(excerpt.strip(), inline=True), max(20, width - 1)))
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, config: Config) -> int:
    store = read_store(config)
    run = _get_run(store, args.dag_id, args.run_id)
    tries = store.tries(run.pk, args.task_id)
    if not tries:
        raise UsageError(_no_log(args, config, store, run))
    chosen = tries[-1]
    if args.try_number is not None:
        match = [t for t in tries if t.try_number == args.try_number]
        if not match:
            raise UsageError(f"task {args.task_id!r} has tries 1 to {tries[-1].try_number}, "
                             f"not {args.try_number}")
        chosen = match[0]
    tty = sys.stdout.isatty()
    offset = _copy_log(chosen.log_path, 0, tty)
    if not args.follow:
        return EXIT_OK
    while True:
        current = [t for t in store.tries(run.pk, args.task_id)
                   if t.try_number == chosen.try_number][0]
        offset = _copy_log(chosen.log_path, offset, tty)
        if current.end_date is not None:
            offset = _copy_log(chosen.log_path, offset, tty)
            # On stderr: stdout stays the log's bytes, exactly, for a pipe or a file.
            if tty and not _ends_line(chosen.log_path, offset):
                print(flush=True)
            echo(_how_it_ended(current), file=sys.stderr)
            return EXIT_OK
        time.sleep(0.2)


def _no_log(args: argparse.Namespace, config: Config, store: Store, run: Run) -> str:
    """Why a task of a run has no log: it is not in the run, it never ran and why, or it has
    not started yet."""
    tis = {ti.task_id: ti for ti in store.task_instances(run.pk)}
    ti = tis.get(args.task_id)
    if ti is None:
        return f"run {run.run_id} of {run.dag_id} has no task {args.task_id!r}"
    if ti.state == "upstream_failed":
        dag = None
        if config.pipelines.is_dir():  # the dependencies live in the pipeline file, not the store
            dag = _load(config).dags.get(run.dag_id)
        failed = failed_upstreams(dag, tis, args.task_id)
        if failed:
            which = "upstream " + failed[0] if len(failed) == 1 else \
                "upstreams " + ", ".join(failed)
            return (f"{args.task_id} never ran: its {which} failed "
                    f"(run {logs_command(args, config, run, failed[0])})")
        return f"{args.task_id} never ran: {ti.reason or 'an upstream task failed'}"
    if ti.state in ("skipped", "success", "failed"):  # set by hand or a trigger rule
        return f"{args.task_id} never ran: it is {ti.state} ({ti.reason or 'no reason recorded'})"
    return f"task {args.task_id!r} has not started yet in run {run.run_id} ({ti.state})"


def _how_it_ended(attempt: Try) -> str:
    parts = [attempt.state]
    if attempt.exit_code is not None:
        parts.append(f"exit {attempt.exit_code}")
    elif attempt.reason:
        parts.append(attempt.reason)
    excerpt = find_excerpt(attempt.log_path) if attempt.state != "success" else None
    detail = f" ({visible(shorten(excerpt.text.strip(), 300), inline=True)})" if excerpt else ""
    return f"-- try {attempt.try_number} ended: {', '.join(parts)}{detail}"


def _ends_line(path: str, offset: int) -> bool:
    """Whether what was printed of the log ends with a newline (or nothing was printed)."""
    if offset == 0:
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(offset - 1)
            return fh.read(1) == b"\n"
    except OSError:
        return True


def _copy_log(path: str, offset: int, tty: bool) -> int:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            while True:
                chunk = fh.read(1 << 16)
                if not chunk:
                    break
                offset += len(chunk)
                if tty:
                    sys.stdout.write(visible(chunk.decode("utf-8", "replace")))
                else:
                    sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    except FileNotFoundError:
        pass
    return offset
