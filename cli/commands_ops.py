"""CLI commands that change state: runner, trigger, pause/unpause, clear, retry, mark, kill."""
from __future__ import annotations

import argparse
import os
import sys

from flowtui.context import (find_dag, find_run, load_pipelines, open_store, parse_conf,
                             read_store)
from flowtui.render import echo, local_time
from flowtui.runner import actions
from flowtui.runner.config import Config
from flowtui.runner.loader import record_load
from flowtui.runner.model import DagSpec
from flowtui.store import Store
from flowtui.store.models import Run
from flowtui.usage import EXIT_OK, UsageError


def cmd_runner(args: argparse.Namespace, config: Config) -> int:
    from flowtui.runner.daemon import Daemon

    if not config.pipelines.is_dir():
        raise UsageError(f"pipelines folder {config.pipelines} not found; pass --pipelines DIR")
    queues = None
    if args.queues is not None:
        queues = frozenset(q.strip() for q in args.queues.split(",") if q.strip())
        if not queues:
            raise UsageError("--queues is empty; name the queues this host serves, for example "
                             "default,gpu")
    daemon = Daemon(config, queues=queues)
    echo(f"flowtui runner: pid {os.getpid()}, home {config.home}, pipelines "
         f"{config.pipelines}" + (f", queues {','.join(sorted(queues))}" if queues else ""),
         file=sys.stderr, flush=True)
    daemon.serve()
    return EXIT_OK


def cmd_trigger(args: argparse.Namespace, config: Config) -> int:
    from flowtui.runner.runs import parse_date

    result = load_pipelines(config)
    conf = parse_conf(args.conf)
    store = open_store(config)
    record_load(store, result)
    try:
        dag = find_dag(result, args.dag_id, config)
    except UsageError:
        run = _trigger_last_good(store, args, conf)
        if run is None:
            raise
    else:
        logical = parse_date(args.date, dag.timezone) if args.date else None
        run = actions.trigger(store, dag, logical_date=logical, conf=conf)
        echo(run.run_id)
        if actions.live_daemon(store) is None:
            echo("flowtui: no runner is alive for this home; 'flowtui runner' will start the "
                 "run", file=sys.stderr)
        return EXIT_OK
    store.record_action("trigger", dag_id=run.dag_id, run_id=run.run_id, detail={"conf": conf})
    echo(run.run_id)
    daemon = actions.live_daemon(store)
    if daemon is not None:
        actions.wake(store, daemon)
    return EXIT_OK


def _trigger_last_good(store: Store, args: argparse.Namespace, conf: dict) -> Run | None:
    """A DAG whose file broke after the store saw it: queue a run for the runner's last good
    definition (the runner fills in its tasks)."""
    from flowtui.runner.clock import iso
    from flowtui.runner.runs import RunError, parse_date

    timezone = store.active_dag_timezone(args.dag_id)
    if timezone is None or actions.live_daemon(store) is None:
        return None
    logical = parse_date(args.date, timezone) if args.date else float(int(store.now()))
    try:
        run = store.create_run(dag_id=args.dag_id, run_id=f"manual__{iso(logical, timezone)}",
                               run_type="manual", logical_date=logical,
                               data_interval_start=logical, data_interval_end=logical,
                               conf=conf, state="queued", runner_id=None, tasks=[],
                               cause="operator", unique=True)  # .2, .3: as any trigger
    except Exception as exc:
        raise RunError(str(exc)) from None
    echo(f"flowtui: warning: {args.dag_id}'s file has errors ('flowtui dags check'); the "
         "runner uses its last good definition", file=sys.stderr)
    return run


def cmd_pause(args: argparse.Namespace, config: Config) -> int:
    return _set_paused(args, config, True)


def cmd_unpause(args: argparse.Namespace, config: Config) -> int:
    return _set_paused(args, config, False)


def _set_paused(args: argparse.Namespace, config: Config, paused: bool) -> int:
    result = load_pipelines(config)
    dag = find_dag(result, args.dag_id, config)
    store = open_store(config)
    record_load(store, result)
    if not paused and args.dry_run:
        from flowtui.runner.daemon import due_intervals, last_scheduled

        due = due_intervals(dag, last_scheduled(store, dag.dag_id), store.now())
        by_data = (store.datasets.readiness(dag.dag_id, dag.datasets.datasets,
                                            dag.datasets.match).ready if dag.datasets else {})
        print(f"unpausing {dag.dag_id} would create {len(due) + len(by_data)} run(s):")
        for interval in due:
            print(f"  scheduled  logical date {local_time(interval.start)}  "
                  f"interval ends {local_time(interval.end)}")
        for partition, events in by_data.items():  # SPEC 9: what arrived while it was paused
            echo(f"  dataset    partition {partition}  from "
                 f"{', '.join(sorted(events))}")
        return EXIT_OK
    actions.set_paused(store, dag.dag_id, paused)
    print(f"{dag.dag_id} {'paused' if paused else 'unpaused'}")
    return EXIT_OK


def _target(args: argparse.Namespace, config: Config) -> tuple[Store, DagSpec, Run]:
    dag = find_dag(load_pipelines(config), args.dag_id, config)
    store = read_store(config)
    run = find_run(store, args.dag_id, args.run_id)
    return store, dag, run


def _report(outcome: actions.Outcome) -> int:
    where = "applied by " + outcome.applied_by if outcome.applied_by != "store" else (
        "recorded; no runner is alive, the next one carries on")
    detail = f" ({outcome.detail})" if outcome.detail else ""
    echo(f"{outcome.action} {outcome.run.dag_id} {outcome.run.run_id}: "
         f"{', '.join(outcome.task_ids) or '-'}: {where}{detail}")
    return EXIT_OK


def cmd_clear(args: argparse.Namespace, config: Config) -> int:
    store, dag, run = _target(args, config)
    options = {"downstream": args.downstream, "upstream": args.upstream,
               "failed_only": args.failed_only}
    tis = {t.task_id: t for t in store.task_instances(run.pk)}
    affected = actions.plan(dag, tis, list(args.task_ids), downstream=args.downstream,
                            upstream=args.upstream, failed_only=args.failed_only)
    if not affected:
        raise UsageError("nothing to clear: no task matches (with --failed-only, none failed)")
    if not args.yes:
        echo(f"clear {len(affected)} task(s) of {run.dag_id} {run.run_id}:")
        for task_id in affected:
            echo(f"  {task_id} ({tis[task_id].state})")
        if not sys.stdin.isatty():
            raise UsageError("confirmation needed: run again with --yes (stdin is not a terminal)")
        if input("proceed? [y/N] ").strip().lower() not in ("y", "yes"):
            echo("nothing changed")
            return EXIT_OK
    return _report(actions.submit(store, dag, run, "clear", list(args.task_ids), options=options,
                                  config=config))


def cmd_retry(args: argparse.Namespace, config: Config) -> int:
    store, dag, run = _target(args, config)
    return _report(actions.submit(store, dag, run, "retry", [args.task_id], config=config))


def cmd_mark(args: argparse.Namespace, config: Config) -> int:
    store, dag, run = _target(args, config)
    options = {"state": args.state, "downstream": args.downstream, "upstream": args.upstream}
    return _report(actions.submit(store, dag, run, "mark", list(args.task_ids), options=options,
                                  config=config))


def cmd_kill(args: argparse.Namespace, config: Config) -> int:
    store, dag, run = _target(args, config)
    return _report(actions.submit(store, dag, run, "kill", [args.task_id], config=config))
