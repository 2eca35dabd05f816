"""The real ``flowtui`` command: exit codes, one-line errors, JSON output, no shell injection (SPEC §6)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import flowtui, write
import flowtui as flowtui_pkg

HELLO = """
    dag_id: hello
    tasks:
      a:
        command: echo hello-from-a
    """


def assert_usage_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, nothing on stdout, exactly one "flowtui: error:" line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("flowtui: error: "), proc.stderr
    assert proc.stdout == "", proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def hello(pipelines: Path) -> Path:
    write(pipelines, "hello.yaml", HELLO)
    return pipelines


def run_hello(home: Path, pipelines: Path) -> str:
    proc = flowtui("run", "hello", "--json", home=home, pipelines=pipelines)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout)["run_id"]


# -- exit 2, one line -------------------------------------------------------------------------
def test_run_unknown_dag(home: Path, hello: Path) -> None:
    assert_usage_error(flowtui("run", "nope", home=home, pipelines=hello),
                       "unknown DAG 'nope'", "hello")
    assert not (home / "flowtui.db").exists()


def test_run_dag_whose_python_file_raises_is_one_line(home: Path, pipelines: Path) -> None:
    # The load error of a Python file carries a traceback; `run` must still print one line.
    write(pipelines, "broken.py", """
        from flowtui import DAG, Bash
        with DAG("broken"):
            Bash("a", "echo")
        raise ValueError("cannot reach the warehouse")
        """)
    assert_usage_error(flowtui("run", "broken", home=home, pipelines=pipelines), "broken")


def test_run_dag_whose_yaml_is_broken_names_the_error(home: Path, pipelines: Path) -> None:
    write(pipelines, "broken.yaml", "dag_id: broken\ntasks:\n  a: {command: echo, retires: 1}\n")
    assert_usage_error(flowtui("run", "broken", home=home, pipelines=pipelines),
                       "broken.yaml:3", "did you mean 'retries'?")


def test_conf_not_json(home: Path, hello: Path) -> None:
    assert_usage_error(flowtui("run", "hello", "--conf", "{source: prod}", home=home,
                               pipelines=hello), "--conf is not valid JSON")
    assert not (home / "flowtui.db").exists()


@pytest.mark.parametrize("conf", ["[1, 2]", '"text"', "42", "null"])
def test_conf_json_not_an_object(home: Path, hello: Path, conf: str) -> None:
    assert_usage_error(flowtui("run", "hello", "--conf", conf, home=home, pipelines=hello),
                       "--conf must be a JSON object")


@pytest.mark.parametrize("date", ["yesterday", "2026-02-30", "2026/01/01", "2026-01-01T25:00"])
def test_date_that_does_not_parse(home: Path, hello: Path, date: str) -> None:
    assert_usage_error(flowtui("run", "hello", "--date", date, home=home, pipelines=hello),
                       f"cannot read the date {date!r}", "YYYY-MM-DD")


def test_tasks_list_unknown_run_id(home: Path, hello: Path) -> None:
    run_hello(home, hello)
    assert_usage_error(flowtui("tasks", "list", "hello", "manual__nope", home=home,
                               pipelines=hello), "no run 'manual__nope'", "runs list hello")


def test_tasks_list_before_any_run(home: Path, hello: Path) -> None:
    assert_usage_error(flowtui("tasks", "list", "hello", "latest", home=home, pipelines=hello))


def test_logs_try_that_does_not_exist(home: Path, hello: Path) -> None:
    run_id = run_hello(home, hello)
    ok = flowtui("logs", "hello", run_id, "a", "--try", "1", home=home, pipelines=hello)
    assert ok.returncode == 0, ok.stderr
    assert "hello-from-a" in ok.stdout
    assert_usage_error(flowtui("logs", "hello", run_id, "a", "--try", "9", home=home,
                               pipelines=hello), "not 9")


def test_logs_unknown_task(home: Path, hello: Path) -> None:
    run_hello(home, hello)
    assert_usage_error(flowtui("logs", "hello", "latest", "zz", home=home, pipelines=hello),
                       "'zz'")


@pytest.mark.parametrize("argv", [
    ["frobnicate"],
    ["dags", "frobnicate"],
    ["dags"],
    ["runs", "list", "--limit", "many"],
    ["run"],
    ["run", "hello", "--no-such-flag"],
])
def test_bad_command_line(home: Path, hello: Path, argv: list[str]) -> None:
    assert_usage_error(flowtui(*argv, home=home, pipelines=hello))


@pytest.mark.parametrize("argv", [["runs", "list"], ["runs", "list", "--json"],
                                  ["run", "hello"], ["tasks", "list", "hello", "latest"]])
def test_database_that_is_not_sqlite(home: Path, hello: Path, argv: list[str]) -> None:
    db = home / "flowtui.db"
    garbage = b"this is not a database\x00\x01\x02" * 200
    db.write_bytes(garbage)
    assert_usage_error(flowtui(*argv, home=home, pipelines=hello), str(db),
                       "not a flowtui SQLite database")
    assert db.read_bytes() == garbage
    assert sorted(p.name for p in home.iterdir()) == ["flowtui.db"]


def test_malformed_config_is_a_usage_error(home: Path, hello: Path) -> None:
    (home / "flowtui.toml").write_text("parallelism = = 3\n")
    assert_usage_error(flowtui("dags", "list", home=home, pipelines=hello), "flowtui.toml")


# -- dags check / list ------------------------------------------------------------------------
def test_dags_check_lists_every_error_and_exits_1(home: Path, pipelines: Path) -> None:
    write(pipelines, "good.yaml", "tasks: {a: echo}\n")
    write(pipelines, "bad_key.yaml", "dag_id: bad_key\ntasks:\n  a: {command: echo, retires: 1}\n")
    write(pipelines, "bad_import.py", """
        from flowtui import DAG
        raise ValueError("nope")
        """)
    proc = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "bad_key.yaml:3: task 'a': unknown key 'retires'; did you mean 'retries'?" in proc.stdout
    assert "bad_import.py:2: exception while importing the file: ValueError: nope" in proc.stdout
    assert "2 error(s)" in proc.stdout
    assert "1 DAG(s)" in proc.stdout


def test_dags_check_good_folder_exits_0(home: Path, pipelines: Path) -> None:
    write(pipelines, "one.yaml", "tasks: {a: echo}\n")
    write(pipelines, "two.py", """
        from flowtui import DAG, Bash
        with DAG("two"):
            Bash("a", "echo")
        """)
    proc = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "2 DAG(s), OK" in proc.stdout
    assert proc.stderr == ""


def test_dags_check_json_is_one_document(home: Path, pipelines: Path) -> None:
    write(pipelines, "good.yaml", "tasks: {a: echo}\n")
    bad = write(pipelines, "bad.yaml", "dag_id: bad\ntimezone: Mars/Olympus\ntasks: {a: echo}\n")
    proc = flowtui("dags", "check", "--json", home=home, pipelines=pipelines)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    document = json.loads(proc.stdout)
    assert document["dags"] == ["good"]
    assert document["errors"] == [{"file": str(bad), "line": 2,
                                   "message": document["errors"][0]["message"]}]
    assert "unknown timezone 'Mars/Olympus'" in document["errors"][0]["message"]


def test_dags_check_json_good_folder(home: Path, pipelines: Path) -> None:
    write(pipelines, "good.yaml", "tasks: {a: echo}\n")
    proc = flowtui("dags", "check", "--json", home=home, pipelines=pipelines)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert json.loads(proc.stdout)["errors"] == []


def test_dags_list_json_is_one_document(home: Path, pipelines: Path) -> None:
    write(pipelines, "good.yaml", """
        dag_id: good
        schedule: "@daily"
        timezone: Europe/Berlin
        tags: [etl]
        tasks: {a: echo, b: {command: echo, deps: [a]}}
        """)
    write(pipelines, "bad.yaml", "dag_id: bad\ntasks: [\n")
    proc = flowtui("dags", "list", "--json", home=home, pipelines=pipelines)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    document = json.loads(proc.stdout)
    assert [d["dag_id"] for d in document["dags"]] == ["good"]
    good = document["dags"][0]
    assert good["schedule"] == "@daily" and good["timezone"] == "Europe/Berlin"
    assert good["tasks"] == 2 and good["tags"] == ["etl"]
    assert [Path(e["file"]).name for e in document["errors"]] == ["bad.yaml"]


def test_options_after_the_subcommand(home: Path, hello: Path) -> None:
    proc = flowtui("dags", "list", "--json", "--home", str(home), "--pipelines", str(hello))
    assert proc.returncode == 0, proc.stderr
    assert [d["dag_id"] for d in json.loads(proc.stdout)["dags"]] == ["hello"]


def test_run_good_dag_beside_a_broken_file(home: Path, hello: Path) -> None:
    write(hello, "broken.yaml", "tasks: [\n")
    proc = flowtui("run", "hello", home=home, pipelines=hello)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "success" in proc.stdout


def test_version() -> None:
    proc = flowtui("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"flowtui {flowtui_pkg.__version__}"
    assert flowtui_pkg.__version__ == "0.1.0"


# -- a run's conf never injects shell syntax ---------------------------------------------------
INJECTIONS = [
    "hi; touch INJECTED",
    "$(touch INJECTED)",
    "`touch INJECTED`",
    "it's | touch INJECTED && echo \"x\" > INJECTED",
]


def _injection_dag(pipelines: Path, tmp_path: Path, command: str) -> tuple[Path, Path]:
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    out = tmp_path / "out.txt"
    write(pipelines, "inj.yaml", f"""
        dag_id: inj
        params: {{x: harmless}}
        tasks:
          echo_param:
            command: {json.dumps(command.replace("OUT", str(out)))}
            cwd: {json.dumps(str(workdir))}
        """)
    return workdir, out


@pytest.mark.parametrize("value", INJECTIONS)
def test_conf_cannot_inject_shell_syntax(home: Path, pipelines: Path, tmp_path: Path,
                                         value: str) -> None:
    workdir, out = _injection_dag(pipelines, tmp_path, "echo {{ params.x }} > OUT")
    proc = flowtui("run", "inj", "--conf", json.dumps({"x": value}), home=home,
                   pipelines=pipelines)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert out.read_text() == value + "\n"
    assert list(workdir.iterdir()) == []
    assert not (Path.cwd() / "INJECTED").exists()


def test_param_default_renders_literally(home: Path, pipelines: Path, tmp_path: Path) -> None:
    workdir, out = _injection_dag(pipelines, tmp_path, "echo {{ params.x }} {{ ds }} > OUT")
    proc = flowtui("run", "inj", "--date", "2026-03-04", home=home, pipelines=pipelines)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert out.read_text() == "harmless 2026-03-04\n"


@pytest.mark.parametrize("command", ['echo "{{ params.x }}" > OUT', "echo '{{ params.x }}' > OUT"],
                         ids=["double-quoted", "single-quoted"])
@pytest.mark.parametrize("value", INJECTIONS[:3])
def test_conf_cannot_inject_inside_quotes(home: Path, pipelines: Path, tmp_path: Path,
                                          command: str, value: str) -> None:
    # Authors often quote a template ("{{ ds }}"); the conf must stay inert there too.
    workdir, out = _injection_dag(pipelines, tmp_path, command)
    flowtui("run", "inj", "--conf", json.dumps({"x": value}), home=home, pipelines=pipelines)
    assert list(workdir.iterdir()) == [], "the conf value ran as shell code"
    assert out.read_text() == value + "\n"
