"""A run's conf reaches a task's shell as data, never as code; a task never sees a secret."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import flowtui, write

from flowtui.runner.templating import TemplateError, check_shell_template, render_shell

HOSTILE = ["; touch {m}", "$(touch {m})", "`touch {m}`", "'; touch {m}; '", '"; touch {m}; "',
           "\ntouch {m}\n", "x\nEOF\ntouch {m}\ncat <<EOF", "$(touch {m})'\"`touch {m}`",
           "\\\"; touch {m} #", "${{IFS}}$(touch${{IFS}}{m})"]


SHAPES = [
    'echo "$(echo {{ params.X }})"',
    "cat <<EOF\nvalue: {{ params.X }}\nEOF",
    "# don't forget\necho {{ params.X }}",
    "echo '{{ params.X }}' \"{{ params.X }}\" {{ params.X }}",
    "echo `echo {{ params.X }}`",
]


def test_a_runs_conf_cannot_inject_shell_syntax(home: Path, pipelines: Path,
                                                tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    names = [f"x{i}" for i in range(len(HOSTILE))]
    lines = ["dag_id: inject", f"params: {json.dumps(dict.fromkeys(names, 'safe'))}", "tasks:"]
    for number, shape in enumerate(SHAPES):
        command = "\n".join(shape.replace("params.X", f"params.{name}") for name in names)
        lines.append(f"  shape{number}: {{command: {json.dumps(command)}}}")
    write(pipelines, "inject.yaml", "\n".join(lines) + "\n")
    conf = {name: value.format(m=marker) for name, value in zip(names, HOSTILE)}
    result = flowtui("run", "inject", "--conf", json.dumps(conf), home=home, pipelines=pipelines)
    assert not marker.exists()
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_keep_their_text_wherever_the_template_stands(home: Path, pipelines: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    value = "it's \"$(date)\" `x` ; $HOME"
    write(pipelines, "text.yaml", f"""
        dag_id: text
        params: {{x: safe}}
        tasks:
          t:
            command: |
              printf '%s\\n' {{{{ params.x }}}} "[{{{{ params.x }}}}]" '<{{{{ params.x }}}}>' > {out}
              cat >> {out} <<EOF
              heredoc {{{{ params.x }}}}
              EOF
    """)
    result = flowtui("run", "text", "--conf", json.dumps({"x": value}), home=home,
                     pipelines=pipelines)
    assert result.returncode == 0, result.stderr
    assert out.read_text().splitlines() == [value, f"[{value}]", f"<{value}>", f"heredoc {value}"]


def test_a_template_in_a_quoted_heredoc_is_refused() -> None:
    with pytest.raises(TemplateError, match="quoted delimiter"):
        check_shell_template("cat <<'EOF'\n{{ ds }}\nEOF")
    check_shell_template("cat <<EOF\n{{ ds }}\nEOF")  # unquoted: expanded, fine


# -- fuzz ------------------------------------------------------------------------------------
_PIECES = ["echo ", "printf '%s' ", "'", '"', "$(", ")", "`", "(", ")", "# a'b\n", "\n", ";",
           " ", "x", "\\", "{", "}", "$", "cat <<EOF\n", "\nEOF\n", "cat <<-'Q'\n", "\nQ\n",
           "{{ params.x }}", "{{ params.x }}", "{{ ds }}", "&&", "|", "${A:-", "}", "'\"'\"'"]
_VALUE_PIECES = ["touch MARK", "; ", "$(", ")", "`", "'", '"', "\n", "\\", "EOF", "Q", "$",
                 "{", "}", "#", " ", "&", "|", "<", ">", "${IFS}", "x"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.sampled_from(_PIECES), min_size=1, max_size=14),
       value=st.lists(st.sampled_from(_VALUE_PIECES), min_size=1, max_size=10))
def test_fuzz_no_conf_value_ever_runs(tmp_path: Path, shape: list[str], value: list[str]) -> None:
    marker = tmp_path / "marker"
    command = "".join(shape) + "\n{{ params.x }}"
    raw = "".join(value).replace("MARK", str(marker))
    script, env_values = render_shell(command, {"ds": "2026-01-01", "params": {"x": raw}})
    # The script's text does not depend on the value at all: the shell never parses it.
    assert script == render_shell(command, {"ds": "", "params": {"x": ""}})[0]
    env = {"PATH": os.environ["PATH"], **env_values}
    subprocess.run(["/bin/sh", "-c", script], env=env, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    assert not marker.exists(), (command, raw)


# -- secrets ---------------------------------------------------------------------------------
def test_a_task_never_sees_a_secret_named_in_flowtui_toml(home: Path, pipelines: Path) -> None:
    (home / "flowtui.toml").write_text(
        '[channels.hook]\ntype = "webhook"\nurl = "env:HOOK_SECRET_URL"\n'
        '[channels.pager]\ntype = "pagerduty"\nrouting_key = "env:PD_SECRET_KEY"\n'
        '[policies.p]\non = ["task_failed"]\nsteps = [{after = "0m", notify = ["hook"]}]\n')
    write(pipelines, "envdump.yaml", """
        dag_id: envdump
        tasks:
          t: {command: env}
    """)
    result = flowtui("run", "envdump", home=home, pipelines=pipelines,
                     env={"HOOK_SECRET_URL": "http://127.0.0.1:9/s3cr3t-url",
                          "PD_SECRET_KEY": "s3cr3t-key", "ORDINARY_SETTING": "kept"})
    assert result.returncode == 0, result.stderr
    logs = flowtui("logs", "envdump", "latest", "t", home=home, pipelines=pipelines).stdout
    assert "ORDINARY_SETTING=kept" in logs
    assert "s3cr3t" not in logs


def test_dags_check_names_a_template_the_shell_would_not_expand(pipelines: Path, home: Path) -> None:
    write(pipelines, "quoted.yaml", """
        dag_id: quoted
        tasks:
          t:
            command: |
              cat <<'EOF'
              {{ ds }}
              EOF
    """)
    result = flowtui("dags", "check", home=home, pipelines=pipelines)
    assert result.returncode == 1
    assert "quoted.yaml:" in result.stdout + result.stderr
    assert "quoted delimiter" in result.stdout + result.stderr
