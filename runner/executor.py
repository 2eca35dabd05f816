"""Launching task processes and ending process trees.

A task runs as ``/bin/sh -c SCRIPT`` in its own session (so its pid is the session and process
group id), stdin from /dev/null, stdout and stderr straight to the try's log file. The script
starts with an EXIT trap that writes the exit status as a line of its run's ``exits`` file
(``TASK/TRY/RUNNER CODE``; one file a run, appended to, rather than a file a try: creating a
file costs up to a millisecond of the kernel's time on a busy disk), so the status survives the
death of the runner that launched it. A try's ``exit_path`` names both:
``RUN_FOLDER/exits#TASK/TRY/RUNNER``; one without ``#`` (recorded by an earlier version) is a
file of its own holding the code alone.

A try the engine launches is *gated*: its shell first waits for one byte on a pipe only the
engine holds, and the engine writes it once the try is committed. The process is started while
the try's row is being written (the shell's start overlaps the commit) and still runs nothing of
its command before its try is durable. If the engine dies first, the pipe reads as ended: the
shell writes ``unstarted`` as its status and exits, and the try (when it was recorded) is taken
as never started.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path

_SHELLS = {"sh": "/bin/sh", "bash": "/bin/bash"}
# Every process of a try carries this variable (the try's exit-file path, unique per try and
# home) unless it rewrites its own environment: how a try's processes are found when no pid was
# recorded, or after they left its session and parentage.
MARK_VAR = "FLOWTUI_TRY_MARK"
_REPLACES_SHELL = re.compile(r"\b(exec|eval)\b")
_SIGNALS = (("TERM", signal.SIGTERM), ("INT", signal.SIGINT), ("HUP", signal.SIGHUP))
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_boot_time: float | None = None


NEVER_STARTED = "unstarted"  # what a gated shell whose engine died writes as its status
GATE_FD = 3  # the gated shell reads its start from this descriptor


@dataclass(slots=True)
class Launched:
    pid: int
    pidfd: int
    gate: int | None = None  # the write end of the gate's pipe; None when not gated


EXITS_FILE = ".exits"  # a task id never starts with "."


CLAIMED = "/claimed"  # a key's end for a try claimed from another runner's offer (SPEC 10)
STARTED = "started"  # what a claimed try's shell writes first


def exit_path_of(run_folder: str, task_id: str, try_number: int, runner_id: int | None,
                 claimed: bool = False) -> str:
    """Where a try's shell writes its exit status (see the module's doc); also the try's mark.
    The key names the runner that starts the try: a try forgotten as never started is started
    again under the same number by another runner, and the forgotten one's ``unstarted`` line
    must never be read as the new one's. A claimed try is recorded before its process starts
    (not gated): its shell says ``started`` first, so that no line at all means it never did."""
    key = f"{task_id}/{try_number}/{runner_id or os.getpid()}{CLAIMED if claimed else ''}"
    return f"{run_folder}/{EXITS_FILE}#{key}"


def _status_file(exit_path: str) -> tuple[str, str | None]:
    """The file a try's status is written to, and the key of its line (None: the file is the
    try's own)."""
    folder, sep, key = exit_path.rpartition("#")
    if sep and os.path.basename(folder) == EXITS_FILE:
        return folder, key
    return exit_path, None


def _write_status(exit_path: str, word: str) -> str:
    """The shell command writing ``word`` (``$?``: the exit status) as the try's status."""
    path, key = _status_file(exit_path)
    if key is None:
        return f"echo {word} > {shlex.quote(path)}"
    return f"echo {shlex.quote(key)} {word} >> {shlex.quote(path)}"


def build_script(command: str, exit_path: str, cwd: str | None, gated: bool = False) -> str:
    """The shell script of a try: the gate (when gated), the EXIT trap, the working folder,
    the command.

    A command that can replace the shell (``exec``, or ``eval`` of anything) runs in a subshell,
    so the shell that owns the trap outlives it and writes its status. Others run in the shell
    itself: a fork less on every task.
    """
    prefix = ""
    if gated:  # the command never sees the gate's descriptor
        prefix = (f"read -r _ <&{GATE_FD} || {{ {_write_status(exit_path, NEVER_STARTED)}; "
                  f"exit 0; }}\nexec {GATE_FD}<&-\n")
    elif exit_path.endswith(CLAIMED):
        prefix = f"{_write_status(exit_path, STARTED)}\n"
    prefix += f"trap {shlex.quote(_write_status(exit_path, '$?'))} EXIT\n"
    # Killed by a signal, bash would run the EXIT trap with the last command's status (often
    # 0: a killed task read back as a success by a runner that adopts it) and dash runs none:
    # the status is the signal's (128 + its number), then the shell dies of the signal.
    for name, number in _SIGNALS:
        died = f"{_write_status(exit_path, str(128 + number))}; trap - EXIT {name}; kill -{name} $$"
        prefix += f"trap {shlex.quote(died)} {name}\n"
    if cwd:
        prefix += f"cd -- {shlex.quote(cwd)} || exit 1\n"
    if _REPLACES_SHELL.search(command):
        return f"{prefix}(\n{command}\n)"
    return prefix + command


def launch(script: str, *, shell: str, log_path: str, env: dict[str, str],
           gated: bool = False) -> Launched:
    """Start one task process; raises ``OSError`` when it cannot be started. A gated one
    (its script built with ``gated``) waits for ``open_gate`` before it runs its command."""
    file_actions: list[tuple] = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    gate = None
    if gated:
        # Both ends close on exec (PEP 446): only this child gets the read end, as its fd 3;
        # the write end stays the engine's alone, so the engine's death reads as the end.
        read_end, gate = os.pipe()
        if read_end == GATE_FD:  # dup2 onto itself would keep close-on-exec
            read_end, spare = os.dup(read_end), read_end
            os.close(spare)
        file_actions.append((os.POSIX_SPAWN_DUP2, read_end, GATE_FD))
    executable = _SHELLS[shell]
    try:
        pid = os.posix_spawn(executable, [shell, "-c", script], env, file_actions=file_actions,
                             setsid=True)
    except BaseException:
        if gate is not None:
            os.close(gate)
        raise
    finally:
        if gate is not None:
            os.close(read_end)
    return Launched(pid, os.pidfd_open(pid), gate)


def open_gate(gate: int) -> None:
    """Let a gated try run its command (its try is committed)."""
    try:
        os.write(gate, b"\n")
    except OSError:
        pass  # it ended already (killed): its end is reaped as any other
    os.close(gate)


def never_started(exit_path: str, log_path: str) -> bool:
    """Whether a try's process ended before it ran anything: its gate read as ended (its
    engine died before the try was committed or before it opened the gate); a claimed try
    whose shell never said it started (its claimer died between the claim and the spawn); a
    try recorded by an earlier version that left no log."""
    status = _status(exit_path)
    if status == NEVER_STARTED:
        return True
    if exit_path.endswith(CLAIMED):
        return status is None
    return "#" not in exit_path and not os.path.exists(log_path)


def _status(exit_path: str) -> str | None:
    """What a try's shell wrote as its status (the last line for it), None when nothing."""
    path, key = _status_file(exit_path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if key is None:
        return data.decode(errors="replace").strip() or None
    prefix = key.encode() + b" "
    for line in reversed(data.splitlines()):
        if line.startswith(prefix):
            return line[len(prefix):].decode(errors="replace").strip()
    return None


def status_written_at(exit_path: str) -> float | None:
    """When a try's status file was last written (for a run's shared file: when the last of
    its tries wrote, at or after this one's end)."""
    try:
        return os.stat(_status_file(exit_path)[0]).st_mtime
    except OSError:
        return None


def status_files(exit_paths: list[str]) -> list[str]:
    """The files these tries' statuses are in (a run's shared file once)."""
    return list(dict.fromkeys(_status_file(p)[0] for p in exit_paths))


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


def _scan(sid: int | None, mark: str | None) -> set[int]:
    """Live processes of a task: its session ``sid``, every descendant of ``sid`` (also one that
    left the session), and every process carrying the try's mark in its environment (also a
    double-forked grandchild that init adopted). One pass over /proc."""
    needle = f"\0{MARK_VAR}={mark}\0".encode() if mark else None
    me = os.getpid()
    children: dict[int, list[int]] = {}
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        fields = _stat_fields(pid)
        if not fields or fields[0] in (b"Z", b"X"):
            continue
        # fields[0] is the state, [1] ppid, [2] pgrp, [3] session.
        children.setdefault(int(fields[1]), []).append(pid)
        if sid is not None and int(fields[3]) == sid:
            found.add(pid)
        elif needle is not None and pid != me:
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    if needle in b"\0" + fh.read():
                        found.add(pid)
            except OSError:
                pass  # gone, or another user's process: not ours
    stack = [sid] if sid is not None else []
    while stack:
        for child in children.get(stack.pop(), ()):
            found.add(child)
            stack.append(child)
    return found


def find_leaders(marks: set[str]) -> dict[str, int]:
    """The live shells of the tries marked ``marks`` (each leads its own session), by mark: one
    pass over /proc, reading the environment of session leaders only."""
    found: dict[str, int] = {}
    if not marks:
        return found
    prefix = f"{MARK_VAR}=".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        fields = _stat_fields(pid)
        if not fields or fields[0] in (b"Z", b"X") or int(fields[3]) != pid:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                variables = fh.read().split(b"\0")
        except OSError:
            continue
        for variable in variables:
            if variable.startswith(prefix):
                mark = variable[len(prefix):].decode(errors="replace")
                if mark in marks:
                    found[mark] = pid
                break
    return found


def find_leader(mark: str) -> int | None:
    """The live shell of the try marked ``mark``, if any."""
    return find_leaders({mark}).get(mark)


def locate(pid: int | None, pid_start: float | None, mark: str,
           leaders: dict[str, int] | None = None) -> int | None:
    """A try's shell if it still lives: the recorded pid when it is the same process (by start
    time), else the one found by the try's mark (its pid may not have been recorded before the
    runner that started it died). ``leaders``: a ``find_leaders`` pass made for several tries."""
    if pid is not None and pid_start is not None and same_process(pid, pid_start):
        return pid
    if leaders is not None:
        return leaders.get(mark)
    return find_leader(mark)


def signal_tree(pid: int | None, sig: int, mark: str | None,
                extra: set[int] | None = None) -> set[int]:
    """Send ``sig`` to a task's process group, session, descendants and marked processes."""
    targets = _scan(pid, mark) | (extra or set())
    if pid is not None:
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


def terminate_tree(pid: int | None, mark: str | None) -> set[int]:
    """SIGTERM the tree (and SIGCONT, so stopped processes see it); SIGKILL follows later."""
    members = signal_tree(pid, signal.SIGTERM, mark)
    signal_tree(pid, signal.SIGCONT, mark, members)
    return members


def survivors(pid: int | None, mark: str | None, known: set[int]) -> set[int]:
    """Processes of a killed task still alive: its tree, and the known escapees."""
    return {p for p in known if _alive(p)} | _scan(pid, mark)


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def kill_tree(pid: int | None, mark: str | None, known: set[int] | None = None) -> None:
    signal_tree(pid, signal.SIGKILL, mark, known)


def end_tree(pid: int | None, mark: str | None, grace: float, *,
             settle: float = 2.0) -> set[int]:
    """The whole kill sequence, waiting for it: SIGTERM, up to ``grace`` for the tree to end,
    SIGKILL to whatever is left. Returns the processes still alive after that (none, unless
    one cannot be killed). For callers that own no event loop (an action with no runner)."""
    import time

    known = terminate_tree(pid, mark)
    deadline = time.monotonic() + grace
    left = survivors(pid, mark, known)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = survivors(pid, mark, known)
    if left:
        kill_tree(pid, mark, left)
        deadline = time.monotonic() + settle
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = survivors(pid, mark, left)
    return left


def read_exit_status(path: str) -> int | None:
    """The status a try's shell wrote on exit; None when it wrote none (or could not: nothing
    is what a full disk leaves)."""
    try:
        return int(_status(path) or "")
    except ValueError:
        return None


def ensure_log_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
