"""Importing Python pipeline files in a child process, each file within a time limit.

One child (``runner/pyload.py``) gets the whole list at once and replies file by file, so the
files import while the caller parses the rest of the folder. When a file outlasts the limit or
ends the child, that file gets one error, the child is killed and a fresh one takes the rest.
"""
from __future__ import annotations

import datetime as dt
import marshal
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from typing import Any

from flowtui.runner.pyload import DATE, DATETIME, OPAQUE

DEFAULT_TIMEOUT = 30.0
_STARTUP_ALLOWANCE = 30.0  # a child's own start on a loaded machine is not the file's fault
_MAX_FRAME = 256 << 20


class Opaque:
    """A value of a Python pipeline file that is not plain data, shown by its repr."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def unplain(value: Any) -> Any:
    """The inverse of ``pyload.plain``: tagged tuples back into dates and ``Opaque`` values."""
    if isinstance(value, dict):
        return {unplain(k): unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unplain(v) for v in value]
    if isinstance(value, tuple) and len(value) == 2:
        tag, text = value
        try:
            if tag == DATETIME:
                return dt.datetime.fromisoformat(text)
            if tag == DATE:
                return dt.date.fromisoformat(text)
        except (TypeError, ValueError):
            pass
        return Opaque(str(text))
    return value


class _Timeout(Exception):
    pass


class Importer:
    """Replies for ``paths``, asked for in the same order with ``reply(path)``.

    A reply is ``("ok", [dag data, ...])`` or ``("error", line, message)``; the dag data is
    ``pyload.dag_data`` with dates and opaque values restored.
    """

    def __init__(self, paths: list[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.pending: deque[str] = deque(paths)
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.buffer = bytearray()
        self.broken: str | None = None  # why no child can be started, once known
        if self.pending:
            self._start()

    def __enter__(self) -> "Importer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reply(self, path: str) -> tuple[Any, ...]:
        if not self.pending or self.pending[0] != path:
            raise ValueError(f"{path} was not asked for in this order")
        if self.proc is None and self.broken is None:
            self._start()
        if self.broken is not None:
            self.pending.popleft()
            return ("error", None, self.broken)
        try:
            frame = self._read_frame(time.monotonic() + self.timeout)
        except _Timeout:
            self._kill()
            self.pending.popleft()
            return ("error", None, f"importing the file took longer than {self.timeout:g}s "
                                   "(dag_file_timeout); move slow work at module level into "
                                   "tasks, or raise dag_file_timeout in flowtui.toml")
        if frame is None:
            code = self._reap()
            self.pending.popleft()
            return ("error", None, f"the file ended the import process ({code}) while it was "
                                   "imported; a pipeline file must not exit or kill its process "
                                   "at import")
        self.pending.popleft()
        try:
            reply = marshal.loads(frame)
        except (ValueError, EOFError, TypeError) as exc:
            self._kill()
            return ("error", None, f"the import process sent a malformed reply ({exc})")
        if not isinstance(reply, tuple) or not reply or reply[0] not in ("ok", "error"):
            self._kill()
            return ("error", None, "the import process sent a malformed reply")
        if reply[0] == "ok":
            return ("ok", unplain(reply[1]) if reply[2] else reply[1])
        return reply

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()  # EOF: the child returns once it is between files
            proc.wait(timeout=1.0)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout:
                proc.stdout.close()

    # -- the child ---------------------------------------------------------------------------
    def _start(self) -> None:
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "flowtui.runner.pyload"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            self.broken = f"cannot start the import process: {exc}"
            return
        self.buffer.clear()
        try:
            ready = self._read_frame(time.monotonic() + self.timeout + _STARTUP_ALLOWANCE)
        except _Timeout:
            ready = None
        if ready != marshal.dumps("ready"):
            self._kill()
            self.broken = ("the import process did not start; check that `python -m "
                           "flowtui.runner.pyload` runs in this environment")
            return
        request = marshal.dumps(list(self.pending))
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(len(request).to_bytes(4, "big") + request)
            self.proc.stdin.flush()
        except OSError:
            pass  # the child is gone already: the next read sees EOF and reports it

    def _read_frame(self, deadline: float) -> bytes | None:
        """The next frame, ``None`` at EOF; raises ``_Timeout`` past ``deadline``."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        # poll, not select: a busy runner's descriptors may be numbered past 1024.
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while True:
            if len(self.buffer) >= 4:
                size = int.from_bytes(self.buffer[:4], "big")
                if size > _MAX_FRAME:
                    return None
                if len(self.buffer) >= 4 + size:
                    frame = bytes(self.buffer[4:4 + size])
                    del self.buffer[:4 + size]
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout
            if not poller.poll(left * 1000 + 1):
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self.buffer += chunk

    def _reap(self) -> str:
        proc, self.proc = self.proc, None
        assert proc is not None
        try:
            code = proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        finally:
            for stream in (proc.stdin, proc.stdout):
                try:
                    if stream:
                        stream.close()
                except OSError:
                    pass
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            hint = ", perhaps out of memory" if name == "SIGKILL" else ""
            return f"killed by {name}{hint}"
        return f"exit code {code}"

    def _kill(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.kill()
        except OSError:
            pass
        self._reap()
