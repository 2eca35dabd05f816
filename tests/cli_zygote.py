"""The ``flowtui`` command as a real process, without paying for the interpreter each time.

A test that calls ``flowtui`` pays ~0.2 s of CPU for Python to start and import the CLI; the
suite calls it some six hundred times. This server imports the CLI once, then forks a fresh
process per call: the child sets the caller's environment and working directory, sends its
output to files, runs ``flowtui.cli.main(argv)`` and exits with its code. Each call is still its
own process (own signals, own globals, killed on timeout); only the interpreter's start is
shared. Tests of how the command starts (``python -m flowtui``, what it imports) start a real
interpreter instead (``flowtui(..., fresh=True)``).

Protocol, one connection a call on a Unix socket: the client sends one JSON line
``{"argv", "env", "cwd", "out", "err", "append", "session"}``; the server answers
``{"pid": N}`` when the child is forked and ``{"rc": N}`` when it has ended (negative: killed by
that signal, as subprocess says). ``client()`` is the tests' side: ``run`` (as
``subprocess.run``) and ``start`` (a ``Popen``-like handle, for runners that live on).
"""
from __future__ import annotations

import gc
import json
import os
import selectors
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(request: dict) -> None:
    """In the forked process: become the command the caller asked for. It ends as
    ``python -m flowtui`` ends: ``SystemExit`` from ``main``'s code, or an exception's
    traceback, leaves through the interpreter's own exit (threads joined, connections closed)."""
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    if request.get("session"):
        os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    mode = os.O_APPEND if request.get("append") else os.O_TRUNC
    for fd, path in ((1, request["out"]), (2, request["err"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o600)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["flowtui", *request["argv"]]
    from flowtui.cli import main

    raise SystemExit(main(request["argv"]))


def serve(path: str) -> None:
    import flowtui.cli as cli

    cli.handlers()  # every command's module, imported once here
    cli.build_parser()  # and the parser, built once
    # What commands import on first use: the runner's daemon, and the schema every test's new
    # home is made with.
    for name in ("flowtui.runner.engine", "flowtui.runner.loader", "flowtui.store.db",
                 "flowtui.runner.daemon", "flowtui.store.schema"):
        __import__(name)
    # What is imported now is shared with every child until written to. The interpreter's
    # exit in a child walks every object it holds (the cyclic collector at shutdown), which
    # copied the pages of everything imported here: ~40 ms of a command's ~50 ms of CPU.
    # Frozen objects are left out of the collector's walks; the child's exit is unchanged.
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sys.stdin, selectors.EVENT_READ, "parent")  # closed: the tests are gone
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "parent":
                return
            if key.data == "accept":
                conn, _ = listener.accept()
                selector.register(conn, selectors.EVENT_READ, ("request", conn, b""))
            elif key.data[0] == "request":
                _, conn, seen = key.data
                chunk = conn.recv(1 << 16)
                if not chunk:
                    selector.unregister(conn)
                    conn.close()
                    continue
                seen += chunk
                if not seen.endswith(b"\n"):
                    selector.modify(conn, selectors.EVENT_READ, ("request", conn, seen))
                    continue
                selector.unregister(conn)
                request = json.loads(seen)
                pid = os.fork()
                if pid == 0:
                    for held in list(selector.get_map().values()):
                        if held.data[0] == "ended":
                            os.close(held.fd)
                        elif held.data not in ("accept", "parent"):
                            held.data[1].close()
                    selector.close()
                    listener.close()
                    conn.close()
                    _child(request)
                pidfd = os.pidfd_open(pid)
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                selector.register(pidfd, selectors.EVENT_READ, ("ended", conn, pid))
            else:
                _, conn, pid = key.data
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                try:
                    conn.sendall(json.dumps({"rc": os.waitstatus_to_exitcode(status)}).encode()
                                 + b"\n")
                except OSError:
                    pass
                conn.close()


class Forked:
    """A command forked by the server, handled like a ``subprocess.Popen``."""

    def __init__(self, conn: socket.socket, argv: list[str]) -> None:
        self.conn, self.args, self.returncode = conn, argv, None
        self._seen = b""
        self.pid = int(self._message(None)["pid"])

    def _message(self, timeout: float | None) -> dict | None:
        while b"\n" not in self._seen:
            if not select.select([self.conn], [], [], timeout)[0]:
                return None
            chunk = self.conn.recv(4096)
            if not chunk:
                raise RuntimeError("the CLI server went away")
            self._seen += chunk
        line, self._seen = self._seen.split(b"\n", 1)
        return json.loads(line)

    def poll(self) -> int | None:
        return self.wait(0.0, raise_timeout=False)

    def wait(self, timeout: float | None = None, raise_timeout: bool = True) -> int | None:
        if self.returncode is None:
            message = self._message(timeout)
            if message is None:
                if raise_timeout:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
                return None
            self.returncode = int(message["rc"])
            self.conn.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Client:
    """This test process's server, started on first use."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="flowtui-cli-"))
        self.socket = str(self.folder / "cli.sock")
        self.calls = 0
        self.proc = subprocess.Popen([sys.executable, "-P", __file__, self.socket],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"ready\n"

    def start(self, argv: list[str], env: dict[str, str], out: Path, err: Path | None = None,
              session: bool = False) -> Forked:
        """``flowtui argv`` started: output appended to ``out`` (and ``err``, else ``out``)."""
        return self._fork(argv, env, out, err or out, append=True, session=session)

    def _fork(self, argv: list[str], env: dict[str, str], out: Path, err: Path,
              append: bool, session: bool) -> Forked:
        request = {"argv": argv, "env": env, "cwd": os.getcwd(), "out": str(out),
                   "err": str(err), "append": append, "session": session}
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.socket)
        conn.sendall(json.dumps(request).encode() + b"\n")
        return Forked(conn, ["flowtui", *argv])

    def run(self, argv: list[str], env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess[str]:
        """As ``subprocess.run(..., capture_output=True, text=True, timeout=timeout)``."""
        self.calls += 1
        out, err = self.folder / f"{self.calls}.out", self.folder / f"{self.calls}.err"
        child = self._fork(argv, env, out, err, append=False, session=False)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise
        result = subprocess.CompletedProcess(child.args, child.returncode, out.read_text(),
                                             err.read_text())
        out.unlink()
        err.unlink()
        return result

    def stop(self) -> None:
        import shutil

        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_client: list[Client] = []


def client() -> Client:
    if not _client or _client[0].proc.poll() is not None:
        _client[:] = [Client()]
    return _client[0]


def stop() -> None:
    for server in _client:
        server.stop()
    _client.clear()


if __name__ == "__main__":
    serve(sys.argv[1])
