"""The ``flowtui`` command: argument parsing, error handling, and dispatch to the commands."""
from __future__ import annotations

import argparse
import difflib
import functools
import sqlite3
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from flowtui import __version__
from flowtui.usage import EXIT_OK, EXIT_USAGE, UsageError

if TYPE_CHECKING:
    from flowtui.runner.config import Config

Handler = Callable[[argparse.Namespace, "Config"], int]


# Each command, as its words after ``flowtui``, and the function that carries it out. Only
# the module of the command given is imported, once the arguments are parsed (so --version,
# --help and typos answer at once, and ``flowtui run`` does not load the alerts' sender).
HANDLERS: dict[str, str] = {
    "ui": "commands_ui:cmd_ui",
    "run": "commands:cmd_run",
    "dags list": "commands:cmd_dags_list",
    "dags check": "commands:cmd_dags_check",
    "dags show": "commands:cmd_dags_show",
    "dags pause": "commands_ops:cmd_pause",
    "dags unpause": "commands_ops:cmd_unpause",
    "runner": "commands_ops:cmd_runner",
    "trigger": "commands_ops:cmd_trigger",
    "clear": "commands_ops:cmd_clear",
    "retry": "commands_ops:cmd_retry",
    "mark": "commands_ops:cmd_mark",
    "kill": "commands_ops:cmd_kill",
    "backfill": "commands_backfill:cmd_backfill",
    "alerts list": "commands_alerts:cmd_alerts",
    "alerts ack": "commands_alerts:cmd_alerts",
    "alerts resolve": "commands_alerts:cmd_alerts",
    "sla": "commands_alerts:cmd_sla",
    "runs list": "commands:cmd_runs_list",
    "tasks list": "commands:cmd_tasks_list",
    "logs": "commands:cmd_logs",
    "db clean": "commands_db:cmd_db_clean",
    "db migrate": "commands_db:cmd_db_migrate",
    "datasets list": "commands_datasets:cmd_datasets",
    "datasets show": "commands_datasets:cmd_datasets",
    "datasets emit": "commands_datasets:cmd_datasets",
}


def handler(name: str) -> Handler:
    """The function of one command (its module imported now)."""
    import importlib

    module, function = HANDLERS[name].split(":")
    return getattr(importlib.import_module(f"flowtui.{module}"), function)


def handlers() -> dict[str, Handler]:
    """Every command's function (each module imported)."""
    return {name: handler(name) for name in HANDLERS}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's own message lists every choice and guesses nothing: a typo gets one line
        # that names the closest command or value.
        choices = action.choices
        if choices is None or value in choices:
            return
        names = [str(choice) for choice in choices]
        close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
        if isinstance(action, argparse._SubParsersAction):
            words = self.prog.split()[1:]  # "flowtui dags" -> the words before this one
            guess = " ".join([*words, close[0]]) if close else None
            what = f"unknown command {' '.join([*words, str(value)])!r}"
        else:
            guess = close[0] if close else None
            option = "/".join(action.option_strings) or str(action.metavar or action.dest)
            what = f"{option}: {str(value)!r} is not a choice"
        hint = f"; did you mean {guess!r}?" if guess else f" (choose from {', '.join(names)})"
        raise UsageError(what + hint)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS,
                        help="state folder (default $FLOWTUI_HOME or ~/.flowtui)")
    common.add_argument("--pipelines", default=argparse.SUPPRESS,
                        help="pipelines folder (default $FLOWTUI_PIPELINES, pipelines_dir in "
                             "flowtui.toml, or ./pipelines)")
    return common


def _ui_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--read-only", action="store_true", default=argparse.SUPPRESS,
                        help="open the database read-only and hide every action")
    parser.add_argument("--no-runner", action="store_true", default=argparse.SUPPRESS,
                        help="do not start a runner when none is alive")
    parser.add_argument("--theme", choices=["dark", "light", "high-contrast"],
                        default=argparse.SUPPRESS, help="colour theme (default dark)")


@functools.cache
def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (built once a process: parsing leaves it as it was)."""
    common = _common()
    parser = _Parser(prog="flowtui", parents=[common],
                     description="A single-host DAG runner and a terminal UI for it.")
    parser.add_argument("--version", action="version", version=f"flowtui {__version__}")
    _ui_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    _ui_options(add("ui", "open the terminal UI (the default command)"))

    p = add("run", "execute one manual run now, in the foreground; exit 0 iff it succeeded")
    p.add_argument("dag_id", metavar="DAG")
    p.add_argument("--date", help="logical date: YYYY-MM-DD (midnight in the DAG's timezone) "
                                  "or an ISO datetime; default now")
    p.add_argument("--conf", help="JSON object that overrides the DAG's params")
    p.add_argument("--json", action="store_true", help="print the finished run as JSON")

    dags = add("dags", "list, check and show DAGs")
    dsub = dags.add_subparsers(dest="dags_command", metavar="ACTION", parser_class=_Parser)
    dsub.required = True
    p = dsub.add_parser("list", parents=[common], help="the DAGs and import errors")
    p.add_argument("--json", action="store_true")
    p = dsub.add_parser("check", parents=[common],
                        help="validate every pipeline file; exit 1 when any has an error")
    p.add_argument("--json", action="store_true")
    p = dsub.add_parser("show", parents=[common], help="a DAG's graph, tasks and next fire times")
    p.add_argument("dag_id", metavar="DAG")

    p = dsub.add_parser("pause", parents=[common], help="stop creating and starting runs")
    p.add_argument("dag_id", metavar="DAG")
    p = dsub.add_parser("unpause", parents=[common], help="resume; catch-up runs follow")
    p.add_argument("dag_id", metavar="DAG")
    p.add_argument("--dry-run", action="store_true",
                   help="list the catch-up runs unpausing would create, change nothing")

    p = add("runner", "the scheduler daemon, in the foreground (until SIGTERM or SIGINT)")
    p.add_argument("--queues", metavar="A,B",
                   help="run only DAGs whose tasks are all in these queues (a task's queue: "
                        "key, default 'default'); several hosts on PostgreSQL share the rest")

    p = add("trigger", "queue a manual run for the runner; prints its run_id")
    p.add_argument("dag_id", metavar="DAG")
    p.add_argument("--date", help="logical date (default now)")
    p.add_argument("--conf", help="JSON object that overrides the DAG's params")

    p = add("clear", "reset tasks to none so they run again, with their full retries")
    p.add_argument("dag_id", metavar="DAG")
    p.add_argument("run_id", metavar="RUN_ID", help="a run id, or latest")
    p.add_argument("task_ids", metavar="TASK", nargs="*", help="tasks (default: all)")
    p.add_argument("--downstream", action="store_true", help="also every task downstream")
    p.add_argument("--upstream", action="store_true", help="also every task upstream")
    p.add_argument("--failed-only", action="store_true",
                   help="only the failed and upstream_failed ones")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    p = add("retry", "start an up_for_retry task now instead of waiting for its delay")
    p.add_argument("dag_id", metavar="DAG")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("task_id", metavar="TASK")

    p = add("mark", "set tasks' state by hand")
    p.add_argument("dag_id", metavar="DAG")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("task_ids", metavar="TASK", nargs="+")
    p.add_argument("--state", required=True, choices=["success", "failed", "skipped"])
    p.add_argument("--downstream", action="store_true")
    p.add_argument("--upstream", action="store_true")

    p = add("kill", "end a running task's process tree (then it fails or retries)")
    p.add_argument("dag_id", metavar="DAG")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("task_id", metavar="TASK")

    p = add("backfill", "re-run a date range (one run per schedule interval), or manage backfills")
    p.add_argument("target", metavar="DAG | list | pause ID | resume ID | cancel ID", nargs="+")
    p.add_argument("--start", help="first logical date, YYYY-MM-DD (in the DAG's timezone)")
    p.add_argument("--end", help="last logical date, YYYY-MM-DD (inclusive)")
    p.add_argument("--parallelism", type=int, default=1, help="runs at once (default 1)")
    p.add_argument("--order", choices=["oldest-first", "newest-first"], default="oldest-first")
    p.add_argument("--reprocess", choices=["none", "failed", "completed"],
                   help="dates that already have a run: skip them (none, the default), re-run "
                        "failed ones, or re-run all finished ones")
    p.add_argument("--pool", help="run the backfill's tasks in this pool")
    p.add_argument("--dry-run", action="store_true", help="list what it would do; change nothing")
    p.add_argument("--wait", action="store_true",
                   help="execute here, in the foreground; exit 0 iff every run succeeded")
    p.add_argument("--yes", "-y", action="store_true", help="allow more than 10,000 runs")
    p.add_argument("--json", action="store_true")

    p = add("alerts", "list alerts, or ack or resolve one")
    asub = p.add_subparsers(dest="alerts_command", metavar="ACTION", parser_class=_Parser)
    asub.required = True
    q = asub.add_parser("list", parents=[common], help="alerts, newest first")
    q.add_argument("--json", action="store_true")
    q.add_argument("--all", action="store_true", help="resolved ones too")
    for name, text in (("ack", "acknowledge: stops escalation, acks the page"),
                       ("resolve", "resolve by hand")):
        q = asub.add_parser(name, parents=[common], help=text)
        q.add_argument("alert_id", metavar="ID", type=int)

    p = add("sla", "each run's deadline, predicted finish and verdict")
    p.add_argument("--json", action="store_true")

    runs = add("runs", "list runs")
    rsub = runs.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=_Parser)
    rsub.required = True
    p = rsub.add_parser("list", parents=[common], help="runs, newest first")
    p.add_argument("dag_id", metavar="DAG", nargs="?")
    p.add_argument("--state", choices=["queued", "running", "success", "failed"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")


    ds = add("datasets", "datasets: their events, producers, consumers and why one waits")
    dssub = ds.add_subparsers(dest="datasets_command", metavar="ACTION", parser_class=_Parser)
    dssub.required = True
    p = dssub.add_parser("list", parents=[common], help="every dataset, its newest partition "
                                                        "and age, producers and consumers")
    p.add_argument("--json", action="store_true")
    p = dssub.add_parser("show", parents=[common], help="a dataset's events and consumers, and "
                                                        "what each consumer waits for")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true")
    p = dssub.add_parser("emit", parents=[common], help="record an event from outside")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--partition", help="the partition written (default today, YYYY-MM-DD)")
    p.add_argument("--meta", action="append", metavar="K=V", help="metadata, repeatable")

    db = add("db", "look after the home's database")
    bsub = db.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    bsub.required = True
    p = bsub.add_parser("clean", parents=[common],
                        help="remove finished runs older than a cutoff, with their tries, events "
                             "and logs (running and recent runs stay)")
    p.add_argument("--older-than", required=True, metavar="AGE",
                   help="how long ago a run must have ended, for example 90d")
    p.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    p.add_argument("--audit", action="store_true",
                   help="also remove audit log entries older than the cutoff (kept by default)")
    p.add_argument("--json", action="store_true")
    p = bsub.add_parser("migrate", parents=[common],
                        help="copy this home's SQLite history into an empty PostgreSQL "
                             "database, for several hosts")
    p.add_argument("--to", required=True, metavar="URL",
                   help="the PostgreSQL database, postgresql://user@host:5432/db")
    tasks = add("tasks", "list a run's task instances")
    tsub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION", parser_class=_Parser)
    tsub.required = True
    p = tsub.add_parser("list", parents=[common], help="a run's tasks with state and reason")
    p.add_argument("dag_id", metavar="DAG")
    p.add_argument("run_id", metavar="RUN_ID", help="a run id, or latest")
    p.add_argument("--json", action="store_true")

    p = add("logs", "print a task's log (the latest try unless --try)")
    p.add_argument("dag_id", metavar="DAG")
    p.add_argument("run_id", metavar="RUN_ID", help="a run id, or latest")
    p.add_argument("task_id", metavar="TASK")
    p.add_argument("--try", dest="try_number", type=int, help="which try (1 is the first)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new output until the try ends")
    parser.set_defaults(command_name="ui")  # a bare ``flowtui`` opens the UI
    _name_commands(parser, [])
    return parser


def _name_commands(parser: argparse.ArgumentParser, words: list[str]) -> None:
    """Set ``command_name`` (its words, the key into ``HANDLERS``) on every command's parser."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups and words:
        parser.set_defaults(command_name=" ".join(words))
    for group in groups:
        for name, sub in group.choices.items():
            _name_commands(sub, [*words, name])


def command_names(parser: argparse.ArgumentParser) -> list[str]:
    """Every command the parser accepts, as its words after ``flowtui``."""
    own = parser.get_default("command_name")
    found = [own] if own is not None else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [name for name in command_names(sub) if name not in found]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        from flowtui.runner.config import load_config

        config = load_config(getattr(args, "home", None), getattr(args, "pipelines", None))
        return int(handler(args.command_name)(args, config))
    except UsageError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except sqlite3.OperationalError as exc:
        # Another process holding the database's lock, or a full disk: one line, whatever the
        # command (nothing was half-written: each write is one transaction).
        from flowtui.store.health import outage

        problem = outage(exc)
        if problem is None:
            raise
        _fail(f"{problem}; try again")
    except Exception as exc:  # every known input error maps to exit 2 and one line
        known = _known_error(exc)
        if known is None:
            raise
        _fail(known)
    return EXIT_USAGE


def _known_error(exc: Exception) -> str | None:
    from flowtui.runner.actions import ActionError
    from flowtui.runner.alerting import AlertError
    from flowtui.runner.backfill import BackfillError
    from flowtui.runner.config import ConfigError
    from flowtui.runner.daemon import RunnerError
    from flowtui.runner.runs import RunError
    from flowtui.store import StoreError

    if isinstance(exc, (ConfigError, RunError, StoreError, ActionError, RunnerError,
                        BackfillError, AlertError)):
        return str(exc)
    return None


def _fail(message: str) -> Any:
    from flowtui.runner.text import visible

    # Messages quote DAG ids, task ids and file text: one line, nothing that drives a terminal.
    print(f"flowtui: error: {visible(message, inline=True)}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


if __name__ == "__main__":
    raise SystemExit(main())
