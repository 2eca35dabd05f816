"""``flowtui datasets list|show|emit`` (SPEC 9): what each dataset holds, who writes and reads
it, and why a consumer waits."""
from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from flowtui.context import load_pipelines, open_store
from flowtui.render import echo, local_time, visible
from flowtui.runner import actions
from flowtui.runner.config import Config
from flowtui.runner.durations import format_duration
from flowtui.runner.freshness import policies as freshness_policies
from flowtui.runner.freshness import verdict
from flowtui.runner.loader import LoadResult, record_load
from flowtui.store import current_user
from flowtui.usage import EXIT_OK, UsageError


def lineage(result: LoadResult) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """dataset -> producing ``dag.task``s, and dataset -> consuming DAGs, from the pipelines."""
    producers: dict[str, list[str]] = {}
    consumers: dict[str, list[str]] = {}
    for dag in result.dags.values():
        for task in dag.tasks.values():
            for name in task.outlets:
                producers.setdefault(name, []).append(f"{dag.dag_id}.{task.task_id}")
        if dag.datasets is not None:
            for name in dag.datasets.datasets:
                consumers.setdefault(name, []).append(dag.dag_id)
    return producers, consumers


def waiting_lines(store: Any, result: LoadResult) -> dict[str, list[str]]:
    """consumer DAG -> why it has not run (yet) for partitions its datasets reached."""
    why: dict[str, list[str]] = {}
    for dag in result.dags.values():
        if dag.datasets is None:
            continue
        found = store.datasets.readiness(dag.dag_id, dag.datasets.datasets, dag.datasets.match)
        paused = store.is_paused(dag.dag_id)
        for partition in found.ready:
            what = f"a run for {partition}" if dag.datasets.match != "any" else (
                "a run for new events")
            why.setdefault(dag.dag_id, []).append(
                f"{what} waits: the DAG is paused ('flowtui dags unpause {dag.dag_id}')"
                if paused else f"{what} is due (the runner creates it)")
        for partition, missing in found.waiting.items():
            why.setdefault(dag.dag_id, []).append(
                "waiting for " + ", ".join(f"{name} {partition}" for name in missing))
    return why


def cmd_datasets(args: argparse.Namespace, config: Config) -> int:
    if args.datasets_command == "emit":
        return _emit(args, config)
    result = load_pipelines(config)
    store = open_store(config)  # lineage comes from the pipelines: a new home answers too
    producers, consumers = lineage(result)
    now = store.now()
    if args.datasets_command == "list":
        return _list(args, config, store, result, producers, consumers, now)
    name = args.name
    if not name.strip():
        raise UsageError("name a dataset, for example warehouse.orders ('flowtui datasets "
                         "list' shows them)")
    events = store.datasets.events(name, limit=10)
    watched, _ = freshness_policies(result.dags, config.raw)
    declared = config.raw.get("datasets") if isinstance(config.raw.get("datasets"), dict) else {}
    if not events and name not in producers and name not in consumers and name not in watched \
            and name not in declared:
        raise UsageError(f"no dataset named {name!r}; 'flowtui datasets list' shows them")
    why = waiting_lines(store, result)
    summary = store.datasets.summary(name)
    document = {
        "name": name, "events": summary.events, "partitions": summary.partitions,
        "freshness": verdict(watched, name, events[0].at if events else None, now),
        "newest_partition": events[0].partition if events else None,
        "newest_at": local_time(events[0].at) if events else None,
        "age_seconds": round(now - events[0].at, 1) if events else None,
        "producers": producers.get(name, []),
        "consumers": [{"dag_id": c, "waiting": why.get(c, [])} for c in consumers.get(name, [])],
        "events": [{"id": e.id, "partition": e.partition, "at": local_time(e.at),
                    "source": e.source, "dag_id": e.dag_id, "run_id": e.run_id,
                    "task_id": e.task_id, "try_number": e.try_number, "actor": e.actor,
                    "metadata": e.metadata} for e in events]}
    if args.json:
        print(json.dumps(document, indent=2))
        return EXIT_OK
    newest = (f"newest {document['newest_partition']}, "
              f"{format_duration(document['age_seconds'])} ago" if events else "no event yet")
    echo(visible(f"dataset {name}  {newest}  {summary.partitions} partition(s), "
                 f"{summary.events} event(s)  freshness: {document['freshness']}", inline=True))
    echo(f"  producers: {', '.join(document['producers']) or '-'}")
    for consumer in document["consumers"]:
        echo(f"  consumer {consumer['dag_id']}: " + ("; ".join(consumer["waiting"]) or "up to date"))
    for e in events:
        source = (f"{e.dag_id} {e.run_id} {e.task_id} try {e.try_number}" if e.source == "task"
                  else f"emitted by {e.actor}")
        meta = " ".join(f"{k}={v}" for k, v in e.metadata.items())
        echo(visible(f"  {e.partition}  {local_time(e.at)}  {source}" + (f"  {meta}" if meta
                                                                         else ""), inline=True))
    return EXIT_OK


def _emit(args: argparse.Namespace, config: Config) -> int:
    name = args.name.strip()
    if not name:
        raise UsageError("a dataset needs a name, for example warehouse.orders")
    metadata: dict[str, str] = {}
    for item in args.meta or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta {item!r}: write key=value, for example rows=1500")
        metadata[key] = value
    store = open_store(config)
    if args.partition is not None and not args.partition.strip():
        raise UsageError("--partition is empty; give the partition written, for example "
                         "2026-03-28, or leave the option out for today")
    partition = args.partition or dt.date.fromtimestamp(store.now()).isoformat()
    if config.pipelines.is_dir():  # consumers first seen now take this event
        record_load(store, load_pipelines(config))
    event_id = store.datasets.emit(name, partition, metadata, current_user())
    daemon = actions.live_daemon(store)
    if daemon is not None:
        actions.wake(store, daemon)
    echo(visible(f"dataset event {event_id}: {name} {partition}", inline=True) + (
        "" if daemon else "; no runner is alive: its consumers run when one starts"))
    return EXIT_OK


def _list(args: argparse.Namespace, config: Config, store: Any, result: LoadResult,
          producers: dict[str, list[str]], consumers: dict[str, list[str]], now: float) -> int:
    """Every dataset a line (10,000 of them in about a tenth of a second: one row each from
    ``dataset_stats``, no per-dataset objects)."""
    newest = {row[0]: row for row in store.datasets.newest_rows()}
    watched, _ = freshness_policies(result.dags, config.raw)
    names = sorted(set(newest) | set(producers) | set(consumers) | set(watched))
    if args.json:
        rows = []
        for name in names:
            _, events, partitions, partition, at = newest.get(name, (name, 0, 0, None, None))
            rows.append({"name": name, "events": events, "partitions": partitions,
                         "freshness": verdict(watched, name, at, now),
                         "newest_partition": partition,
                         "newest_at": local_time(at) if at is not None else None,
                         "age_seconds": round(now - at, 1) if at is not None else None,
                         "producers": producers.get(name, []),
                         "consumers": consumers.get(name, [])})
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not names:
        echo("no datasets: name them with outlets: on a task, or flowtui datasets emit")
        return EXIT_OK
    lines = []
    for name in names:
        _, events, partitions, partition, at = newest.get(name, (name, 0, 0, None, None))
        age = f"{partition}, {format_duration(now - at)} ago" if at is not None else "no event yet"
        fresh = verdict(watched, name, at, now) if name in watched else "no policy"
        # names and partitions are free text: each made one visible line here
        lines.append(f"{visible(f'{name}  {age}', inline=True)}  {partitions} partition(s)  "
                     f"{fresh}  producers: {', '.join(producers.get(name, ())) or '-'}  "
                     f"consumers: {', '.join(consumers.get(name, ())) or '-'}")
    print("\n".join(lines))
    return EXIT_OK

