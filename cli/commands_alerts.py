"""``flowtui alerts list|ack|resolve`` and ``flowtui sla``."""
from __future__ import annotations

import argparse
import json
import sys
import time

from flowtui.cli import EXIT_OK
from flowtui.render import echo, local_time, visible
from flowtui.runner import actions
from flowtui.runner.alerting import alert_json, list_alerts, set_alert_state
from flowtui.runner.config import Config
from flowtui.runner.durations import format_duration


def cmd_alerts(args: argparse.Namespace, config: Config) -> int:
    from flowtui.commands import read_store

    store = read_store(config)
    if args.alerts_command == "list":
        rows = list_alerts(store, include_resolved=args.all)
        if args.json:
            print(json.dumps([{k: v for k, v in alert_json(r).items()
                               if k not in ("summary", "next_step_at", "acked_by")} | {
                "summary": r[9]} for r in rows], indent=2))
            return EXIT_OK
        if not rows:
            echo("no open alerts")
        for r in rows:
            nxt = f"  next step in {format_duration(r[10] - time.time())}" if r[10] else ""
            echo(f"{r[0]:>4}  {r[5]:<8} {r[6]:<8} {r[1]:<12} {r[2] or '(runner)'}"
                 f"{' ' + r[3] if r[3] else ''}{' ' + r[4] if r[4] else ''}  level {r[7]}  "
                 f"{local_time(r[8])}{nxt}\n      {visible(r[9], inline=True)}")
        return EXIT_OK
    state = "acked" if args.alerts_command == "ack" else "resolved"
    set_alert_state(store, args.alert_id, state)
    daemon = actions.live_daemon(store)
    if daemon is not None:
        actions.wake(daemon[1])
    echo(f"alert {args.alert_id} {state}" + ("" if daemon else
                                            "; no runner is alive to notify the channels yet"))
    return EXIT_OK


def cmd_sla(args: argparse.Namespace, config: Config) -> int:
    from flowtui.commands import _load, read_store
    from flowtui.runner.clock import iso
    from flowtui.runner.sla import active_statuses

    loaded = _load(config)
    dags = loaded.dags
    items = []
    problems: list[str] = []
    broken = sorted({e.fileloc for e in loaded.errors})
    if broken:  # their runs are left out below: say so rather than show fewer runs silently
        problems.append(f"{len(broken)} pipeline file(s) cannot be loaded, their SLAs are not "
                        f"checked: {', '.join(broken)} ('flowtui dags check' says why)")
    items = active_statuses(read_store(config), dags, time.time(), problems=problems)
    for problem in problems:  # on stderr with --json, so that stdout stays one JSON value
        echo(problem, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps([{"dag_id": i.dag_id, "run_id": i.run_id, "state": i.run_state,
                           "deadline": iso(i.deadline), "predicted_finish": iso(i.predicted),
                           "verdict": i.verdict, "critical_path": i.critical_path}
                          for i in items], indent=2))
        return EXIT_OK
    if not items:
        echo("no runs with an SLA in the last day")
    for i in items:
        left = i.deadline - time.time()
        when = f"in {format_duration(left)}" if left > 0 else f"{format_duration(-left)} ago"
        echo(f"{i.verdict:<9} {i.dag_id} {i.run_id}  deadline {local_time(i.deadline)} ({when})"
             f"  predicted {local_time(i.predicted)}"
             + (f"\n          critical path: {' -> '.join(i.critical_path)}"
                if i.critical_path else ""))
    return EXIT_OK
