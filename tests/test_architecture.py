"""The house's walls, read from the source: SQL only in store/, no Textual below the app, no
import cycles, states written by one module, time from the clock."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Top-level folder -> installed package, as pyproject.toml maps them.
PACKAGES: dict[str, str] = {
    folder: package for package, folder in
    tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    .items()}
SQL_START = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|PRAGMA|BEGIN|WITH)\b")
STATE_UPDATE = re.compile(r"\bUPDATE\s+(task_instances|dag_runs|tries)\s+SET\b(.*?)(\bWHERE\b|$)",
                          re.I | re.S)
STATE_INSERT = re.compile(r"\bINSERT\s+(OR\s+\w+\s+)?INTO\s+(task_instances|dag_runs|tries)\b",
                          re.I)
# The one module that writes states, and the migrations that create the tables.
STATE_WRITERS = {"store/changes.py", "store/schema.py"}
# The clock itself, and the default clock of Store.
CLOCK_MODULES = {"runner/clock.py", "store/db.py"}


def product_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders or tuple(PACKAGES)
                  for path in (ROOT / folder).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [PACKAGES[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def strings(path: Path) -> Iterator[tuple[int, str]]:
    """Every string literal with its line; an f-string as its text with ``{}`` for each value."""
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.JoinedStr):
            text = "".join(part.value if isinstance(part, ast.Constant) else "{}"
                           for part in node.values)
            yield node.lineno, text
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def writes_state(text: str) -> bool:
    update = STATE_UPDATE.search(text)
    if update and re.search(r"\bstate\s*=", update.group(2)):
        return True
    return STATE_INSERT.search(text) is not None


# -- (a) SQL lives in store/ ---------------------------------------------------------------
def test_no_sql_outside_the_store() -> None:
    found = sorted({f"{rel(path)}:{line}: {text.strip()[:60]!r}"
                    for path in product_files(*(f for f in PACKAGES if f != "store"))
                    for line, text in strings(path) if SQL_START.match(text)})
    assert not found, "SQL outside store/ (move it into a named store method):\n" + \
        "\n".join(found)


def test_the_sql_check_knows_sql_from_prose() -> None:
    assert SQL_START.match("\n  SELECT id FROM dag_runs")
    assert SQL_START.match("WITH RECURSIVE up(x) AS (SELECT 1) SELECT x FROM up")
    assert not SQL_START.match("Selected tasks") and not SQL_START.match("With a clock")


# -- (b) runner/ and store/ never import Textual --------------------------------------------
def test_no_module_of_runner_or_store_imports_textual() -> None:
    modules = [module_name(p) for p in product_files("runner", "store")]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        print(f'{name}: cannot be imported: {exc!r}')\n"
        "    if any(m == 'textual' or m.startswith('textual.') for m in sys.modules):\n"
        "        print(f'{name}: textual is imported after it')\n"
        "        break\n")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "", out.stdout


# -- (c) no import cycles --------------------------------------------------------------------
def _type_checking_only(module: ast.Module) -> set[int]:
    """The ids of imports under ``if TYPE_CHECKING:`` (never run, so no cycle)."""
    ids: set[int] = set()
    for node in ast.walk(module):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return ids


def import_graph() -> dict[str, set[str]]:
    """Each flowtui module and the flowtui modules it imports, at module or function level."""
    paths = {module_name(p): p for p in product_files()}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        module = tree(path)
        skip = _type_checking_only(module)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(module):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # ``from pkg import mod`` imports the module pkg.mod when there is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base
                           for a in node.names]
            graph[name].update(t for t in targets if t in paths and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return [_path_through(graph, set(group), group[0]) for group in groups]


def _path_through(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """A shortest cycle from ``start`` back to itself inside ``group`` (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    return [start]


def test_the_cycle_finder_reports_a_cycle_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (imports point cli -> app -> runner -> store):\n" + \
        "\n".join(" -> ".join(cycle) + _more_of(graph, cycle) for cycle in found)


def _more_of(graph: dict[str, set[str]], cycle: list[str]) -> str:
    """The other modules caught in the same knot as ``cycle``, if any."""
    def reach(start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    knot = {m for m in reach(cycle[0]) if cycle[0] in reach(m)} - set(cycle)
    return f" (in one knot with {', '.join(sorted(knot))})" if knot else ""


def test_the_import_graph_sees_module_and_function_level_imports() -> None:
    graph = import_graph()
    assert "flowtui.runner.config" in graph["flowtui.cli"]  # imported inside main()
    assert "flowtui.usage" in graph["flowtui.cli"]  # imported at module level
    assert all(not name.startswith("flowtui.app") for name in graph["flowtui.runner.engine"])


# -- (d) states are written only by store/changes.py -----------------------------------------
def test_states_are_written_only_by_the_transition_functions() -> None:
    found = sorted({f"{rel(path)}:{line}: {' '.join(text.split())[:70]!r}"
                    for path in product_files() if rel(path) not in STATE_WRITERS
                    for line, text in strings(path) if writes_state(text)})
    assert not found, ("a state written outside store/changes.py (use move_task/move_run or "
                       "its run creation):\n" + "\n".join(found))


def test_the_state_write_check_tells_a_state_from_other_columns() -> None:
    assert writes_state("UPDATE task_instances SET state = ?, reason = ? WHERE id = ?")
    assert writes_state("UPDATE dag_runs SET end_date = ?, state = 'failed' WHERE id = ?")
    assert writes_state("INSERT INTO tries (run_pk, task_id) VALUES (?, ?)")
    assert not writes_state("UPDATE task_instances SET reason = ? WHERE state = 'queued'")
    assert not writes_state("UPDATE dags SET paused = ? WHERE dag_id = ?")


# -- (e) time comes from the clock -----------------------------------------------------------
def test_time_comes_from_the_clock() -> None:
    found = []
    for path in product_files():
        if rel(path) in CLOCK_MODULES:
            continue
        for node in ast.walk(tree(path)):
            if (isinstance(node, ast.Attribute) and node.attr == "time"
                    and isinstance(node.value, ast.Name) and node.value.id == "time"):
                found.append(f"{rel(path)}:{node.lineno}: time.time")
            elif isinstance(node, ast.ImportFrom) and node.module == "time" and any(
                    alias.name == "time" for alias in node.names):
                found.append(f"{rel(path)}:{node.lineno}: from time import time")
    assert not found, ("wall time read outside runner/clock.py (take a clock, a now: float or "
                       "store.now()):\n" + "\n".join(found))
