"""Retention: a home that runs for years does not grow without bound.

``flowtui db clean --older-than 90d`` and ``retention = "90d"`` in flowtui.toml (the runner
applies it once a day) remove finished runs that nothing has touched since the cutoff, with their
task instances, tries, events, resolved alerts and log files, and dataset events older than the
cutoff (each dataset's newest stays); running and recent runs stay, and so does the audit log
unless asked. On a database several hosts share (SPEC 10), each host keeps its own tries' logs,
which the host whose clean removes a run cannot reach: a clean records the runs it removes
(``removed_runs``), and every host's clean removes its own log folders of those runs. The work
goes in batches that each hold the write lock for at most about
``BUDGET`` seconds, the batch size adapting to how fast this machine and store are."""
from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flowtui.runner import executor
from flowtui.runner.durations import parse_duration

if TYPE_CHECKING:
    from flowtui.store import Store

BUDGET = 0.05  # seconds a batch may hold the write lock
FIRST_BATCH = 50
DAY = 86400.0


@dataclass(slots=True)
class Cleaned:
    runs: int = 0
    tries: int = 0
    events: int = 0
    alerts: int = 0
    dataset_events: int = 0
    dataset_triggers: int = 0
    audit: int = 0
    files: int = 0
    bytes: int = 0
    folders: int = 0  # this host's log folders of runs other hosts' cleans removed
    folder_files: int = 0
    folder_bytes: int = 0
    batches: int = 0
    longest_batch: float = 0.0  # seconds the longest batch held the write lock


def parse_age(value: object, where: str) -> float:
    """``90d`` and the like, at least a minute (a slip of ``90s`` would empty the home); a
    bare number is refused, as ``90`` meant as days would be read as seconds."""
    if isinstance(value, (int, float)) or (isinstance(value, str)
                                           and value.strip().replace(".", "", 1).isdigit()):
        raise ValueError(f"{where}: {value!r} has no unit; write it with one, for example 90d")
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if seconds < 60:
        raise ValueError(f"{where}: {value!r} is shorter than a minute; say how old a finished "
                         "run must be to go, for example 90d")
    return seconds


class Cleaner:
    """Removes what is older than a cutoff, one batch per ``step`` call (the runner spreads the
    steps over its loop turns; the CLI calls ``run``)."""

    def __init__(self, store: Store, logs_dir: Path, cutoff: float, *, audit: bool = False,
                 budget: float = BUDGET, actor: str = "") -> None:
        self.store = store
        self.actor = actor  # who removes: a user, or runner N
        self.logs_dir = logs_dir
        self.cutoff = cutoff
        self.audit = audit
        self.budget = budget
        self.batch = FIRST_BATCH
        self.done = Cleaned()
        self._runs_left = True
        self._datasets_left = True
        # A shared database (SPEC 10): this host's logs of runs other hosts' cleans removed.
        self._folders: Iterator[tuple[str, str]] | None = (
            self.removed_folders() if store.kind == "postgresql" else None)
        self._forget_left = store.kind == "postgresql"

    def step(self) -> bool:
        """One batch; False once nothing is left to remove."""
        started = time.perf_counter()
        if self._runs_left:
            removed = self.store.retention.remove_batch(self.cutoff, self.batch, self.actor)
            took = time.perf_counter() - started
            self._runs_left = removed.runs == self.batch
            self.done.runs += removed.runs
            self.done.tries += removed.tries
            self.done.events += removed.events
            self.done.alerts += removed.alerts
            self._delete_files(removed.files)  # committed first: a kept run's log never goes
        elif self._folders is not None:
            self._folder_step()  # no write lock: the batch size is the database's business
            return True
        elif self._datasets_left:
            events, triggers = self.store.retention.remove_dataset_batch(self.cutoff,
                                                                         self.batch * 20)
            took = time.perf_counter() - started
            self.done.dataset_events += events
            self.done.dataset_triggers += triggers
            self._datasets_left = events + triggers > 0
        elif self.audit:
            count = self.store.retention.remove_audit_batch(self.cutoff, self.batch * 20)
            took = time.perf_counter() - started
            self.done.audit += count
            if count < self.batch * 20:
                self.audit = False
        elif self._forget_left:
            # A run removed is remembered a day at least (a host away that long still finds
            # its logs to remove), and as long as the retention keeps runs.
            count = self.store.retention.forget_removed(
                min(self.cutoff, self.store.now() - DAY), self.batch * 20)
            took = time.perf_counter() - started
            self._forget_left = count == self.batch * 20
        else:
            return False
        self.done.batches += 1
        self.done.longest_batch = max(self.done.longest_batch, took)
        # Keep each batch well inside the budget: halve after a slow one, grow after quick ones.
        if took > self.budget / 2:
            self.batch = max(1, self.batch // 2)
        elif took < self.budget / 8:
            self.batch = min(self.batch * 2, 5000)
        return True

    def removed_folders(self) -> Iterator[tuple[str, str]]:
        """This host's run log folders (logs/DAG/RUN) of runs a clean removed from the shared
        database, and no run of the same id since (``removed_runs``): a folder the database
        merely does not know (another home's, one from before a move to this database) is
        never one of them. Names that cannot be a DAG's or a run's are passed over."""
        try:
            dags = sorted(e.name for e in os.scandir(self.logs_dir)
                          if e.is_dir(follow_symlinks=False) and _NAME.fullmatch(e.name))
        except OSError:
            return
        for dag_id in dags:
            try:
                names = sorted(e.name for e in os.scandir(os.path.join(self.logs_dir, dag_id))
                               if e.is_dir(follow_symlinks=False) and _NAME.fullmatch(e.name))
            except OSError:
                continue
            for start in range(0, len(names), 200):
                chunk = names[start:start + 200]
                for name in sorted(self.store.retention.removed_and_gone(dag_id, chunk)):
                    yield dag_id, name

    def _folder_step(self) -> None:
        """Remove removed runs' folders for about ``budget`` seconds (a runner's loop waits)."""
        assert self._folders is not None
        started = time.perf_counter()
        while time.perf_counter() - started < self.budget:
            found = next(self._folders, None)
            if found is None:
                self._folders = None
                return
            self._remove_folder(*found)

    def _remove_folder(self, dag_id: str, name: str) -> None:
        """Move the folder aside first, then ask again: a run made under the same id from now
        on gets a folder of its own. One made meanwhile, or written in since the cutoff, goes
        back untouched."""
        folder = os.path.join(self.logs_dir, dag_id, name)
        aside = os.path.join(self.logs_dir, dag_id, f".removing-{name}")
        try:
            os.rename(folder, aside)
        except OSError:
            return
        if not self.store.retention.removed_and_gone(dag_id, [name]) or _touched_since(
                aside, self.cutoff):
            try:
                os.rename(aside, folder)
            except OSError:
                self.store.health.report(f"retention: left {aside} (a run {name} was made "
                                         "again while its old logs were being removed)")
            return
        files = size = 0
        for base, _, names in os.walk(aside):
            for entry in names:
                try:
                    size += os.lstat(os.path.join(base, entry)).st_size
                    files += 1
                except OSError:
                    pass
        shutil.rmtree(aside, ignore_errors=True)
        if os.path.lexists(aside):
            self.store.health.report(f"retention: could not remove all of {aside}")
            return
        self.done.folders += 1
        self.done.folder_files += files
        self.done.folder_bytes += size

    def folders_to_remove(self) -> list[str]:
        """What the folder pass would remove (a dry run's list)."""
        return [os.path.join(self.logs_dir, dag_id, name)
                for dag_id, name in self.removed_folders()]

    def run(self, between: Callable[[], None] | None = None) -> Cleaned:
        while self.step():
            if between is not None:
                between()
        return self.done

    def _delete_files(self, files: list[str]) -> None:
        folders: set[str] = set()
        for name in executor.status_files(files):  # a run's shared exit-status file once
            try:
                size = os.stat(name).st_size
                os.unlink(name)
            except FileNotFoundError:
                continue
            except OSError:
                continue  # a file we cannot remove is left; the store no longer points at it
            self.done.files += 1
            self.done.bytes += size
            folders.add(os.path.dirname(name))
        # The run's folders (logs/DAG/RUN/TASK), emptied, go too; never logs/ or a DAG's folder.
        # A task that never ran left a folder with, at most, the empty log and exit-status
        # files made ahead of its first try: those go with their run.
        root = os.path.abspath(self.logs_dir)
        for run_folder in {os.path.dirname(os.path.abspath(f)) for f in folders}:
            if not run_folder.startswith(root + os.sep) or os.path.dirname(run_folder) == root:
                continue
            try:
                task_folders = [e.path for e in os.scandir(run_folder) if e.is_dir()]
            except OSError:
                continue
            for task_folder in task_folders:
                _remove_if_unused(task_folder)
                folders.add(task_folder)
        for folder in sorted(folders, key=len, reverse=True):
            path = os.path.abspath(folder)
            for _ in range(2):  # the task's folder, then the run's
                if not path.startswith(root + os.sep) or os.path.dirname(path) == root:
                    break
                try:
                    os.rmdir(path)
                except OSError:
                    break
                path = os.path.dirname(path)


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+=\-]*")  # a DAG id's or a run id's characters


def _touched_since(folder: str, cutoff: float) -> bool:
    """Whether anything in the folder was made or written at or after ``cutoff``."""
    for base, dirs, names in os.walk(folder):
        for entry in (*dirs, *names):
            try:
                if os.lstat(os.path.join(base, entry)).st_mtime >= cutoff:
                    return True
            except OSError:
                continue
    return False


def _remove_if_unused(folder: str) -> None:
    """Remove the empty log and exit-status files of a task folder no try wrote in (made
    ahead of a first try that never came)."""
    try:
        entries = list(os.scandir(folder))
        if all(e.name.endswith((".exit", ".log")) and e.is_file() and e.stat().st_size == 0
               for e in entries):
            for entry in entries:
                os.unlink(entry.path)
    except OSError:
        pass


class DailyRetention:
    """The runner's share: with ``retention`` set, a clean once a day (the first a minute after
    start), one batch per timer so the loop turns between batches. A retention shorter than
    ten days is cleaned every tenth of it (at most once a minute), so the home never holds
    much more than it keeps: a day's runs would be most of an hour's retention."""

    PAUSE = 0.2  # seconds between batches: the engine and the TUI get the lock in between

    def __init__(self, engine, store: Store, logs_dir: Path, max_age: float) -> None:
        self.engine = engine
        self.store = store
        self.logs_dir = logs_dir
        self.max_age = max_age
        self.cleaner: Cleaner | None = None
        self.last: Cleaned | None = None
        self.started = False

    def start(self, now: float, delay: float = 60.0) -> None:
        self.started = True
        self.engine.call_at(now + delay, self._begin, routine=True)

    def _begin(self, now: float) -> None:
        self.cleaner = Cleaner(self.store, self.logs_dir, now - self.max_age,
                               actor=self.engine.actor)
        self._step(now)

    def _step(self, now: float) -> None:
        cleaner = self.cleaner
        if cleaner is None:
            return
        try:
            more = cleaner.step()
        except Exception as exc:  # the store busy or failing: try again tomorrow
            self.store.health.report(f"retention: {exc}")
            more = False
        if more:
            self.engine.call_at(now + self.PAUSE, self._step)
            return
        self.last, self.cleaner = cleaner.done, None
        self.engine.call_at(now + self.every, self._begin, routine=True)

    @property
    def every(self) -> float:
        """Seconds from one clean to the next."""
        return min(DAY, max(60.0, self.max_age / 10))
