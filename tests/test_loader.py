"""Loading pipeline folders: every error names its file and line and says what to fix (SPEC §2)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write
from flowtui.runner.loader import LoadError, LoadResult, load_folder


def load(folder: Path) -> LoadResult:
    return load_folder(folder)


def only_error(result: LoadResult) -> LoadError:
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    return result.errors[0]


def assert_rotation_of(cycle_text: str, expected: list[str]) -> None:
    """``cycle_text`` is "x -> y -> z -> x", the same cycle as ``expected`` from any start."""
    names = [n.strip() for n in cycle_text.split("->")]
    assert names[0] == names[-1], cycle_text
    ring = names[:-1]
    assert len(ring) == len(expected), cycle_text
    start = expected.index(ring[0])
    assert ring == expected[start:] + expected[:start], cycle_text


# -- YAML syntax and keys -----------------------------------------------------------------------
def test_yaml_syntax_error_names_file_and_line(pipelines: Path) -> None:
    path = write(pipelines, "broken.yaml", """
        dag_id: broken
        tasks:
          x:
            command: echo: hi
        """)
    error = only_error(load(pipelines))
    assert error.fileloc == str(path)
    assert error.line == 4
    assert "YAML syntax error" in error.message
    assert "fix the YAML syntax" in error.message
    assert str(error).startswith(f"{path}:4: ")


def test_yaml_bad_indentation_points_at_the_line(pipelines: Path) -> None:
    write(pipelines, "indent.yaml", """
        dag_id: indent
        tasks:
          x:
            command: echo
           deps: [y]
        """)
    error = only_error(load(pipelines))
    assert error.line == 5
    assert "fix the YAML syntax" in error.message


def test_yaml_unterminated_quote_points_at_the_opening_line(pipelines: Path) -> None:
    # The quote opens on line 3; the parser only notices at the end of the file (line 5, past
    # the last line). The useful line is where the scalar started.
    write(pipelines, "quote.yaml", """
        dag_id: quote
        tasks:
          x: {command: "echo}
          y: {command: echo}
        """)
    error = only_error(load(pipelines))
    assert "fix the YAML syntax" in error.message
    assert error.line == 3


def test_unknown_dag_key_suggests_the_closest(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        schedul: "@daily"
        tasks:
          x: {command: echo}
        """)
    error = only_error(load(pipelines))
    assert error.line == 2
    assert "unknown DAG key 'schedul'" in error.message
    assert "did you mean 'schedule'?" in error.message


def test_unknown_task_key_suggests_the_closest(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        tasks:
          x: {command: echo}
          y:
            command: echo
            retires: 3
        """)
    error = only_error(load(pipelines))
    assert error.line == 6
    assert "task 'y'" in error.message
    assert "unknown key 'retires'" in error.message
    assert "did you mean 'retries'?" in error.message


def test_unknown_key_in_defaults_suggests_the_closest(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        defaults:
          retrys: 2
        tasks:
          x: {command: echo}
        """)
    error = only_error(load(pipelines))
    assert error.line == 3
    assert "'retrys'" in error.message
    assert "did you mean 'retries'?" in error.message


def test_unknown_dependency(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        tasks:
          extract: {command: echo}
          load:
            command: echo
            deps: [extrakt]
        """)
    error = only_error(load(pipelines))
    assert "task 'load' depends on unknown task 'extrakt'" in error.message
    assert "did you mean 'extract'?" in error.message
    assert error.line in (4, 6)  # the task's line or its deps line


def test_duplicate_task_id_in_yaml(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        tasks:
          x: {command: echo one}
          x: {command: echo two}
        """)
    error = only_error(load(pipelines))
    assert error.line == 4
    assert "duplicate key 'x'" in error.message
    assert "first defined on line 3" in error.message
    assert "remove or rename one of them" in error.message


def test_duplicate_task_id_in_python(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash

        with DAG("p"):
            Bash("a", "echo one")
            Bash("a", "echo two")
        """)
    result = load(pipelines)
    error = only_error(result)
    assert "p" not in result.dags
    assert error.line == 5
    assert "duplicate task id 'a'" in error.message
    assert "give each task its own id" in error.message


def test_duplicate_dag_id_across_files_reports_the_second(pipelines: Path) -> None:
    first = write(pipelines, "a.yaml", "dag_id: same\ntasks: {x: echo first}\n")
    second = write(pipelines, "b.yaml", "dag_id: same\ntasks: {y: echo second}\n")
    result = load(pipelines)
    error = only_error(result)
    assert error.fileloc == str(second)
    assert error.line == 1
    assert "dag_id 'same' is already defined in" in error.message
    assert str(first) in error.message
    assert result.dags["same"].fileloc == str(first)
    assert list(result.dags["same"].tasks) == ["x"]


def test_duplicate_dag_id_between_yaml_and_python(pipelines: Path) -> None:
    write(pipelines, "a.yaml", "dag_id: same\ntasks: {x: echo first}\n")
    second = write(pipelines, "b.py", """
        from flowtui import DAG, Bash

        with DAG("same"):
            Bash("y", "echo second")
        """)
    result = load(pipelines)
    error = only_error(result)
    assert error.fileloc == str(second)
    assert error.line == 3
    assert "already defined" in error.message
    assert list(result.dags["same"].tasks) == ["x"]


# -- cycles ----------------------------------------------------------------------------------
def test_cycle_lists_the_tasks_in_order(pipelines: Path) -> None:
    write(pipelines, "c.yaml", """
        dag_id: c
        tasks:
          a: {command: echo, deps: [c]}
          b: {command: echo, deps: [a]}
          c: {command: echo, deps: [b]}
        """)
    error = only_error(load(pipelines))
    assert "a -> b -> c -> a" in error.message
    assert "cycle" in error.message
    assert error.line == 3


def test_cycle_off_the_root_lists_only_the_cycle(pipelines: Path) -> None:
    write(pipelines, "c.yaml", """
        dag_id: c
        tasks:
          root: {command: echo}
          a: {command: echo, deps: [root, c]}
          b: {command: echo, deps: [a]}
          c: {command: echo, deps: [b]}
          leaf: {command: echo, deps: [c]}
        """)
    error = only_error(load(pipelines))
    text = error.message.split("cycle: ", 1)[1].split(";", 1)[0]
    assert_rotation_of(text, ["a", "b", "c"])
    assert "root" not in text and "leaf" not in text


def test_self_dependency_is_a_cycle(pipelines: Path) -> None:
    write(pipelines, "c.yaml", """
        dag_id: c
        tasks:
          a: {command: echo, deps: [a]}
        """)
    error = only_error(load(pipelines))
    assert "a -> a" in error.message
    assert error.line == 3


def test_cycle_in_python(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash
        with DAG("p"):
            a = Bash("a", "echo")
            b = Bash("b", "echo")
            c = Bash("c", "echo")
            a >> b >> c >> a
        """)
    error = only_error(load(pipelines))
    text = error.message.split("cycle: ", 1)[1].split(";", 1)[0]
    assert_rotation_of(text, ["a", "b", "c"])
    assert error.line in (3, 4, 5, 6)


# -- values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["61 * * * *", "0 6 * *", "0 24 * * *", "0 6 * * FOO",
                                      "*/0 * * * *", "not a cron"])
def test_bad_cron_expression(pipelines: Path, schedule: str) -> None:
    write(pipelines, "d.yaml", f"""
        dag_id: d
        schedule: "{schedule}"
        tasks:
          x: {{command: echo}}
        """)
    error = only_error(load(pipelines))
    assert error.line == 2
    assert f"bad cron expression {schedule!r}" in error.message
    assert "five fields" in error.message


def test_unknown_schedule_preset(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        schedule: "@dayly"
        tasks:
          x: {command: echo}
        """)
    error = only_error(load(pipelines))
    assert error.line == 2
    assert "unknown schedule preset '@dayly'" in error.message
    assert "@daily" in error.message


@pytest.mark.parametrize("value", ["5 minutes", "-5m", "abc", "5x", "nan"])
def test_bad_duration(pipelines: Path, value: str) -> None:
    write(pipelines, "d.yaml", f"""
        dag_id: d
        tasks:
          x:
            command: echo
            retry_delay: "{value}"
        """)
    error = only_error(load(pipelines))
    assert error.line == 5
    assert "task 'x': retry_delay:" in error.message
    assert repr(value) in error.message
    assert "90s, 5m" in error.message or "0 or more" in error.message


def test_bad_dagrun_timeout(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        dagrun_timeout: forever
        tasks:
          x: {command: echo}
        """)
    error = only_error(load(pipelines))
    assert error.line == 2
    assert "dagrun_timeout: 'forever' is not a duration" in error.message


def test_unknown_timezone(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        timezone: Mars/Olympus
        tasks:
          x: {command: echo}
        """)
    error = only_error(load(pipelines))
    assert error.line == 2
    assert "unknown timezone 'Mars/Olympus'" in error.message
    assert "IANA" in error.message


def test_unknown_timezone_in_python(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash

        with DAG("p", timezone="Nowhere/City"):
            Bash("a", "echo")
        """)
    error = only_error(load(pipelines))
    assert error.line == 3
    assert "unknown timezone 'Nowhere/City'" in error.message


def test_bad_cron_in_python_names_the_dag_line(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash

        with DAG("p", schedule="61 * * * *"):
            Bash("a", "echo")
        """)
    error = only_error(load(pipelines))
    assert "bad cron expression '61 * * * *'" in error.message
    assert error.line == 3


def test_unknown_trigger_rule(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        tasks:
          x:
            command: echo
            trigger_rule: all_sucess
        """)
    error = only_error(load(pipelines))
    assert error.line == 5
    assert "unknown trigger rule 'all_sucess'" in error.message
    assert "all_success" in error.message


@pytest.mark.parametrize("word, meaning", [("true", "true"), ("false", "false")])
def test_unquoted_boolean_command_says_to_quote_it(pipelines: Path, word: str,
                                                   meaning: str) -> None:
    write(pipelines, "d.yaml", f"""
        dag_id: d
        tasks:
          x:
            command: {word}
        """)
    error = only_error(load(pipelines))
    assert error.line == 4
    assert f"boolean {meaning}" in error.message
    assert "quote it" in error.message
    assert f'command: "{word}"' in error.message


def test_unquoted_yes_command_suggests_quoting_what_was_written(pipelines: Path) -> None:
    # YAML 1.1 reads `yes` as true; the fix is `command: "yes"`, not `command: "true"`, which
    # would silently run a different program.
    write(pipelines, "d.yaml", """
        dag_id: d
        tasks:
          x:
            command: yes
        """)
    error = only_error(load(pipelines))
    assert error.line == 4
    assert "quote it" in error.message
    assert 'command: "true"' not in error.message


def test_python_import_exception_has_traceback_and_raise_line(pipelines: Path) -> None:
    path = write(pipelines, "p.py", """
        from flowtui import DAG, Bash

        def helper():
            raise RuntimeError("warehouse unreachable")

        with DAG("p"):
            Bash("a", "echo")
        helper()
        """)
    result = load(pipelines)
    error = only_error(result)
    assert error.fileloc == str(path)
    assert error.line == 4  # the raise
    assert "exception while importing the file" in error.message
    assert "RuntimeError: warehouse unreachable" in error.message
    assert "Traceback (most recent call last)" in error.message
    assert f'File "{path}", line 4, in helper' in error.message
    assert f'File "{path}", line 8, in <module>' in error.message
    assert result.dags == {}


def test_python_sys_exit_at_import_is_reported_not_fatal(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        import sys
        from flowtui import DAG
        sys.exit(3)
        """)
    write(pipelines, "q.yaml", "tasks: {x: echo}\n")
    result = load(pipelines)
    error = only_error(result)
    assert error.line == 3
    assert "SystemExit" in error.message
    assert list(result.dags) == ["q"]


def test_python_syntax_error(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash

        with DAG("p")
            Bash("a", "echo")
        """)
    error = only_error(load(pipelines))
    assert error.line == 3
    assert "Python syntax error" in error.message
    assert "fix the syntax" in error.message


def test_python_unknown_task_key(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash
        with DAG("p"):
            a = Bash("a", "echo")
            b = Bash("b", "echo", retires=3)
        """)
    error = only_error(load(pipelines))
    assert error.line == 4
    assert "unknown key 'retires'; did you mean 'retries'?" in error.message


def test_python_unknown_dag_key(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash
        with DAG("p", schedul="@daily"):
            Bash("a", "echo")
        """)
    error = only_error(load(pipelines))
    assert error.line == 2
    assert "did you mean 'schedule'?" in error.message


# -- one bad file never hides the good ones ---------------------------------------------------
def test_bad_files_never_hide_good_ones(pipelines: Path) -> None:
    write(pipelines, "a_bad.yaml", "dag_id: a_bad\ntasks: [\n")
    write(pipelines, "b_good.yaml", "dag_id: b_good\ntasks:\n  x: echo\n")
    write(pipelines, "c_bad.py", """
        from flowtui import DAG, Bash
        with DAG("c_bad"):
            Bash("a", "echo")
            raise ValueError("half built")
        """)
    write(pipelines, "d_good.py", """
        from flowtui import DAG, Bash
        with DAG("d_good"):
            Bash("a", "echo")
        """)
    write(pipelines, "sub/e_bad.yaml", "dag_id: e_bad\ntimezone: Nowhere\ntasks: {x: echo}\n")
    write(pipelines, "sub/f_good.yml", "tasks: {x: echo}\n")
    result = load(pipelines)
    assert sorted(result.dags) == ["b_good", "d_good", "f_good"]
    assert sorted(Path(e.fileloc).name for e in result.errors) == ["a_bad.yaml", "c_bad.py",
                                                                  "e_bad.yaml"]
    assert list(result.dags["d_good"].tasks) == ["a"]


def test_dag_id_defaults_to_the_file_stem(pipelines: Path) -> None:
    write(pipelines, "nightly_load.yaml", "tasks: {x: echo}\n")
    assert list(load(pipelines).dags) == ["nightly_load"]


# -- defaults and durations -------------------------------------------------------------------
def test_defaults_apply_to_every_task(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        defaults:
          retries: 2
          retry_delay: 5m
          retry_exponential_backoff: true
          max_retry_delay: 30m
          execution_timeout: 1h
          pool: etl
        tasks:
          a: {command: echo}
          b: {command: echo, deps: [a]}
          c: {command: echo, deps: [a], retries: 5}
        """)
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    tasks = result.dags["d"].tasks
    for task_id in ("a", "b", "c"):
        t = tasks[task_id]
        assert t.retry_delay == 300.0
        assert t.retry_exponential_backoff is True
        assert t.max_retry_delay == 1800.0
        assert t.execution_timeout == 3600.0
        assert t.pool == "etl"
    assert tasks["a"].retries == 2 and tasks["b"].retries == 2
    assert tasks["c"].retries == 5  # a task's own value wins


def test_python_defaults_apply_to_every_task(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash, task
        with DAG("p", defaults={"retries": 1, "retry_delay": "10s"}):
            a = Bash("a", "echo")

            @task(retries=3)
            def b(ctx):
                pass
            a >> b
        """)
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    tasks = result.dags["p"].tasks
    assert tasks["a"].retries == 1 and tasks["a"].retry_delay == 10.0
    assert tasks["b"].retries == 3 and tasks["b"].retry_delay == 10.0


@pytest.mark.parametrize("key, raw, seconds", [
    ("retry_delay", '"90s"', 90.0),
    ("retry_delay", "5m", 300.0),
    ("execution_timeout", "1h30m", 5400.0),
    ("execution_timeout", '"2h"', 7200.0),
    ("timeout", "1d", 86400.0),
    ("kill_grace", "0.5", 0.5),
    ("kill_grace", "0.5s", 0.5),
    ("heartbeat_timeout", "30", 30.0),
    ("poke_interval", '"1m 30s"', 90.0),
])
def test_durations_parse(pipelines: Path, key: str, raw: str, seconds: float) -> None:
    write(pipelines, "d.yaml", f"""
        dag_id: d
        dagrun_timeout: 4h
        tasks:
          x:
            command: echo
            {key}: {raw}
        """)
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    assert getattr(result.dags["d"].tasks["x"], key) == seconds
    assert result.dags["d"].dagrun_timeout == 4 * 3600.0


def test_python_durations_parse(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash
        with DAG("p", dagrun_timeout="1h30m"):
            Bash("a", "echo", retry_delay=0.5, execution_timeout="90s")
        """)
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    t = result.dags["p"].tasks["a"]
    assert t.retry_delay == 0.5 and t.execution_timeout == 90.0
    assert result.dags["p"].dagrun_timeout == 5400.0


# -- templating ------------------------------------------------------------------------------
def test_unknown_template_name_is_a_load_error(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        tasks:
          x:
            command: echo {{ nope }}
        """)
    error = only_error(load(pipelines))
    assert error.line == 4
    assert "unknown template name 'nope'" in error.message
    assert "ds" in error.message  # the known names are listed


def test_unknown_param_is_a_load_error(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        params: {source: prod}
        tasks:
          x:
            command: echo {{ params.missing }}
        """)
    error = only_error(load(pipelines))
    assert error.line == 5
    assert "unknown template name 'params.missing'" in error.message
    assert "add 'missing' to the DAG's params" in error.message
    assert "source" in error.message


@pytest.mark.parametrize("where", [
    'env: {Y: "{{ nope }}"}',
    'cwd: "/data/{{ nope }}"',
])
def test_unknown_template_in_env_and_cwd(pipelines: Path, where: str) -> None:
    write(pipelines, "d.yaml", f"""
        dag_id: d
        tasks:
          x: {{command: echo, {where}}}
        """)
    error = only_error(load(pipelines))
    assert error.line == 3
    assert "unknown template name 'nope'" in error.message


def test_unknown_template_in_sensor(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        tasks:
          wait:
            sensor: {file: "/data/{{ dss }}/_SUCCESS"}
        """)
    error = only_error(load(pipelines))
    assert "unknown template name 'dss'" in error.message
    assert error.line in (3, 4)


def test_unknown_template_in_dag_env(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        env: {X: "{{ params.nope }}"}
        tasks:
          x: {command: echo}
        """)
    error = only_error(load(pipelines))
    assert error.line == 2
    assert "unknown template name 'params.nope'" in error.message


def test_malformed_template_is_a_load_error(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        tasks:
          x:
            command: echo {{ ds | upper }}
        """)
    error = only_error(load(pipelines))
    assert error.line == 4
    assert "malformed template" in error.message


def test_unknown_template_in_python_task(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash
        with DAG("p", params={"a": 1}):
            Bash("x", "echo {{ params.a }}")
            Bash("y", "echo {{ params.b }}")
        """)
    error = only_error(load(pipelines))
    assert error.line == 4
    assert "unknown template name 'params.b'" in error.message


def test_known_templates_load(pipelines: Path) -> None:
    write(pipelines, "d.yaml", """
        dag_id: d
        params: {source: prod}
        env: {DAY: "{{ ds }}"}
        tasks:
          x:
            command: >-
              echo {{ ds }} {{ ds_nodash }} {{ ts }} {{ logical_date }}
              {{ data_interval_start }} {{ data_interval_end }} {{ dag_id }} {{ task_id }}
              {{ run_id }} {{ try_number }} {{params.source}}
            env: {SRC: "{{ params.source }}"}
            cwd: "/tmp/{{ ds_nodash }}"
        """)
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]


# -- the Python API ---------------------------------------------------------------------------
def _py_deps(pipelines: Path, body: str) -> dict[str, list[str]]:
    write(pipelines, "p.py", "from flowtui import DAG, Bash, task\n\nwith DAG(\"p\"):\n"
          + "".join(f"    {line}\n" for line in body.strip().splitlines()))
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    return {t.task_id: sorted(t.deps) for t in result.dags["p"].tasks.values()}


def test_python_rshift(pipelines: Path) -> None:
    deps = _py_deps(pipelines, """
a = Bash("a", "echo")
b = Bash("b", "echo")
c = Bash("c", "echo")
a >> b >> c
""")
    assert deps == {"a": [], "b": ["a"], "c": ["b"]}


def test_python_list_rshift_task(pipelines: Path) -> None:
    deps = _py_deps(pipelines, """
a = Bash("a", "echo")
b = Bash("b", "echo")
c = Bash("c", "echo")
[a, b] >> c
""")
    assert deps == {"a": [], "b": [], "c": ["a", "b"]}


def test_python_task_rshift_list(pipelines: Path) -> None:
    deps = _py_deps(pipelines, """
a = Bash("a", "echo")
b = Bash("b", "echo")
c = Bash("c", "echo")
a >> [b, c]
""")
    assert deps == {"a": [], "b": ["a"], "c": ["a"]}


def test_python_lshift(pipelines: Path) -> None:
    deps = _py_deps(pipelines, """
a = Bash("a", "echo")
b = Bash("b", "echo")
a << b
""")
    assert deps == {"a": ["b"], "b": []}


def test_python_lshift_lists(pipelines: Path) -> None:
    deps = _py_deps(pipelines, """
a = Bash("a", "echo")
b = Bash("b", "echo")
c = Bash("c", "echo")
d = Bash("d", "echo")
a << [b, c]
[b, c] << d
""")
    assert deps == {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}


def test_python_task_decorator_and_mixed_deps(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash, task

        with DAG("orders_py", schedule="@daily", start_date="2026-01-01"):
            extract = Bash("extract", "echo {{ ds }}")

            @task(retries=3, execution_timeout="10m")
            def transform(ctx):
                return 1

            @task
            def load(ctx):
                return 2

            extract >> transform >> load
        """)
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    dag = result.dags["orders_py"]
    assert dag.schedule == "@daily"
    assert dag.tasks["transform"].deps == ["extract"]
    assert dag.tasks["load"].deps == ["transform"]
    assert dag.tasks["transform"].retries == 3
    assert dag.tasks["transform"].execution_timeout == 600.0
    assert dag.tasks["transform"].python_callable is not None
    assert dag.tasks["extract"].python_callable is None
    assert dag.tasks["extract"].command == "echo {{ ds }}"


def test_several_dags_in_one_python_file(pipelines: Path) -> None:
    write(pipelines, "p.py", """
        from flowtui import DAG, Bash
        for name in ("one", "two"):
            with DAG(name):
                Bash("a", "echo")
        """)
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    assert sorted(result.dags) == ["one", "two"]


def test_python_helper_script_is_not_executed(pipelines: Path, tmp_path: Path) -> None:
    marker = tmp_path / "helper-ran"
    write(pipelines, "scripts/extract.py", f"""
        # uses flowtui only by name in this comment
        from pathlib import Path
        Path({str(marker)!r}).write_text("executed")
        raise SystemExit("a helper must not be imported")
        """)
    write(pipelines, "top_helper.py", f"""
        import json
        open({str(marker) + "2"!r}, "w").write("executed")
        """)
    write(pipelines, "d.yaml", "tasks: {x: python scripts/extract.py}\n")
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    assert list(result.dags) == ["d"]
    assert not marker.exists()
    assert not Path(str(marker) + "2").exists()
    assert not any(f.endswith(".py") for f in result.files)


# -- priority weights -------------------------------------------------------------------------
def test_priority_downstream_rule_sums_all_downstream(pipelines: Path) -> None:
    write(pipelines, "w.yaml", """
        dag_id: w
        tasks:
          a: {command: echo, priority_weight: 1}
          b: {command: echo, deps: [a], priority_weight: 5}
          c: {command: echo, deps: [b], priority_weight: 10}
          d: {command: echo, deps: [a], priority_weight: 2}
          e: {command: echo, deps: [c, d], priority_weight: 7}
        """)
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    assert result.dags["w"].priority == {"a": 1 + 5 + 10 + 2 + 7, "b": 5 + 10 + 7, "c": 10 + 7,
                                         "d": 2 + 7, "e": 7}


def test_priority_downstream_counts_a_diamond_once(pipelines: Path) -> None:
    write(pipelines, "w.yaml", """
        dag_id: w
        tasks:
          a: echo
          b: {command: echo, deps: a}
          c: {command: echo, deps: [a]}
          d: {command: echo, deps: [b, c]}
        """)
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    assert result.dags["w"].priority == {"a": 4, "b": 2, "c": 2, "d": 1}


def test_priority_upstream_rule(pipelines: Path) -> None:
    write(pipelines, "w.yaml", """
        dag_id: w
        defaults: {weight_rule: upstream}
        tasks:
          a: {command: echo, priority_weight: 3}
          b: {command: echo, deps: [a], priority_weight: 1}
          c: {command: echo, deps: [a], priority_weight: 4}
          d: {command: echo, deps: [b, c], priority_weight: 2}
        """)
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    assert result.dags["w"].priority == {"a": 3, "b": 1 + 3, "c": 4 + 3, "d": 2 + 1 + 4 + 3}


def test_priority_absolute_rule(pipelines: Path) -> None:
    write(pipelines, "w.yaml", """
        dag_id: w
        tasks:
          a: {command: echo, priority_weight: 5, weight_rule: absolute}
          b: {command: echo, deps: [a], priority_weight: 3, weight_rule: absolute}
          c: {command: echo, deps: [b], priority_weight: 9}
        """)
    result = load(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    assert result.dags["w"].priority == {"a": 5, "b": 3, "c": 9}


def test_unknown_weight_rule(pipelines: Path) -> None:
    write(pipelines, "w.yaml", """
        dag_id: w
        tasks:
          a:
            command: echo
            weight_rule: sideways
        """)
    error = only_error(load(pipelines))
    assert error.line == 5
    assert "unknown weight rule 'sideways'" in error.message
