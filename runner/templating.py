"""``{{ name }}`` templates: validation at load time, rendering (shell-quoted in commands) at run time."""
from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*\}\}")
_BRACES = re.compile(r"\{\{.*?\}\}")
NAMES = frozenset(
    {"ds", "ds_nodash", "ts", "logical_date", "data_interval_start", "data_interval_end",
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


def render(text: str, context: Mapping[str, Any], *, shell: bool = False) -> str:
    """Substitute every ``{{ name }}``; with ``shell=True`` each value stays literal text."""
    if "{{" not in text:
        return text
    if shell:
        return _render_shell(text, context)
    return TEMPLATE.sub(lambda m: _value(m.group(1), context), text)


def _render_shell(text: str, context: Mapping[str, Any]) -> str:
    """Quote each value for where it stands: unquoted, inside '...' or inside "...".

    Whatever a run's conf holds (quotes, ``;``, ``$(...)``, backticks), the shell sees it
    as one literal piece of text.
    """
    out: list[str] = []
    state = ""  # "" unquoted, "'" in single quotes, '"' in double quotes
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "{" and text.startswith("{{", i):
            match = TEMPLATE.match(text, i)
            if match:
                value = _value(match.group(1), context)
                if state == "'":
                    out.append("'" + shlex.quote(value) + "'")  # close, quoted value, reopen
                elif state == '"':
                    out.append(re.sub(r'([\\$`"])', r"\\\1", value))
                else:
                    out.append(shlex.quote(value))
                i = match.end()
                continue
        if state == "'":
            if ch == "'":
                state = ""
        elif ch == "\\" and i + 1 < n:
            out.append(text[i:i + 2])
            i += 2
            continue
        elif state == '"':
            if ch == '"':
                state = ""
        elif ch in "'\"":
            state = ch
        out.append(ch)
        i += 1
    return "".join(out)
