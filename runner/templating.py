"""``{{ name }}`` templates: validation at load time, rendering at run time (in shell commands,
as expansions of environment variables that carry the values)."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*\}\}")
_BRACES = re.compile(r"\{\{.*?\}\}")
NAMES = frozenset(
    {"ds", "ds_nodash", "partition", "ts", "logical_date", "data_interval_start", "data_interval_end",
     "dag_id", "task_id", "run_id", "try_number"}
)


class TemplateError(ValueError):
    """A template names something that does not exist."""


def check_template(text: str, params: Mapping[str, Any]) -> None:
    """Raise ``TemplateError`` for an unknown name or a malformed ``{{ }}``."""
    for raw in _BRACES.findall(text):
        match = TEMPLATE.fullmatch(raw)
        if not match:
            raise TemplateError(f"malformed template {raw!r}; write {{{{ name }}}} with one name "
                                f"such as ds or params.source")
        name = match.group(1)
        if name.startswith("params."):
            key = name.split(".", 1)[1]
            if key not in params:
                known = ", ".join(sorted(params)) or "none are defined"
                raise TemplateError(f"unknown template name {name!r}: add {key!r} to the DAG's "
                                    f"params (known params: {known})")
        elif name not in NAMES:
            raise TemplateError(f"unknown template name {name!r}; known names: "
                                f"{', '.join(sorted(NAMES))}, params.NAME")


def _value(name: str, context: Mapping[str, Any]) -> str:
    if name.startswith("params."):
        value = context["params"][name.split(".", 1)[1]]
    else:
        value = context[name]
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        import json
        return json.dumps(value)
    return str(value)


def render(text: str, context: Mapping[str, Any]) -> str:
    """Substitute every ``{{ name }}`` with its value as text (env values, cwd, sensor args)."""
    if "{{" not in text:
        return text
    return TEMPLATE.sub(lambda m: _value(m.group(1), context), text)


def env_name(name: str) -> str:
    """The environment variable that carries template ``name`` into a task's shell."""
    if name.startswith("params."):
        return "FLOWTUI_PARAM_" + name.split(".", 1)[1]
    return "FLOWTUI_T_" + name


def render_shell(text: str, context: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """A shell command with every ``{{ name }}`` replaced by a parameter expansion of an
    environment variable that holds the value, and those variables.

    The value never stands in the script text, so the shell never parses it: whatever a run's
    conf holds (quotes, ``;``, ``$(...)``, backticks, newlines), and wherever the template
    stands, it reaches the command as data. Where it stands only decides the expansion's form,
    so the text reads as the author meant: ``"${V}"`` unquoted (one word), ``${V}`` inside
    double quotes or a heredoc, ``'"${V}"'`` inside single quotes. A wrong guess of the context
    can only change the text a command sees, never run anything.
    """
    if "{{" not in text:
        return text, {}
    out: list[str] = []
    values: dict[str, str] = {}
    last = 0
    for match, where in scan_shell(text):
        name = match.group(1)
        var = env_name(name)
        values[var] = _value(name, context)
        out.append(text[last:match.start()])
        out.append({"'": "'\"${%s}\"'", '"': "${%s}", "heredoc": "${%s}"}.get(
            where, '"${%s}"') % var)
        last = match.end()
    out.append(text[last:])
    return "".join(out), values


def check_shell_template(text: str) -> None:
    """Raise ``TemplateError`` for a template the shell would not expand: inside a heredoc whose
    delimiter is quoted (``<<'EOF'``), where the shell substitutes nothing."""
    for match, where in scan_shell(text):
        if where == "quoted heredoc":
            raise TemplateError(
                f"{match.group(0)} stands in a heredoc with a quoted delimiter (<<'EOF'), where "
                "the shell expands nothing; use an unquoted delimiter (<<EOF)")


_HEREDOC = re.compile(r"<<(-?)[ \t]*(?:'([^'\n]*)'|\"([^\"\n]*)\"|\\?([^\s;&|<>()]+))")
_WORD_BREAK = frozenset(" \t\n;&|()<>")


def scan_shell(text: str) -> list[tuple[re.Match[str], str]]:
    """Each ``{{ name }}`` in a shell command with where it stands: ``""`` (unquoted), ``"'"``,
    ``'"'``, ``"heredoc"``, ``"quoted heredoc"`` or ``"comment"``."""
    found: list[tuple[re.Match[str], str]] = []
    stack: list[str] = [""]  # quoting contexts; "$(" and "`" open a fresh one
    pending: list[tuple[str, bool, bool]] = []  # heredocs opened on this line
    i, n = 0, len(text)
    while i < n:
        state = stack[-1]
        ch = text[i]
        if ch == "{" and text.startswith("{{", i):
            match = TEMPLATE.match(text, i)
            if match:
                found.append((match, state if state in ("'", '"') else ""))
                i = match.end()
                continue
        if state == "'":
            if ch == "'":
                stack.pop()
        elif ch == "\\":
            i += 1
        elif state == '"' and ch == '"':
            stack.pop()
        elif ch == "$" and text.startswith("$(", i) and not text.startswith("$((", i):
            stack.append("$(")
            i += 1
        elif ch == "`":
            if state == "`":
                stack.pop()
            else:
                stack.append("`")
        elif state == '"':
            pass
        elif ch == ")" and state == "$(":
            stack.pop()
        elif ch in "'\"":
            stack.append(ch)
        elif ch == "#" and (i == 0 or text[i - 1] in _WORD_BREAK):
            end = text.find("\n", i)
            end = n if end < 0 else end
            found.extend((m, "comment") for m in TEMPLATE.finditer(text, i, end))
            i = end
            continue
        elif ch == "<" and text.startswith("<<", i) and not text.startswith("<<<", i):
            heredoc = _HEREDOC.match(text, i)
            if heredoc:
                strip, single, double, bare = heredoc.groups()
                delimiter = single if single is not None else double if double is not None \
                    else bare
                quoted = bare is None or "\\" in heredoc.group(0)
                pending.append((delimiter, quoted, bool(strip)))
                i = heredoc.end()
                continue
        elif ch == "\n" and pending:
            i = _heredoc_bodies(text, i + 1, pending, found)
            pending = []
            continue
        i += 1
    found.sort(key=lambda item: item[0].start())
    return found


def _heredoc_bodies(text: str, i: int, pending: list[tuple[str, bool, bool]],
                    found: list[tuple[re.Match[str], str]]) -> int:
    """Skip the bodies of the heredocs opened on the line that just ended; note templates."""
    for delimiter, quoted, strip in pending:
        while i < len(text):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            line, start = text[i:end], i
            i = end + 1
            if (line.lstrip("\t") if strip else line) == delimiter:
                break
            found.extend((m, "quoted heredoc" if quoted else "heredoc")
                         for m in TEMPLATE.finditer(text, start, end))
    return i
