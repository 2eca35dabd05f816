"""``flowtui alerts list|ack|resolve`` and ``flowtui sla``."""
from __future__ import annotations

import argparse
import json
import sys

from flowtui.context import load_pipelines, read_store
from flowtui.render import echo, local_time, visible
from flowtui.runner import actions
from flowtui.runner.alerting import alert_json, set_alert_state
from flowtui.runner.config import Config
from flowtui.runner.durations import format_countdown
from flowtui.usage import EXIT_OK


def cmd_alerts(args: argparse.Namespace, config: Config) -> int:
    store = read_store(config)
    if args.alerts_command == "list":
        alerts = store.alerts.newest(include_resolved=args.all)
        if args.json:
            print(json.dumps([{k: v for k, v in alert_json(a).items()
                               if k not in ("summary", "next_step_at", "acked_by")} | {
                "summary": a.summary} for a in alerts], indent=2))
            return EXIT_OK
        if not alerts:
            echo("no open alerts")
        now = store.now()
        for a in alerts:
            nxt = (f"  next step in {format_countdown(a.next_step_at - now)}"
                   if a.next_step_at else "")
            echo(f"{a.id:>4}  {a.state:<8} {a.severity:<8} {a.kind:<12} {a.dag_id or '(runner)'}"
                 f"{' ' + a.run_id if a.run_id else ''}{' ' + a.task_id if a.task_id else ''}  "
                 f"level {a.level}  {local_time(a.created_at)}{nxt}\n"
                 f"      {visible(a.summary, inline=True)}")
        return EXIT_OK
    state = "acked" if args.alerts_command == "ack" else "resolved"
    set_alert_state(store, args.alert_id, state)
    daemon = actions.live_daemon(store)
    if daemon is not None:
        actions.wake(store, daemon)
    echo(f"alert {args.alert_id} {state}" + ("" if daemon else
                                            "; no runner is alive to notify the channels yet"))
    return EXIT_OK


def cmd_sla(args: argparse.Namespace, config: Config) -> int:
    from flowtui.runner.clock import iso
    from flowtui.runner.sla import active_statuses

    loaded = load_pipelines(config)
    dags = loaded.dags
    items = []
    problems: list[str] = []
    broken = sorted({e.fileloc for e in loaded.errors})
    if broken:  # their runs are left out below: say so rather than show fewer runs silently
        problems.append(f"{len(broken)} pipeline file(s) cannot be loaded, their SLAs are not "
                        f"checked: {', '.join(broken)} ('flowtui dags check' says why)")
    store = read_store(config)
    now = store.now()
    items = active_statuses(store, dags, now, problems=problems)
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
        left = i.deadline - now
        when = f"in {format_countdown(left)}" if left > 0 else f"{format_countdown(-left)} ago"
        echo(f"{i.verdict:<9} {i.dag_id} {i.run_id}  deadline {local_time(i.deadline)} ({when})"
             f"  predicted {local_time(i.predicted)}"
             + (f"\n          critical path: {' -> '.join(i.critical_path)}"
                if i.critical_path else ""))
    return EXIT_OK
