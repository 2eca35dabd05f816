"""The schema's migration names, importable without the schema itself (a fast start-up check)."""
from __future__ import annotations

MIGRATION_SET = "flowtui"
# Every migration in flowtui.store.schema, in order; a test keeps the two in step.
MIGRATION_NAMES = frozenset({"0001_initial", "0002_runner", "0003_backfills", "0004_alerts",
                             "0005_runner_health", "0006_one_door",
                             "0007_state_checks", "0008_datasets", "0009_run_partition",
                             "0010_host_lease", "0011_log_chunks",
                             "0012_runner_queues", "0013_runner_channels",
                             "0014_removed_runs", "0015_task_offers"})
