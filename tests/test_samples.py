"""The bundled sample pipelines load and the main job runs end to end through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import flowtui
from helpers import run_dag, tries

from flowtui.runner.clock import ManualClock

SAMPLES = Path(__file__).resolve().parent.parent / "sample_pipelines"


def test_sample_pipelines_check_clean(home: Path) -> None:
    result = flowtui("dags", "check", "--json", home=home, pipelines=SAMPLES)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["errors"] == []
    assert {"daily_etl_pipeline", "dw_refresh", "daily_sales_report", "model_a",
            "flaky_extract", "orders_py"} <= set(document["dags"])


def test_daily_etl_runs_and_reports_every_task(home: Path) -> None:
    result = flowtui("run", "daily_etl_pipeline", home=home, pipelines=SAMPLES)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = flowtui("tasks", "list", "daily_etl_pipeline", "latest", "--json", home=home,
                     pipelines=SAMPLES)
    assert listed.returncode == 0
    tasks = json.loads(listed.stdout)
    assert {t["task_id"] for t in tasks} == {"extract_orders", "extract_customers",
                                            "transform_orders", "build_mart", "quality_checks"}
    for t in tasks:
        assert t["state"] == "success" and t["try_number"] == 1 and t["exit_code"] == 0
        assert t["duration"] > 0 and t["max_tries"] == 3
        assert set(t) == {"dag_id", "run_id", "task_id", "state", "try_number", "max_tries",
                          "start_date", "end_date", "duration", "exit_code", "pid", "reason",
                          "error"}
        assert t["start_date"].endswith("+00:00")
    runs = json.loads(flowtui("runs", "list", "--json", home=home, pipelines=SAMPLES).stdout)
    assert runs[0]["state"] == "success" and runs[0]["run_type"] == "manual"
    assert set(runs[0]) == {"dag_id", "run_id", "run_type", "logical_date",
                            "data_interval_start", "data_interval_end", "state", "start_date",
                            "end_date"}


def test_flaky_extract_succeeds_on_its_third_try(home: Path) -> None:
    # Its retries wait 1 s, then 2 s (backoff): a clock that jumps over waits with nothing
    # running takes them at once, while each try still runs for real.
    store, run, tis = run_dag(home, SAMPLES, "flaky_extract", clock=ManualClock(autojump=True))
    assert run.state == "success"
    assert tis["extract"].state == "success" and tis["extract"].try_number == 3
    first, second, third = tries(store, run, "extract")
    assert second.start_date - first.end_date >= 1 and third.start_date - second.end_date >= 2
    store.close()
    first = flowtui("logs", "flaky_extract", "latest", "extract", "--try", "1", home=home)
    assert "503 Service Unavailable" in first.stdout


def test_warehouse_refresh_notifies_failure_when_an_extract_fails(home: Path, tmp_path: Path) -> None:
    pipes = tmp_path / "p"
    pipes.mkdir()
    text = (SAMPLES / "dw_refresh.yaml").read_text()
    text = text.replace('echo "GET /products?date={{ ds }}" && sleep 0.5', "exit 1")
    text = text.replace("retries: 3\n    retry_delay: 60s", "retries: 0\n    retry_delay: 60s")
    (pipes / "dw_refresh.yaml").write_text(text)
    result = flowtui("run", "dw_refresh", "--json", home=home, pipelines=pipes)
    assert result.returncode == 1
    states = {t["task_id"]: t["state"] for t in json.loads(result.stdout)["tasks"]}
    assert states["extract_api"] == "failed"
    assert states["notify_failure"] == "success"
    assert states["spark_transform"] == "upstream_failed"
    assert states["notify_success"] == "upstream_failed"
    assert states["extract_postgres"] == "success"
