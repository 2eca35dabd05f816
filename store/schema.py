"""The database schema, applied as forward migrations (``flowtui.store.migrations``)."""
from __future__ import annotations

from sqlite3 import Connection

from flowtui.store.migrations import Migrations

from flowtui.store.version import MIGRATION_SET

migrations = Migrations(MIGRATION_SET)

# Times are stored as REAL seconds since the epoch (UTC): cheap to write on the hot path,
# exact to sort and compare; the CLI and TUI render them as ISO 8601 with offset.


@migrations(name="0001_initial")
def _initial(db: Connection) -> None:
    _run_statements(db, """
        CREATE TABLE dags (
            dag_id TEXT PRIMARY KEY,
            fileloc TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            schedule TEXT,
            timezone TEXT NOT NULL DEFAULT 'UTC',
            owner TEXT NOT NULL DEFAULT '',
            tags TEXT NOT NULL DEFAULT '[]',
            paused INTEGER NOT NULL DEFAULT 0,
            paused_reason TEXT,
            is_active INTEGER NOT NULL DEFAULT 1,
            task_count INTEGER NOT NULL DEFAULT 0,
            last_parsed_at REAL NOT NULL,
            updated_at REAL NOT NULL
        ) STRICT;

        CREATE TABLE import_errors (
            id INTEGER PRIMARY KEY,
            fileloc TEXT NOT NULL,
            line INTEGER,
            message TEXT NOT NULL,
            created_at REAL NOT NULL
        ) STRICT;
        CREATE INDEX import_errors_file ON import_errors(fileloc);

        CREATE TABLE runners (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,             -- daemon | run | backfill
            hostname TEXT NOT NULL,
            pid INTEGER NOT NULL,
            pid_start REAL,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL,
            stopped_at REAL
        ) STRICT;

        CREATE TABLE dag_runs (
            id INTEGER PRIMARY KEY,
            dag_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            run_type TEXT NOT NULL,          -- scheduled | manual | backfill
            logical_date REAL NOT NULL,
            data_interval_start REAL NOT NULL,
            data_interval_end REAL NOT NULL,
            conf TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL,
            start_date REAL,
            end_date REAL,
            runner_id INTEGER REFERENCES runners(id),
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (dag_id, run_id)
        ) STRICT;
        CREATE INDEX dag_runs_dag_date ON dag_runs(dag_id, logical_date);
        CREATE INDEX dag_runs_state ON dag_runs(state);
        CREATE INDEX dag_runs_updated ON dag_runs(updated_at);

        CREATE TABLE task_instances (
            run_pk INTEGER NOT NULL REFERENCES dag_runs(id) ON DELETE CASCADE,
            dag_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            state TEXT NOT NULL,
            try_number INTEGER NOT NULL DEFAULT 0,
            max_tries INTEGER NOT NULL DEFAULT 1,
            pool TEXT NOT NULL DEFAULT 'default',
            pool_slots INTEGER NOT NULL DEFAULT 1,
            priority INTEGER NOT NULL DEFAULT 1,
            start_date REAL,
            end_date REAL,
            exit_code INTEGER,
            pid INTEGER,
            reason TEXT NOT NULL DEFAULT '',
            next_try_at REAL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (run_pk, task_id)
        ) STRICT;
        CREATE INDEX task_instances_state ON task_instances(state);
        CREATE INDEX task_instances_updated ON task_instances(updated_at);

        CREATE TABLE tries (
            id INTEGER PRIMARY KEY,
            run_pk INTEGER NOT NULL REFERENCES dag_runs(id) ON DELETE CASCADE,
            task_id TEXT NOT NULL,
            try_number INTEGER NOT NULL,
            state TEXT NOT NULL,
            start_date REAL NOT NULL,
            end_date REAL,
            exit_code INTEGER,
            reason TEXT NOT NULL DEFAULT '',
            log_path TEXT NOT NULL,
            exit_path TEXT NOT NULL,
            pid INTEGER,
            pid_start REAL,
            heartbeat_at REAL,
            cpu_percent REAL,
            rss_bytes INTEGER,
            progress REAL,
            metadata TEXT NOT NULL DEFAULT '{}',
            runner_id INTEGER REFERENCES runners(id),
            UNIQUE (run_pk, task_id, try_number)
        ) STRICT;

        CREATE TABLE events (
            id INTEGER PRIMARY KEY,          -- the change counter readers follow
            at REAL NOT NULL,
            kind TEXT NOT NULL,              -- task | run
            dag_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            task_id TEXT,
            try_number INTEGER,
            old_state TEXT,
            new_state TEXT NOT NULL,
            cause TEXT NOT NULL,             -- scheduler | operator | timeout | hung | zombie | signal | ...
            detail TEXT NOT NULL DEFAULT ''
        ) STRICT;
        CREATE INDEX events_run ON events(dag_id, run_id);

        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            user TEXT NOT NULL,
            action TEXT NOT NULL,
            dag_id TEXT,
            run_id TEXT,
            task_id TEXT,
            detail TEXT NOT NULL DEFAULT '{}'
        ) STRICT;
        """)


def _run_statements(db: Connection, script: str) -> None:
    # executescript() would COMMIT the caller's transaction; run statement by statement.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


@migrations(name="0002_runner")
def _runner(db: Connection) -> None:
    _run_statements(db, """
        CREATE TABLE requests (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            user TEXT NOT NULL,
            action TEXT NOT NULL,            -- clear | retry | mark | kill | adopt
            run_pk INTEGER REFERENCES dag_runs(id) ON DELETE CASCADE,
            task_ids TEXT NOT NULL DEFAULT '[]',
            options TEXT NOT NULL DEFAULT '{}',
            done_at REAL,
            result TEXT NOT NULL DEFAULT ''
        ) STRICT;
        CREATE INDEX requests_pending ON requests(done_at);
        ALTER TABLE task_instances ADD COLUMN first_poke_at REAL;
        CREATE INDEX dag_runs_runner ON dag_runs(runner_id, state)
        """)


@migrations(name="0003_backfills")
def _backfills(db: Connection) -> None:
    _run_statements(db, """
        CREATE TABLE backfills (
            id INTEGER PRIMARY KEY,
            dag_id TEXT NOT NULL,
            start_date REAL NOT NULL,
            end_date REAL NOT NULL,
            parallelism INTEGER NOT NULL,
            run_order TEXT NOT NULL,          -- oldest-first | newest-first
            reprocess TEXT NOT NULL,          -- none | failed | completed
            pool TEXT,
            state TEXT NOT NULL,              -- running | paused | cancelled | done
            skipped INTEGER NOT NULL DEFAULT 0,
            runner_id INTEGER REFERENCES runners(id),   -- set while `backfill --wait` runs it
            user TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        ) STRICT;
        ALTER TABLE dag_runs ADD COLUMN backfill_id INTEGER REFERENCES backfills(id);
        CREATE INDEX dag_runs_backfill ON dag_runs(backfill_id, state);
        CREATE INDEX dag_runs_created ON dag_runs(created_at)
        """)


@migrations(name="0004_alerts")
def _alerts(db: Connection) -> None:
    _run_statements(db, """
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            dag_id TEXT NOT NULL,
            run_id TEXT NOT NULL DEFAULT '',
            task_id TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL,             -- open | acked | resolved
            severity TEXT NOT NULL,          -- critical | error | warning | info
            level INTEGER NOT NULL DEFAULT 0,   -- escalation steps fired so far
            summary TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            acked_at REAL,
            acked_by TEXT,
            resolved_at REAL,
            next_step_at REAL,
            UNIQUE (kind, dag_id, run_id, task_id)
        ) STRICT;
        CREATE INDEX alerts_state ON alerts(state);
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            alert_id INTEGER NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
            channel TEXT NOT NULL,
            action TEXT NOT NULL,            -- trigger | acknowledge | resolve
            status TEXT NOT NULL,            -- pending | sent | failed
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_status TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        ) STRICT;
        CREATE INDEX deliveries_pending ON deliveries(status);
        CREATE TABLE delivery_attempts (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
            at REAL NOT NULL,
            ok INTEGER NOT NULL,
            detail TEXT NOT NULL
        ) STRICT
        """)


@migrations(name="0005_runner_health")
def _runner_health(db: Connection) -> None:
    # A runner's health after an outage (a locked or full database), and the errors the runner
    # itself found while scheduling a DAG, which a parse of the folder must not erase.
    _run_statements(db, """
        ALTER TABLE runners ADD COLUMN health TEXT NOT NULL DEFAULT 'ok';
        ALTER TABLE runners ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
        ALTER TABLE runners ADD COLUMN last_error_at REAL;
        ALTER TABLE import_errors ADD COLUMN origin TEXT NOT NULL DEFAULT 'load'
        """)


@migrations(name="0006_one_door")
def _one_door(db: Connection) -> None:
    # Who made each change (a user, or runner N), beside why (cause).
    _run_statements(db, """
        ALTER TABLE events ADD COLUMN actor TEXT NOT NULL DEFAULT ''
        """)


@migrations(name="0007_state_checks")
def _state_checks(db: Connection) -> None:
    # Each state column accepts only the known states. SQLite adds a CHECK only by rebuilding
    # the table: a copy with the constraint, the rows, then the copy in its place with its
    # indexes (the store runs migrations with foreign keys off, so nothing cascades).
    for table, states in (("dag_runs", RUN_STATES), ("task_instances", TASK_STATES),
                          ("tries", TRY_STATES)):
        create = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                            [table]).fetchone()[0]
        indexes = [row[0] for row in db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT "
            "NULL", [table]).fetchall()]
        # `state = 'a' OR state = 'b' ...`, most written first: SQLite checks `state IN (...)`
        # of constants through a temporary index built per statement, which cost the engine
        # about 30 us a task (four state writes); the chain stops at the first match.
        allowed = " OR ".join(f"state = '{s}'" for s in states)
        head, _, tail = create.rpartition(")")
        checked = f"{head},\n    CHECK ({allowed})\n){tail}"
        db.execute(checked.replace(f"CREATE TABLE {table}", f"CREATE TABLE {table}__new", 1))
        db.execute(f"INSERT INTO {table}__new SELECT * FROM {table}")
        db.execute(f"DROP TABLE {table}")
        db.execute(f"ALTER TABLE {table}__new RENAME TO {table}")
        for index in indexes:
            db.execute(index)


@migrations(name="0008_datasets")
def _datasets(db: Connection) -> None:
    # SPEC 9. An event says a dataset's partition was (re)written; a trigger row says which
    # event a consumer's run took, so each event is consumed once per consumer (the primary
    # key) in the transaction that creates the run; a consumer only looks at events newer than
    # the newest one when it was first loaded (since_id).
    _run_statements(db, """
        CREATE TABLE dataset_events (
            id INTEGER PRIMARY KEY,
            dataset TEXT NOT NULL,
            partition TEXT NOT NULL,
            at REAL NOT NULL,
            source TEXT NOT NULL,            -- task | emit
            dag_id TEXT,
            run_id TEXT,
            task_id TEXT,
            try_number INTEGER,
            actor TEXT NOT NULL DEFAULT '',
            metadata TEXT NOT NULL DEFAULT '{}'
        ) STRICT;
        CREATE INDEX dataset_events_name ON dataset_events(dataset, partition, id);
        CREATE TABLE dataset_consumers (
            consumer TEXT PRIMARY KEY,
            since_id INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE dataset_triggers (
            consumer TEXT NOT NULL,
            dataset TEXT NOT NULL,
            partition TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            run_pk INTEGER REFERENCES dag_runs(id) ON DELETE SET NULL,
            at REAL NOT NULL,
            PRIMARY KEY (consumer, dataset, event_id)
        ) STRICT;
        CREATE INDEX dataset_triggers_partition ON dataset_triggers(consumer, dataset, partition)
        """)



@migrations(name="0009_run_partition")
def _run_partition(db: Connection) -> None:
    # A dataset-triggered run remembers the partition it was made for, so a partition that is
    # not a day ({{ partition }}: a region, an hour, a batch id) reaches the task and the events
    # the run writes in turn (NULL: the run's ds).
    db.execute("ALTER TABLE dag_runs ADD COLUMN partition TEXT")
    # Retention keeps a run an open alert names and takes a removed run's alerts with it; it
    # finds old dataset events and trigger rows by age, and each dataset's newest by id.
    # dataset_stats holds each dataset's counts and newest event, kept with every event
    # written or removed, so listing 10,000 datasets reads 10,000 rows, not every event.
    _run_statements(db, """
        CREATE INDEX alerts_run ON alerts(dag_id, run_id);
        CREATE INDEX dataset_events_at ON dataset_events(at);
        CREATE INDEX dataset_events_newest ON dataset_events(dataset, id);
        CREATE INDEX dataset_triggers_at ON dataset_triggers(at);
        CREATE TABLE dataset_stats (
            dataset TEXT PRIMARY KEY,
            events INTEGER NOT NULL,
            partitions INTEGER NOT NULL,
            newest_id INTEGER NOT NULL
        ) STRICT;
        INSERT INTO dataset_stats (dataset, events, partitions, newest_id)
            SELECT dataset, count(*), count(DISTINCT partition), max(id) FROM dataset_events
            GROUP BY dataset
        """)


@migrations(name="0010_host_lease")
def _host_lease(db: Connection) -> None:
    # SPEC 10: each runner says how long its silence is allowed before it counts as lost
    # (NULL: the default), so every host judges it by the same lease.
    db.execute("ALTER TABLE runners ADD COLUMN lease REAL")


@migrations(name="0011_log_chunks")
def _log_chunks(db: Connection) -> None:
    # SPEC 10: what a try writes, shipped to the database as it goes when runners share a
    # PostgreSQL store, so its log reads and follows from any host (the file stays on its own).
    _run_statements(db, """
        CREATE TABLE log_chunks (
            run_pk INTEGER NOT NULL REFERENCES dag_runs(id) ON DELETE CASCADE,
            task_id TEXT NOT NULL,
            try_number INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            at REAL NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (run_pk, task_id, try_number, seq)
        ) STRICT
        """)

@migrations(name="0012_runner_queues")
def _runner_queues(db: Connection) -> None:
    # SPEC 10: the queues a runner serves (`runner --queues`, comma-separated; NULL: every
    # queue), so any runner can say of a queued run that no live runner serves its queue.
    db.execute("ALTER TABLE runners ADD COLUMN queues TEXT")


@migrations(name="0013_runner_channels")
def _runner_channels(db: Connection) -> None:
    # SPEC 10: the alert channels a runner's flowtui.toml names (comma-separated), so a sender
    # leaves a page for a channel another live host knows to that host's sender.
    db.execute("ALTER TABLE runners ADD COLUMN channels TEXT")


@migrations(name="0014_removed_runs")
def _removed_runs(db: Connection) -> None:
    # SPEC 10: the runs a clean removed, so each host removes its own logs of those runs (and
    # never a folder of a run the database merely does not know: another home's, for one).
    db.execute("CREATE TABLE removed_runs (dag_id TEXT NOT NULL, run_id TEXT NOT NULL, "
               "removed_at REAL NOT NULL, PRIMARY KEY (dag_id, run_id))")
    db.execute("CREATE INDEX removed_runs_at ON removed_runs (removed_at)")


@migrations(name="0015_task_offers")
def _task_offers(db: Connection) -> None:
    # SPEC 10: a task its run's runner cannot start (no free slot there, or a queue it does
    # not serve) is offered, ``queued`` with its queue, to every runner; the one that claims it
    # runs the try and says on its row how it ended (``exited_at``, ``exit_code``, ``kill``);
    # the run's runner asks it to stop a try through ``stop``.
    db.execute("ALTER TABLE task_instances ADD COLUMN queue TEXT NOT NULL DEFAULT 'default'")
    db.execute("ALTER TABLE tries ADD COLUMN stop TEXT")
    db.execute("ALTER TABLE tries ADD COLUMN exited_at REAL")
    db.execute("ALTER TABLE tries ADD COLUMN kill TEXT")
    db.execute("CREATE INDEX task_instances_offered ON task_instances (queue, priority) "
               "WHERE state = 'queued'")
    db.execute("CREATE INDEX tries_open ON tries (runner_id) WHERE end_date IS NULL")


# Most written first (see 0007).
TASK_STATES = ("running", "success", "scheduled", "none", "failed", "up_for_retry",
               "upstream_failed", "skipped", "queued", "up_for_reschedule")
RUN_STATES = ("running", "success", "queued", "failed")
TRY_STATES = ("running", "success", "failed", "skipped", "rescheduled")
