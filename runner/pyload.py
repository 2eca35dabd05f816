"""The import process: executes Python pipeline files one at a time and replies with plain data.

Run as ``python -P -m flowtui.runner.pyload`` by ``runner/pyimport.py``. Whatever a pipeline file
does at import (exit, hang, eat memory, print) happens here, never in the runner or the CLI.
Frames on both pipes are a 4-byte big-endian length and a ``marshal`` payload.
"""
from __future__ import annotations

import datetime as dt
import marshal
import os
import stat
import sys
import traceback
from pathlib import Path
from typing import Any, BinaryIO, Callable

from flowtui.runner import dsl

MAX_FILE_BYTES = 1 << 20
MEMORY_LIMIT = 4 << 30
OPAQUE, DATETIME, DATE = "\0opaque", "\0datetime", "\0date"
_MAX_DEPTH = 64
_tagged = False  # whether ``plain`` tagged a value since the last reply


class FileRefused(OSError):
    """A pipeline path that is not a regular file, or one over the size limit."""


def read_limited(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """The text of a regular file of at most ``limit`` bytes; never blocks on a FIFO or device.

    Raises ``FileRefused`` (with the sentence to show), ``OSError`` or ``UnicodeDecodeError``.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"not a regular file ({_kind(info.st_mode)}); only regular files "
                          "are read as pipeline files: remove it or rename it")
    if info.st_size > limit:
        raise FileRefused(f"the file is {info.st_size} bytes, over the limit of {limit} bytes "
                          f"({limit >> 20} MiB) for a pipeline file; split it")
    # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open must not wait.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileRefused("not a regular file; only regular files are read as pipeline files")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise FileRefused(f"the file grew over the limit of {limit} bytes ({limit >> 20} MiB) "
                          "for a pipeline file; split it")
    return b"".join(chunks).decode("utf-8")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def exec_pipeline_file(path: Path, text: str | None = None
                       ) -> tuple[list[dsl.DAG], tuple[int | None, str] | None]:
    """Execute a Python pipeline file; its DAG objects, or ``(line, message)`` for an error."""
    fileloc = str(path)
    try:
        if text is None:
            text = read_limited(path)
    except (OSError, UnicodeDecodeError) as exc:
        return [], (None, f"cannot read the file: {exc}")
    module_name = f"flowtui_pipeline_{abs(hash(fileloc))}"
    namespace: dict[str, Any] = {"__name__": module_name, "__file__": fileloc}
    previous = dsl._collected
    dsl._collected = collected = []
    dsl._context.clear()
    parent = str(path.parent)
    added_path = parent not in sys.path
    if added_path:
        sys.path.insert(0, parent)
    try:
        code = compile(text, fileloc, "exec")
        exec(code, namespace)
    except dsl.AuthoringError as exc:
        return [], (exc.line, str(exc))
    except SyntaxError as exc:
        return [], (exc.lineno, f"Python syntax error: {exc.msg}; fix the syntax")
    except MemoryError as exc:
        line = _user_line(exc, fileloc)
        # No traceback: formatting one may itself fail, and where it ran out says little.
        return [], (line, f"the import ran out of memory (the import process may use at most "
                          f"{MEMORY_LIMIT >> 30} GiB); keep large data out of module level")
    except BaseException as exc:  # an import-time exception: report it with its traceback
        user_tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # drop our exec()
        detail = "".join(traceback.format_exception(type(exc), exc, user_tb)).rstrip()
        return [], (_user_line(exc, fileloc), f"exception while importing the file: "
                                              f"{type(exc).__name__}: {exc}\n{detail}")
    finally:
        dsl._collected = previous
        dsl._context.clear()
        if added_path and parent in sys.path:
            sys.path.remove(parent)
    return collected, None


def _user_line(exc: BaseException, fileloc: str) -> int | None:
    tb = traceback.extract_tb(exc.__traceback__)
    return next((f.lineno for f in reversed(tb) if f.filename == fileloc), None)


# -- plain data ------------------------------------------------------------------------------
def plain(value: Any, depth: int = 0) -> Any:
    """``value`` as marshal-safe data; dates are tagged, anything else becomes its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth <= _MAX_DEPTH:
        if isinstance(value, dict):
            return {plain(k, depth + 1): plain(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v, depth + 1) for v in value]
    global _tagged
    _tagged = True
    if depth > _MAX_DEPTH:
        return (OPAQUE, "a structure nested too deeply")
    if isinstance(value, dt.datetime):
        return (DATETIME, value.isoformat())
    if isinstance(value, dt.date):
        return (DATE, value.isoformat())
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return (OPAQUE, text[:200])


def dag_data(dag: dsl.DAG, convert: Callable[[Any], Any]) -> dict[str, Any]:
    """What the loader needs of one DAG object: its options and tasks, lines, callables."""
    return {
        "data": convert(dag.as_dict()),
        "line": dag.line,
        "duplicates": [[convert(t), line] for t, line in dag.duplicates],
        "task_lines": {convert(t.task_id): t.line for t in dag.tasks.values()},
        "callables": {convert(t.task_id): str(getattr(t.fn, "__qualname__", "callable"))
                      for t in dag.tasks.values() if t.fn is not None},
    }


def reply_for(path: str) -> bytes:
    """The marshalled ``("ok", dags, tagged)`` or ``("error", line, message)`` for one file."""
    global _tagged
    dags, error = exec_pipeline_file(Path(path))
    if error is not None:
        return marshal.dumps(("error", error[0], error[1]))
    try:
        # Most files hold only plain values, which marshal takes as they are.
        return marshal.dumps(("ok", [dag_data(d, _same) for d in dags], False))
    except ValueError:
        _tagged = False
        data = [dag_data(d, plain) for d in dags]
        return marshal.dumps(("ok", data, _tagged))


def _same(value: Any) -> Any:
    return value


# -- the process -----------------------------------------------------------------------------
def _write_frame(out: BinaryIO, payload: bytes) -> None:
    out.write(len(payload).to_bytes(4, "big") + payload)
    out.flush()


def _read_frame(inp: BinaryIO) -> Any:
    head = inp.read(4)
    if len(head) < 4:
        return None
    return marshal.loads(inp.read(int.from_bytes(head, "big")))


def _limit_memory() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT, hard)
        if soft == resource.RLIM_INFINITY or soft > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass  # no limit on this platform: the time limit still holds


def main() -> int:
    # The replies get a private copy of stdout; what pipeline files print goes nowhere.
    out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    inp = sys.stdin.buffer
    _limit_memory()
    _write_frame(out, marshal.dumps("ready"))
    while True:
        request = _read_frame(inp)
        if request is None:
            return 0
        for path in request:
            try:
                payload = reply_for(path)
            except (ValueError, RecursionError, MemoryError) as exc:
                payload = marshal.dumps(("error", None, f"the file's DAGs cannot be sent back "
                                                       f"from the import process: {exc}"))
            _write_frame(out, payload)


if __name__ == "__main__":
    sys.exit(main())
