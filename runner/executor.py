"""Launching task processes and ending process trees.

A task runs as ``/bin/sh -c SCRIPT`` in its own session (so its pid is the session and process
group id), stdin from /dev/null, stdout and stderr straight to the try's log file. The script
starts with an EXIT trap that writes the exit status to the try's ``.exit`` file, so the status
survives the death of the runner that launched it.
"""
from __future__ import annotations

import os
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path

_SHELLS = {"sh": "/bin/sh", "bash": "/bin/bash"}
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_boot_time: float | None = None


@dataclass(slots=True)
class Launched:
    pid: int
    pidfd: int


def build_script(command: str, exit_path: str, cwd: str | None) -> str:
    prefix = f"trap 'echo $? > {shlex.quote(exit_path)}' EXIT\n"
    if cwd:
        prefix += f"cd -- {shlex.quote(cwd)} || exit 1\n"
    return prefix + command


def launch(script: str, *, shell: str, log_path: str, env: dict[str, str]) -> Launched:
    """Start one task process; raises ``OSError`` when it cannot be started."""
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    executable = _SHELLS[shell]
    pid = os.posix_spawn(executable, [shell, "-c", script], env, file_actions=file_actions,
                         setsid=True)
    return Launched(pid, os.pidfd_open(pid))


def boot_time() -> float:
    global _boot_time
    if _boot_time is None:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime"):
                    _boot_time = float(line.split()[1])
                    break
            else:
                _boot_time = 0.0
    return _boot_time


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return data[data.rfind(b")") + 2:].split()


def process_start_time(pid: int) -> float | None:
    """Start time of a process in seconds since the epoch (as psutil's create_time)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return boot_time() + int(fields[19]) / _CLK_TCK


def same_process(pid: int, pid_start: float | None, started_near: float | None = None) -> bool:
    """True when ``pid`` is still the live process that started at ``pid_start``. Without a
    recorded start time, it must have started within seconds of ``started_near`` (the try's
    start), so a recycled pid is never taken for the task."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == b"Z":
        return False
    start = boot_time() + int(fields[19]) / _CLK_TCK
    if pid_start is not None:
        return abs(start - pid_start) < 0.05
    if started_near is not None:
        return started_near - 1.0 <= start <= started_near + 5.0
    return True


def session_members(sid: int) -> list[int]:
    """Every live process in session ``sid`` (a task's whole tree unless it called setsid)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # fields[0] is the state, [1] ppid, [2] pgrp, [3] session.
        if fields and int(fields[3]) == sid and fields[0] != b"Z":
            members.append(int(entry))
    return members


def descendants(pid: int) -> list[int]:
    """Children of ``pid``, recursively (catches those that left the session)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


def signal_tree(pid: int, sig: int, extra: set[int] | None = None) -> set[int]:
    """Send ``sig`` to a task's process group, session and descendants; return who got it."""
    targets = set(session_members(pid)) | set(descendants(pid)) | (extra or set())
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for target in targets:
        try:
            os.kill(target, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return targets


def terminate_tree(pid: int) -> set[int]:
    """SIGTERM the tree (and SIGCONT, so stopped processes see it); SIGKILL follows later."""
    members = signal_tree(pid, signal.SIGTERM)
    signal_tree(pid, signal.SIGCONT, members)
    return members


def survivors(sid: int, known: set[int]) -> set[int]:
    """Processes of a killed task still alive: its session, and the known escapees."""
    return {pid for pid in known if _alive(pid)} | set(session_members(sid))


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != b"Z"


def kill_tree(pid: int, known: set[int] | None = None) -> None:
    signal_tree(pid, signal.SIGKILL, known)


def ensure_log_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
