"""``flowtui db clean``: let go of finished runs older than a cutoff, with their logs; ``flowtui
db migrate --to URL``: move a SQLite home's history into PostgreSQL (SPEC 10)."""
from __future__ import annotations

import argparse
import json
from collections import Counter

from flowtui.context import read_store
from flowtui.render import echo, local_time
from flowtui.runner.config import Config
from flowtui.runner.durations import format_duration
from flowtui.runner.retention import Cleaner, parse_age
from flowtui.store import current_user
from flowtui.usage import EXIT_OK, UsageError

SHOWN = 50  # runs listed one by one by a dry run; the rest are counted per DAG


def cmd_db_clean(args: argparse.Namespace, config: Config) -> int:
    try:
        age = parse_age(args.older_than, "--older-than")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    store = read_store(config)
    cutoff = store.now() - age
    if args.dry_run:
        return _dry_run(store, cutoff, age, args, Cleaner(store, config.logs_dir, cutoff))
    cleaner = Cleaner(store, config.logs_dir, cutoff, audit=args.audit, actor=current_user())
    done = cleaner.run()
    with store.transaction() as conn:
        store.audit(conn, "db clean", detail={
            "older_than": args.older_than, "cutoff": cutoff, "runs": done.runs,
            "tries": done.tries, "events": done.events, "alerts": done.alerts,
            "dataset_events": done.dataset_events, "audit": done.audit, "files": done.files,
            "removed_runs_log_folders": done.folders})
    if args.json:
        print(json.dumps({"cutoff": local_time(cutoff), "runs": done.runs, "tries": done.tries,
                          "events": done.events, "alerts": done.alerts,
                          "dataset_events": done.dataset_events,
                          "dataset_triggers": done.dataset_triggers,
                          "audit_entries": done.audit,
                          "log_files": done.files, "log_bytes": done.bytes,
                          "removed_runs_log_folders": done.folders,
                          "removed_runs_log_files": done.folder_files,
                          "removed_runs_log_bytes": done.folder_bytes}, indent=2))
        return EXIT_OK
    echo(f"removed {done.runs} finished runs that ended before {local_time(cutoff)}: "
         f"{done.tries} tries, {done.events} events, {done.alerts} resolved alerts, "
         f"{done.files} log files ({_size(done.bytes)}), {done.dataset_events} dataset "
         "events" + (f", {done.audit} audit entries" if args.audit else
                                    "; the audit log is kept (--audit removes it too)"))
    if done.folders:
        echo(f"and this host's logs of {done.folders} runs a clean removed from the shared "
             f"database before: {done.folder_files} files ({_size(done.folder_bytes)})")
    return EXIT_OK


def _dry_run(store, cutoff: float, age: float, args: argparse.Namespace,
             cleaner: Cleaner) -> int:
    runs = store.retention.old_runs(cutoff)
    # a shared database (SPEC 10): this host's logs of runs another host's clean removed
    leftover = cleaner.folders_to_remove() if store.kind == "postgresql" else []
    tries, events = store.retention.counts(runs)
    audit = store.retention.old_audit(cutoff) if args.audit else 0
    dataset_events, _ = store.retention.old_dataset_rows(cutoff)
    if args.json:
        print(json.dumps({"cutoff": local_time(cutoff), "runs": [
            {"dag_id": r.dag_id, "run_id": r.run_id, "state": r.state,
             "end_date": local_time(r.end_date)} for r in runs],
            "tries": tries, "events": events, "dataset_events": dataset_events,
            "audit_entries": audit, "removed_runs_log_folders_to_remove": leftover},
            indent=2))
        return EXIT_OK
    echo(f"dry run: nothing removed. Finished runs that ended more than "
         f"{format_duration(age)} ago (before {local_time(cutoff)}), and nothing changed since:")
    for run in runs[:SHOWN]:
        echo(f"  {run.dag_id}  {run.run_id}  {run.state}  ended {local_time(run.end_date)}")
    if len(runs) > SHOWN:
        per_dag = Counter(r.dag_id for r in runs[SHOWN:])
        echo(f"  and {len(runs) - SHOWN} more: " +
             ", ".join(f"{dag} {n}" for dag, n in sorted(per_dag.items())))
    echo(f"would remove {len(runs)} runs, {tries} tries and their logs, {events} events, "
         f"{dataset_events} dataset events (each dataset's newest stays)" + (f", {audit} audit entries" if args.audit else "; the audit log is kept"))
    if leftover:
        echo(f"and this host's logs of {len(leftover)} runs a clean removed from the shared "
             f"database before: {', '.join(leftover[:3])}{' ...' if len(leftover) > 3 else ''}")
    return EXIT_OK


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count} bytes"


def cmd_db_migrate(args: argparse.Namespace, config: Config) -> int:
    from flowtui.runner.actions import live_daemon
    from flowtui.runner.config import redact
    from flowtui.store import Store, StoreError
    from flowtui.store.migrate import MigrateError, copy_home

    url = args.to.strip()
    if not url.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"--to {redact(url)!r}: give a PostgreSQL URL, "
                         "postgresql://user@host:5432/db")
    if not config.db_path.exists():
        raise UsageError(f"no SQLite history at {config.db_path} to copy")
    source = Store.open(config.db_path, readonly=True)
    if live_daemon(source) is not None:
        raise UsageError("a runner is alive on this home: stop it first, so nothing is written "
                         "while the history is copied")
    try:
        target = Store.open(url)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    try:
        copied = copy_home(source, target, lambda table, n: echo(f"  {table}: {n} rows"))
    except MigrateError as exc:
        raise UsageError(str(exc)) from None
    finally:
        target.close()
        source.close()
    echo(f"copied {sum(copied.values())} rows into {redact(url)}; point every host at it "
         "(database_url in flowtui.toml, or $FLOWTUI_DATABASE_URL) and start the runners. "
         f"{config.db_path} is left as it was.")
    return EXIT_OK
