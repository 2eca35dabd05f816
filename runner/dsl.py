"""The Python authoring API: ``DAG``, ``Bash`` and ``@task``, as used in pipeline files."""
from __future__ import annotations

import sys
from typing import Any, Callable

# Filled while a pipeline file is executed by the loader; each DAG() registers itself here.
_collected: list["DAG"] | None = None
_context: list["DAG"] = []


class AuthoringError(Exception):
    """A mistake in a Python pipeline file, with the line it was made on."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def _caller_line(depth: int = 2) -> int | None:
    try:
        return sys._getframe(depth).f_lineno
    except ValueError:
        return None


class DAG:
    """A DAG; use it as ``with DAG("id", schedule="@daily", ...):`` and create tasks inside."""

    def __init__(self, dag_id: str, **options: Any) -> None:
        self.dag_id = dag_id
        self.options = options
        self.tasks: dict[str, Task] = {}
        self.line = _caller_line()
        self.duplicates: list[tuple[str, int | None]] = []
        if _collected is not None:
            _collected.append(self)

    def __enter__(self) -> "DAG":
        _context.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _context.remove(self)

    def add(self, task: "Task") -> None:
        if task.task_id in self.tasks:
            self.duplicates.append((task.task_id, task.line))
            return
        self.tasks[task.task_id] = task

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.options)
        data["dag_id"] = self.dag_id
        data["tasks"] = {t.task_id: t.as_dict() for t in self.tasks.values()}
        return data


class Task:
    """One task of a Python-defined DAG; ``a >> b`` makes ``b`` depend on ``a``."""

    def __init__(self, task_id: str, options: dict[str, Any], line: int | None,
                 fn: Callable[..., Any] | None = None) -> None:
        self.task_id = task_id
        self.options = options
        self.line = line
        self.fn = fn
        self.upstream: list[str] = list(options.pop("deps", []) or [])
        dag = options.pop("dag", None) or (_context[-1] if _context else None)
        if dag is None:
            raise AuthoringError(
                f"task {task_id!r} is not inside a `with DAG(...):` block; create it there "
                f"or pass dag=...", line)
        self.dag: DAG = dag
        dag.add(self)

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.options)
        data["deps"] = list(self.upstream)
        return data

    def _then(self, other: "Task | list[Task]") -> None:
        for target in other if isinstance(other, (list, tuple)) else [other]:
            if not isinstance(target, Task):
                raise AuthoringError(f"cannot make {target!r} depend on task {self.task_id!r}; "
                                     "use tasks or lists of tasks with >> and <<", _caller_line(3))
            if self.task_id not in target.upstream:
                target.upstream.append(self.task_id)

    def __rshift__(self, other: "Task | list[Task]") -> "Task | list[Task]":
        self._then(other)
        return other

    def __lshift__(self, other: "Task | list[Task]") -> "Task | list[Task]":
        for source in other if isinstance(other, (list, tuple)) else [other]:
            source._then(self)
        return other

    def __rrshift__(self, other: "list[Task]") -> "Task":
        for source in other:
            source._then(self)
        return self

    def __rlshift__(self, other: "list[Task]") -> "Task":
        self._then(other)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            raise TypeError(f"task {self.task_id!r} is a shell task and cannot be called")
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.task_id}>"


def Bash(task_id: str, command: str, **options: Any) -> Task:
    """A task that runs ``command`` with ``/bin/sh -c`` (or ``shell="bash"``)."""
    options["command"] = command
    return Task(task_id, options, _caller_line())


def task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorate a function to make it a task run in its own Python subprocess."""

    def wrap(func: Callable[..., Any]) -> Task:
        opts = dict(options)
        task_id = opts.pop("task_id", func.__name__)
        return Task(task_id, opts, func.__code__.co_firstlineno, fn=func)

    if fn is not None:
        return wrap(fn)
    return wrap
