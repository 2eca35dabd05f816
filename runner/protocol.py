"""The ``::flowtui`` output protocol: progress, heartbeat and metadata lines in a task's log."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

PREFIX = b"::flowtui "
MAX_READ = 1 << 20  # read at most this much new log per look; a flood skips to its newest part


@dataclass(slots=True)
class LogWatch:
    """What the runner has read so far of one running try's log."""

    path: str
    offset: int = 0
    partial: bytes = b""
    progress: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    last_activity: float = 0.0
    changed: bool = False


def _scalar(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_line(line: bytes, watch: LogWatch) -> bool:
    """Apply one protocol line; return True when it was a heartbeat or changed anything."""
    if not line.startswith(PREFIX):
        return False
    parts = line[len(PREFIX):].decode("utf-8", "replace").split()
    if not parts:
        return False
    verb, args = parts[0], parts[1:]
    if verb == "progress" and args:
        value = args[0]
        try:
            if "/" in value:
                done, total = value.split("/", 1)
                pct = 100.0 * float(done) / float(total) if float(total) else 0.0
            else:
                pct = float(value.rstrip("%"))
        except ValueError:
            return False
        watch.progress = max(0.0, min(100.0, pct))
        watch.changed = True
        return True
    if verb == "metadata":
        for arg in args:
            if "=" in arg:
                key, _, value = arg.partition("=")
                watch.metadata[key] = _scalar(value)
        watch.changed = True
        return True
    return verb == "heartbeat"


def scan(watch: LogWatch, now: float) -> bool:
    """Read what is new in the log; return True when the task showed any sign of life."""
    try:
        size = os.stat(watch.path).st_size
    except OSError:
        return False
    if size <= watch.offset:
        if size < watch.offset:  # truncated under us: start again
            watch.offset = 0
        return False
    start = watch.offset
    if size - start > MAX_READ:
        start = size - MAX_READ
        watch.partial = b""
    with open(watch.path, "rb") as fh:
        fh.seek(start)
        data = fh.read(size - start)
    watch.offset = start + len(data)
    data = watch.partial + data
    lines = data.split(b"\n")
    watch.partial = lines.pop()[-4096:]
    for line in lines:
        if line.startswith(PREFIX):
            parse_line(line.rstrip(b"\r"), watch)
    watch.last_activity = now
    return True


def finish(watch: LogWatch, now: float) -> None:
    """Read the rest of the log once the process has ended (a last line may lack its newline)."""
    scan(watch, now)
    if watch.partial.startswith(PREFIX):
        parse_line(watch.partial.rstrip(b"\r"), watch)
        watch.partial = b""
