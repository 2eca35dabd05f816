"""Property test: random DAGs with random outcomes obey ordering, termination and run state."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowtui.runner.config import load_config
from flowtui.runner.loader import load_folder
from flowtui.runner.model import TRIGGER_RULES
from flowtui.runner.runs import run_in_foreground
from flowtui.store import Store

WAITS_FOR_ALL = {"all_success", "all_failed", "all_done", "all_skipped", "none_failed",
                 "none_failed_min_one_success", "none_skipped", "all_done_min_one_success"}
OUTCOMES = {"ok": "true", "fail": "exit 1", "skip": "exit 99"}


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[str, str, list[int]]]:
    n = draw(st.integers(min_value=1, max_value=7))
    tasks = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3))) if i else []
        tasks.append((draw(st.sampled_from(sorted(OUTCOMES))), draw(st.sampled_from(TRIGGER_RULES)),
                      deps))
    return tasks


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(dags())
def test_random_dags(tmp_path: Path, spec: list[tuple[str, str, list[int]]]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="example-", dir=tmp_path))  # one folder per example
    try:
        pipelines = tmp / "p"
        pipelines.mkdir()
        lines = ["dag_id: prop", "tasks:"]
        for i, (outcome, rule, deps) in enumerate(spec):
            dep_list = ", ".join(f"t{d}" for d in deps)
            lines.append(f"  t{i}: {{command: '{OUTCOMES[outcome]}', trigger_rule: {rule}, "
                         f"deps: [{dep_list}]}}")
        (pipelines / "prop.yaml").write_text("\n".join(lines) + "\n")
        dag = load_folder(pipelines).dags["prop"]
        config = load_config(tmp / "home", pipelines)
        store = Store.open(config.db_path)
        run = run_in_foreground(store, config, dag, logical_date=None, conf={},
                                handle_signals=False)
        tis = {t.task_id: t for t in store.task_instances(run.pk)}
        terminal = {"success", "failed", "skipped", "upstream_failed"}
        assert all(t.state in terminal for t in tis.values()), {k: t.state for k, t in tis.items()}
        for i, (outcome, rule, deps) in enumerate(spec):
            ti = tis[f"t{i}"]
            if ti.try_number == 0 or not deps:
                continue  # never started, or nothing to wait for
            ups = [tis[f"t{d}"] for d in deps]
            ended = [u.end_date for u in ups if u.end_date is not None]
            if rule in WAITS_FOR_ALL:
                assert all(u.end_date is not None and u.end_date <= ti.start_date for u in ups)
            elif rule != "always":
                assert ended and min(ended) <= ti.start_date
            if ti.state in ("success", "failed", "skipped") and ti.try_number:
                expected = {"ok": "success", "fail": "failed", "skip": "skipped"}[outcome]
                assert ti.state == expected
        leaves = [f"t{i}" for i in range(len(spec))
                  if not any(i in deps for _, _, deps in spec)]
        leaf_failed = any(tis[t].state in ("failed", "upstream_failed") for t in leaves)
        assert run.state == ("failed" if leaf_failed else "success")
        events = store.events(dag_id="prop", run_id=run.run_id)
        assert events[-1].kind == "run" and events[-1].new_state == run.state
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
