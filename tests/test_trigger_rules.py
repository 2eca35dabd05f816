"""Trigger rules: the decision table, and real runs whose upstreams end in mixed states."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write
from helpers import run_dag

from flowtui.runner.trigger_rules import RUN, SKIPPED, UPSTREAM_FAILED, WAIT, Counts, evaluate

S, F, K, UF = "success", "failed", "skipped", "upstream_failed"


def counts(*states: str, pending: int = 0) -> Counts:
    c = Counts(upstream=len(states) + pending)
    for state in states:
        setattr(c, state, getattr(c, state) + 1)
    return c


# (rule, final upstream states, Airflow's decision once all of them are done)
TABLE = [
    ("all_success", (S, S), RUN), ("all_success", (S, F), UPSTREAM_FAILED),
    ("all_success", (S, K), SKIPPED), ("all_success", (F, K), UPSTREAM_FAILED),
    ("all_success", (S, UF), UPSTREAM_FAILED),
    ("all_failed", (F, F), RUN), ("all_failed", (F, UF), RUN), ("all_failed", (F, S), SKIPPED),
    ("all_failed", (F, K), SKIPPED),
    ("all_done", (S, F, K, UF), RUN),
    ("all_skipped", (K, K), RUN), ("all_skipped", (K, S), SKIPPED),
    ("all_skipped", (K, F), SKIPPED), ("all_skipped", (K, UF), SKIPPED),
    ("one_success", (F, S), RUN), ("one_success", (F, UF), UPSTREAM_FAILED),
    ("one_success", (K, K), SKIPPED), ("one_success", (F, K), UPSTREAM_FAILED),
    ("one_failed", (S, F), RUN), ("one_failed", (S, UF), RUN), ("one_failed", (S, K), SKIPPED),
    ("one_done", (K, F), RUN), ("one_done", (K, S), RUN), ("one_done", (K, UF), SKIPPED),
    ("none_failed", (S, K), RUN), ("none_failed", (K, K), RUN),
    ("none_failed", (S, F), UPSTREAM_FAILED), ("none_failed", (S, UF), UPSTREAM_FAILED),
    ("none_failed_min_one_success", (S, K), RUN),
    ("none_failed_min_one_success", (K, K), SKIPPED),
    ("none_failed_min_one_success", (S, F), UPSTREAM_FAILED),
    ("none_skipped", (S, F), RUN), ("none_skipped", (S, UF), RUN),
    ("none_skipped", (S, K), SKIPPED),
    ("all_done_min_one_success", (S, F), RUN), ("all_done_min_one_success", (S, UF), RUN),
    ("all_done_min_one_success", (F, UF), UPSTREAM_FAILED),
    ("all_done_min_one_success", (S, K), SKIPPED),
    ("always", (F, UF), RUN),
]


@pytest.mark.parametrize(("rule", "states", "expected"), TABLE)
def test_decision_once_upstreams_are_done(rule: str, states: tuple[str, ...], expected: str) -> None:
    assert evaluate(rule, counts(*states)) == expected


@pytest.mark.parametrize(("rule", "states", "expected"), [
    ("all_success", (S,), WAIT), ("all_success", (F,), UPSTREAM_FAILED),  # fails fast
    ("one_success", (S,), RUN), ("one_success", (F,), WAIT),
    ("one_failed", (F,), RUN), ("one_failed", (S,), WAIT),
    ("all_failed", (S,), SKIPPED), ("none_failed", (F,), UPSTREAM_FAILED),
    ("none_skipped", (S,), WAIT), ("none_skipped", (K,), SKIPPED),
    ("all_done", (S, F), WAIT), ("always", (), RUN),
])
def test_decision_while_upstreams_still_run(rule: str, states: tuple[str, ...], expected: str) -> None:
    assert evaluate(rule, counts(*states, pending=1)) == expected


# Real runs: ok exits 0, bad exits 1, skip exits 99 (skipped), uf depends on bad (upstream_failed).
REAL = [
    ("all_success", ["ok", "bad"], "upstream_failed"), ("all_success", ["ok", "skip"], "skipped"),
    ("all_failed", ["bad", "uf"], "success"), ("all_failed", ["bad", "ok"], "skipped"),
    ("all_done", ["ok", "bad", "skip", "uf"], "success"),
    ("all_skipped", ["skip"], "success"), ("all_skipped", ["skip", "ok"], "skipped"),
    ("one_success", ["bad", "ok"], "success"), ("one_success", ["bad", "uf"], "upstream_failed"),
    ("one_success", ["skip"], "skipped"),
    ("one_failed", ["ok", "bad"], "success"), ("one_failed", ["ok", "skip"], "skipped"),
    ("one_done", ["skip", "bad"], "success"), ("one_done", ["skip", "uf"], "skipped"),
    ("none_failed", ["ok", "skip"], "success"), ("none_failed", ["ok", "bad"], "upstream_failed"),
    ("none_failed_min_one_success", ["ok", "skip"], "success"),
    ("none_failed_min_one_success", ["skip"], "skipped"),
    ("none_failed_min_one_success", ["ok", "uf"], "upstream_failed"),
    ("none_skipped", ["ok", "bad"], "success"), ("none_skipped", ["ok", "skip"], "skipped"),
    ("all_done_min_one_success", ["ok", "bad"], "success"),
    ("all_done_min_one_success", ["bad", "uf"], "upstream_failed"),
    ("all_done_min_one_success", ["ok", "skip"], "skipped"),
    ("always", ["bad"], "success"),
]


def test_every_rule_in_a_real_run(home: Path, pipelines: Path) -> None:
    lines = ["dag_id: rules", "tasks:", "  ok: {command: 'true'}", "  bad: {command: 'exit 1'}",
             "  skip: {command: 'exit 99'}", "  uf: {command: 'true', deps: [bad]}"]
    for i, (rule, deps, _) in enumerate(REAL):
        lines.append(f"  t{i}_{rule}: {{command: 'true', trigger_rule: {rule}, "
                     f"deps: [{', '.join(deps)}]}}")
    write(pipelines, "rules.yaml", "\n".join(lines) + "\n")
    _, run, tis = run_dag(home, pipelines, "rules")
    assert (tis["ok"].state, tis["bad"].state, tis["skip"].state, tis["uf"].state) == (
        "success", "failed", "skipped", "upstream_failed")
    got = {f"t{i}_{rule}": tis[f"t{i}_{rule}"].state for i, (rule, _, _) in enumerate(REAL)}
    want = {f"t{i}_{rule}": expected for i, (rule, _, expected) in enumerate(REAL)}
    assert got == want
    # Tasks that never ran carry the reason, with the upstream counts.
    assert "can no longer be met" in tis["t0_all_success"].reason
    assert tis["t0_all_success"].try_number == 0
    assert run.state == "failed"  # leaves include upstream_failed ones


def test_always_starts_without_waiting(home: Path, pipelines: Path) -> None:
    write(pipelines, "a.yaml", """
        dag_id: a
        tasks:
          slow: {command: "sleep 0.5"}
          eager: {command: "true", deps: [slow], trigger_rule: always}
    """)
    store, run, tis = run_dag(home, pipelines, "a")
    assert tis["eager"].end_date < tis["slow"].end_date
