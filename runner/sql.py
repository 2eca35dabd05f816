"""The SQL the engine runs on its hot path, batched per loop turn."""
from __future__ import annotations

SQL_TI_STATE = ("UPDATE task_instances SET state=?, reason=?, end_date=?, next_try_at=?, "
                 "updated_at=? WHERE run_pk=? AND task_id=?")
SQL_TI_START = ("UPDATE task_instances SET state='running', try_number=?, start_date=?, "
                 "end_date=NULL, exit_code=NULL, pid=NULL, reason='', next_try_at=NULL, "
                 "updated_at=? WHERE run_pk=? AND task_id=?")
SQL_TI_END = ("UPDATE task_instances SET state=?, end_date=?, exit_code=?, reason=?, "
               "next_try_at=?, updated_at=? WHERE run_pk=? AND task_id=?")
SQL_TI_REASON = "UPDATE task_instances SET reason=?, updated_at=? WHERE run_pk=? AND task_id=?"
SQL_TI_PID = "UPDATE task_instances SET pid=? WHERE run_pk=? AND task_id=?"
SQL_TRY_INSERT = ("INSERT INTO tries (run_pk, task_id, try_number, state, start_date, log_path, "
                   "exit_path, runner_id) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)")
SQL_TRY_PID = ("UPDATE tries SET pid=?, heartbeat_at=? "
                "WHERE run_pk=? AND task_id=? AND try_number=?")
SQL_TRY_PID_START = ("UPDATE tries SET pid_start=? "
                      "WHERE run_pk=? AND task_id=? AND try_number=?")
SQL_TRY_END = ("UPDATE tries SET state=?, end_date=?, exit_code=?, reason=?, progress=?, "
                "metadata=? WHERE run_pk=? AND task_id=? AND try_number=?")
SQL_TRY_PROGRESS = ("UPDATE tries SET progress=?, metadata=? "
                     "WHERE run_pk=? AND task_id=? AND try_number=?")
SQL_TRY_HEARTBEAT = "UPDATE tries SET heartbeat_at=? WHERE runner_id=? AND end_date IS NULL"
SQL_EVENT = ("INSERT INTO events (at, kind, dag_id, run_id, task_id, try_number, old_state, "
              "new_state, cause, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
SQL_RUN_STATE = "UPDATE dag_runs SET state=?, end_date=?, updated_at=? WHERE id=?"
