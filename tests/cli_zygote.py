"""The ``flowtui`` command as a real process, without paying for the interpreter each time.

A test that calls ``flowtui`` pays ~0.2 s of CPU for Python to start and import the CLI; the
suite calls it some six hundred times. This server imports the CLI once, then forks a fresh
process per call: the child sets the caller's environment and working directory, sends its
output to files, runs ``flowtui.cli.main(argv)`` and exits with its code. Each call is still its
own process (own signals, own globals, killed on timeout); only the interpreter's start is
shared. Tests of how the command starts (``python -m flowtui``, what it imports) start a real
interpreter instead (``flowtui(..., fresh=True)``).

Protocol, one connection a call on a Unix socket: the client sends one JSON line
``{"argv", "env", "cwd", "out", "err"}``; the server answers ``{"pid": N}`` when the child is
forked and ``{"rc": N}`` when it has ended (negative: killed by that signal, as subprocess says).
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys


def _child(request: dict) -> None:
    """In the forked process: become the command the caller asked for. It ends as
    ``python -m flowtui`` ends: ``SystemExit`` from ``main``'s code, or an exception's
    traceback, leaves through the interpreter's own exit (threads joined, connections closed)."""
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, request["out"]), (2, request["err"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["flowtui", *request["argv"]]
    from flowtui.cli import main

    raise SystemExit(main(request["argv"]))


def serve(path: str) -> None:
    import flowtui.cli as cli

    cli.handlers()  # every command's module, imported once here
    for name in ("flowtui.runner.engine", "flowtui.runner.loader", "flowtui.store.db"):
        __import__(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
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
                        elif held.data != "accept":
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


if __name__ == "__main__":
    serve(sys.argv[1])
