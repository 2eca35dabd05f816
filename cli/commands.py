"""The CLI's commands that read: run, dags list/check/show, runs list, tasks list, logs."""
from __future__ import annotations

import argparse
import difflib
import os
import shutil
import sys
import time
from typing import Any

from flowtui.context import (emit_json, find_dag, find_run, known_dag, load_pipelines,
                             open_store, parse_conf, read_store)
from flowtui.progress import failed_upstreams, failure_lines, logs_command
from flowtui.render import echo, local_time, run_json, table, task_errors, task_json
from flowtui.runner.clock import SYSTEM
from flowtui.runner.config import Config
from flowtui.runner.durations import format_duration
from flowtui.runner.excerpt import find_excerpt
from flowtui.runner.freshness import policies as freshness_policies
from flowtui.runner.graph import shorten
from flowtui.runner.loader import LoadError, LoadResult, record_load
from flowtui.runner.text import GLYPHS, visible
from flowtui.store import Store
from flowtui.store.models import ImportError_, Run, Try
from flowtui.usage import EXIT_FAILED, EXIT_OK, UsageError

# The name the backfill command and some tests import from here, kept until they import
# flowtui.runner.loader.record_load.
sync = record_load


# -- run -------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from flowtui.runner.runs import parse_date, run_in_foreground
    from flowtui.progress import make_listener

    result = load_pipelines(config)
    dag = find_dag(result, args.dag_id, config)
    conf = parse_conf(args.conf)
    logical_date = parse_date(args.date, dag.timezone) if args.date else None
    store = open_store(config)
    record_load(store, result)
    # With --json, stdout carries the one JSON document: progress lines go to stderr.
    listener, display = make_listener(dag, live=sys.stdout.isatty() and not args.json,
                                      out=sys.stderr if args.json else sys.stdout,
                                      now=store.now)
    try:
        run = run_in_foreground(store, config, dag, logical_date=logical_date, conf=conf,
                                listener=listener)
    finally:
        display.close()
    tis = store.task_instances(run.pk)
    errors = task_errors(store, run, None if args.json else {
        ti.task_id for ti in tis if ti.state == "failed"})  # the only ones printed
    if args.json:
        document = run_json(run)
        document["tasks"] = [task_json(ti, errors.get(ti.task_id)) for ti in tis]
        emit_json(document)
    else:
        counts: dict[str, int] = {}
        for ti in tis:
            counts[ti.state] = counts.get(ti.state, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        now = store.now()
        took = format_duration((run.end_date or now) - (run.start_date or now))
        echo(f"run {run.run_id} of {run.dag_id}: {run.state} in {took} ({summary})")
        for line in failure_lines(args, config, dag, run, tis, errors):
            print(line)
    return EXIT_OK if run.state == "success" else EXIT_FAILED


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
    result = load_pipelines(config)
    paused: dict[str, tuple[bool, str | None]] = {}
    store = read_store(config) if config.has_database() else None
    if store is not None:
        paused = {d.dag_id: (d.paused, d.paused_reason) for d in store.dags()}
    aside = _runner_errors(store, result)
    if args.json:
        emit_json({
            "dags": [{"dag_id": d.dag_id, "file": d.fileloc, "schedule": d.schedule,
                      "datasets": list(d.datasets.datasets) if d.datasets else [],
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
        schedule = d.datasets.describe() if d.datasets else d.schedule or "manual"
        rows.append([d.dag_id, visible(schedule, inline=True), d.timezone, str(len(d.tasks)),
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
    result = load_pipelines(config)
    took = time.perf_counter() - started
    from flowtui.runner.alerting import dag_policy_errors, parse_alerting

    toml = str(config.home / "flowtui.toml")
    alerting = parse_alerting(config.raw, toml)
    result.errors.extend(LoadError(toml, None, e.split(": ", 1)[1] if e.startswith(toml) else e)
                         for e in alerting.errors)
    result.errors.extend(LoadError(e.split(": ", 1)[0], None, e.split(": ", 1)[1])
                         for e in dag_policy_errors(alerting, result.dags))
    watched, stale_errors = freshness_policies(result.dags, config.raw)  # [datasets.NAME]
    result.errors.extend(LoadError(toml, None, e.split(": ", 1)[1]) for e in stale_errors)
    store = read_store(config) if config.has_database() else None
    result.errors.extend(_unknown_datasets(result, set(watched) | set(config.raw.get(
        "datasets", {}) if isinstance(config.raw.get("datasets"), dict) else ()), store))
    aside = _runner_errors(store, result)
    if args.json:
        emit_json({"dags": sorted(result.dags), "files": len(result.files),
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


def _unknown_datasets(result: LoadResult, declared: set[str], store: Any) -> list[LoadError]:
    """A dataset schedule naming a dataset nothing knows (no task's outlet, no event, not in
    flowtui.toml): most likely a typo, and the DAG would wait for it forever (SPEC 9)."""
    known = {name for dag in result.dags.values() for task in dag.tasks.values()
             for name in task.outlets} | declared | result.refused_outlets
    if store is not None:
        known |= set(store.datasets.names())
    errors = []
    for dag in sorted(result.dags.values(), key=lambda d: d.dag_id):
        for name in dag.datasets.datasets if dag.datasets else ():
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
                errors.append(LoadError(dag.fileloc, None, (
                    f"DAG {dag.dag_id}: schedule names dataset {name!r}, which no task writes "
                    "(outlets), no event has named and flowtui.toml does not declare; it would "
                    "wait for it forever" + (f"; did you mean {close[0]!r}?" if close else
                                             f" (declare an outside feed with [datasets.\"{name}\"] "
                                             "in flowtui.toml)"))))
    return errors


def cmd_dags_show(args: argparse.Namespace, config: Config) -> int:
    from flowtui.runner.graph import draw_layers, next_fire_times

    result = load_pipelines(config)
    dag = find_dag(result, args.dag_id, config)
    echo(f"{dag.dag_id}  ({visible(os.path.relpath(dag.fileloc), inline=True)})")
    if dag.description:
        echo(dag.description)
    schedule = dag.datasets.describe() if dag.datasets else dag.schedule or "manual only"
    echo(f"schedule: {visible(schedule, inline=True)}  timezone: {dag.timezone}  "
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
    data = [(t.task_id, t.inlets, t.outlets) for t in dag.tasks.values() if t.inlets or t.outlets]
    if data:
        print()
        for task_id, inlets, outlets in data:
            echo(visible(f"  {task_id}: reads {', '.join(inlets) or '-'}; writes "
                         f"{', '.join(outlets) or '-'}", inline=True))
    if dag.schedule:
        print()
        fires = next_fire_times(dag, SYSTEM.now(), 5)
        print("next fire times:" if fires else "no more fire times: the schedule does not fire "
              "again before the end of the calendar (year 9999)")
        for line in fires:
            echo(f"  {line}")
    return EXIT_OK


# -- runs and tasks --------------------------------------------------------------------------
def cmd_runs_list(args: argparse.Namespace, config: Config) -> int:
    store = read_store(config)
    if args.dag_id is not None:
        known_dag(store, args.dag_id)
    runs = store.list_runs(args.dag_id, args.state, args.limit)
    now = store.now()
    if args.json:
        emit_json([run_json(r) for r in runs])
        return EXIT_OK
    rows = [[r.dag_id, r.run_id, r.run_type, f"{GLYPHS.get(r.state, ' ')} {r.state}"
             if r.state in ("success", "failed", "running") else r.state,
             local_time(r.start_date),
             format_duration((r.end_date or now) - r.start_date) if r.start_date else "-"]
            for r in runs]
    print(table(rows, ["DAG", "RUN_ID", "TYPE", "STATE", "STARTED", "DURATION"]))
    return EXIT_OK


def cmd_tasks_list(args: argparse.Namespace, config: Config) -> int:
    store = read_store(config)
    run = find_run(store, args.dag_id, args.run_id)
    tis = store.task_instances(run.pk)
    errors = task_errors(store, run)
    if args.json:
        emit_json([task_json(ti, errors.get(ti.task_id)) for ti in tis])
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
    run = find_run(store, args.dag_id, args.run_id)
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
    # The file when it is on this host; else what its runner shipped to the database (SPEC 10).
    remote = store.ran_elsewhere(chosen)
    copy = (lambda at: _copy_chunks(store, chosen, at, tty)) if remote else (
        lambda at: _copy_log(chosen.log_path, at, tty))
    offset = copy(0 if not remote else -1)
    if not args.follow:
        return EXIT_OK
    while True:
        current = [t for t in store.tries(run.pk, args.task_id)
                   if t.try_number == chosen.try_number][0]
        offset = copy(offset)
        if current.end_date is not None:
            offset = copy(offset)
            if remote:
                echo(_how_it_ended(current), file=sys.stderr)
                return EXIT_OK
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
            dag = load_pipelines(config).dags.get(run.dag_id)
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


def _copy_chunks(store: Store, attempt: Try, after: int, tty: bool) -> int:
    """Print a try's log shipped to the database after chunk ``after``; the last chunk's."""
    for seq, data in store.log_chunks(attempt.run_pk, attempt.task_id, attempt.try_number,
                                      after):
        if tty:
            sys.stdout.write(visible(data.decode("utf-8", "replace")))
        else:
            sys.stdout.buffer.write(data)
        after = seq
    sys.stdout.flush()
    return after


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
