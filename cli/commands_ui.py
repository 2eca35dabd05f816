"""``flowtui`` / ``flowtui ui``: open the TUI, starting a detached runner when none lives."""
from __future__ import annotations

import argparse
import subprocess
import sys

from flowtui.runner.config import Config
from flowtui.usage import EXIT_OK, UsageError


def start_detached_runner(config: Config) -> int:
    """A runner that outlives this process and the SSH session (own session, no terminal)."""
    config.home.mkdir(parents=True, exist_ok=True)
    log = open(config.home / "runner.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "flowtui", "--home", str(config.home), "--pipelines",
         str(config.pipelines.resolve()), "runner"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        close_fds=True)
    return proc.pid


def cmd_ui(args: argparse.Namespace, config: Config) -> int:
    from flowtui.runner import actions
    from flowtui.store import Store

    read_only = getattr(args, "read_only", False)
    if read_only:
        if not config.has_database():
            raise UsageError(f"no database in {config.home} yet; --read-only needs one")
        Store.open(config.database, readonly=True).close()  # a clear error now, not in the app
    else:
        store = Store.open(config.database)
        if not getattr(args, "no_runner", False) and actions.live_daemon(store) is None:
            if config.pipelines.is_dir():
                start_detached_runner(config)
            else:
                print(f"flowtui: no runner started: pipelines folder {config.pipelines} not "
                      "found (pass --pipelines DIR)", file=sys.stderr)
        store.close()
    from flowtui.app.app import make_app

    app = make_app(config, read_only=read_only, theme=getattr(args, "theme", "dark"))
    app.run()
    return EXIT_OK
