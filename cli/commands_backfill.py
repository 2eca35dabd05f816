"""``flowtui backfill``: create one (previewed, throttled), or list, pause, resume, cancel."""
from __future__ import annotations

import argparse
import json
import sys

from flowtui.context import find_dag, load_pipelines
from flowtui.render import echo
from flowtui.runner.clock import iso
from flowtui.runner import actions
from flowtui.runner import backfill as bf
from flowtui.runner.config import Config
from flowtui.runner.loader import record_load
from flowtui.store import Store
from flowtui.usage import EXIT_FAILED, EXIT_OK, UsageError

MANAGE = ("list", "pause", "resume", "cancel")


def cmd_backfill(args: argparse.Namespace, config: Config) -> int:
    if args.target[0] in MANAGE:
        return _manage(args, config)
    if len(args.target) != 1:
        raise UsageError("backfill takes one DAG: flowtui backfill DAG --start D --end D")
    if not args.start or not args.end:
        raise UsageError("backfill needs --start and --end (YYYY-MM-DD)")
    if args.parallelism < 1:
        raise UsageError("--parallelism must be at least 1")
    result = load_pipelines(config)
    dag = find_dag(result, args.target[0], config)
    if args.pool and config.pool_size(args.pool) is None:
        raise UsageError(f"pool {args.pool!r} is not defined; add it under [pools] in "
                         "flowtui.toml")
    store = Store.open(config.database)
    record_load(store, result)
    if args.dry_run:
        plan, _ = bf.prepare(store, dag, args.start, args.end, reprocess=args.reprocess,
                             order=args.order, allow_many=args.yes)
        return _print_plan(dag.dag_id, dag.timezone, plan, args.json)
    backfill_id, plan = bf.queue_backfill(
        store, dag, args.start, args.end, reprocess=args.reprocess, order=args.order,
        parallelism=args.parallelism, pool=args.pool, allow_many=args.yes)
    if backfill_id is None:
        print(f"nothing to backfill: all {len(plan.skip)} date(s) skipped "
              f"(first reason: {plan.skip[0][1] if plan.skip else 'no intervals'})")
        return EXIT_OK
    if not args.wait:
        print(f"backfill {backfill_id}: {len(plan.create)} run(s) queued, {len(plan.skip)} "
              f"skipped; 'flowtui backfill list' shows its progress")
        daemon = actions.live_daemon(store)
        if daemon is None:
            print("flowtui: no runner is alive for this home; 'flowtui runner' will execute it",
                  file=sys.stderr)
        else:
            actions.wake(store, daemon)
        return EXIT_OK
    total = len(plan.create)

    def show(counts: dict[str, int]) -> None:
        finished = counts["done"] + counts["failed"]
        width = 30
        filled = int(width * finished / total) if total else width
        print(f"backfill {backfill_id} [{'#' * filled}{'.' * (width - filled)}] "
              f"{finished}/{total} runs: {counts['done']} succeeded, {counts['failed']} failed, "
              f"{counts['running']} running", file=sys.stderr if args.json else sys.stdout,
              flush=True)

    final = bf.run_in_foreground(store, config, dag, backfill_id, on_progress=show)
    if args.json:
        print(json.dumps(bf.to_json(store, bf.get_backfill(store, backfill_id)), indent=2))
    return EXIT_OK if final["failed"] == 0 and final["left"] == 0 and final["running"] == 0 \
        else EXIT_FAILED


def _print_plan(dag_id: str, timezone: str, plan: bf.Plan, as_json: bool) -> int:
    def local(ts: float) -> str:
        return (iso(ts, timezone) or "")[:16].replace("T", " ")

    if as_json:
        print(json.dumps({
            "dag_id": dag_id,
            "create": [{"logical_date": iso(i.start), "data_interval_end": iso(i.end)}
                       for i in plan.create],
            "skip": [{"logical_date": iso(i.start), "reason": why} for i, why in plan.skip],
        }, indent=2))
        return EXIT_OK
    echo(f"backfill of {dag_id} would create {len(plan.create)} run(s) and skip "
         f"{len(plan.skip)} (dry run: nothing changed)")
    for interval in plan.create:
        print(f"  create  {local(interval.start)}  (interval ends {local(interval.end)})")
    for interval, why in plan.skip:
        echo(f"  skip    {local(interval.start)}  {why}")
    return EXIT_OK


def _manage(args: argparse.Namespace, config: Config) -> int:
    action = args.target[0]
    if not config.has_database():
        if action == "list":
            print("[]" if args.json else "no backfills yet")
            return EXIT_OK
        raise UsageError(f"no backfills recorded yet in {config.home}")
    store = Store.open(config.database)
    if action == "list":
        items = bf.list_backfills(store)
        if args.json:
            print(json.dumps([bf.to_json(store, b) for b in items], indent=2))
            return EXIT_OK
        if not items:
            print("no backfills yet")
        zones = {d.dag_id: d.timezone for d in store.dags()}
        for b in items:
            p = bf.progress(store, b)
            zone = zones.get(b.dag_id, "UTC")
            echo(f"{b.id:>4}  {b.dag_id}  {b.state:<9}  {(iso(b.start_date, zone) or '')[:10]} .. "
                 f"{(iso(b.end_date, zone) or '')[:10]}  parallelism {b.parallelism}  {b.run_order}  "
                 f"done {p['done']}, running {p['running']}, failed {p['failed']}, "
                 f"skipped {p['skipped']}, left {p['left']}")
        return EXIT_OK
    if len(args.target) != 2 or not args.target[1].isdigit():
        raise UsageError(f"usage: flowtui backfill {action} ID (see 'flowtui backfill list')")
    change = bf.change_state(store, int(args.target[1]), action)
    print(f"backfill {change.backfill.id} {change.state}" + (
        f"; stopping {change.stopping} running run(s)" if change.stopping else ""))
    return EXIT_OK
