"""The home folder, the pipelines folder and ``flowtui.toml``."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


DEFAULT_DAG_FILE_TIMEOUT = 30.0
DEFAULT_HOST_LEASE = 60.0


class ConfigError(Exception):
    """flowtui.toml is malformed or names something that does not exist."""


@dataclass(slots=True)
class Config:
    home: Path
    pipelines: Path
    parallelism: int = 32
    pools: dict[str, int] = field(default_factory=dict)
    dag_file_timeout: float = DEFAULT_DAG_FILE_TIMEOUT
    retention: float | None = None  # seconds a finished run is kept (the runner cleans daily)
    raw: dict[str, Any] = field(default_factory=dict)
    database_url: str | None = None  # PostgreSQL (SPEC 10); None: the home's SQLite file
    host_lease: float = DEFAULT_HOST_LEASE  # silence after which a runner counts as lost

    @property
    def db_path(self) -> Path:
        return self.home / "flowtui.db"

    @property
    def database(self) -> str | Path:
        """What ``Store.open`` opens: the PostgreSQL URL, else the SQLite file."""
        return self.database_url or self.db_path

    def has_database(self) -> bool:
        """Whether there can be anything recorded yet (a server is asked when opened)."""
        return self.database_url is not None or self.db_path.exists()

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    def pool_size(self, name: str) -> int | None:
        if name == "default":
            return self.pools.get("default", self.parallelism)
        return self.pools.get(name)


def _absolute(path: str | os.PathLike[str]) -> Path:
    """Made absolute once, here: paths stored in the db must hold from any working folder."""
    return Path(os.path.abspath(Path(path).expanduser()))


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    if home:
        return _absolute(home)
    env = os.environ.get("FLOWTUI_HOME")
    if env:
        return _absolute(env)
    return _absolute(Path.home() / ".flowtui")


def load_config(home: str | os.PathLike[str] | None = None,
                pipelines: str | os.PathLike[str] | None = None) -> Config:
    home_path = resolve_home(home)
    raw: dict[str, Any] = {}
    toml_path = home_path / "flowtui.toml"
    if toml_path.exists():
        try:
            raw = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path}: malformed TOML: {exc}; fix the syntax") from None
        except OSError as exc:
            raise ConfigError(f"{toml_path}: cannot read: {exc.strerror}") from None
    if pipelines:
        pipes = _absolute(pipelines)
    elif os.environ.get("FLOWTUI_PIPELINES"):
        pipes = _absolute(os.environ["FLOWTUI_PIPELINES"])
    elif raw.get("pipelines_dir"):
        pipes = Path(str(raw["pipelines_dir"])).expanduser()
        pipes = _absolute(pipes if pipes.is_absolute() else home_path / pipes)
    else:
        pipes = _absolute("pipelines")
    parallelism = raw.get("parallelism", 32)
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
        raise ConfigError(f"{toml_path}: parallelism must be a whole number of at least 1, "
                          f"not {parallelism!r}")
    pools_raw = raw.get("pools", {})
    if not isinstance(pools_raw, dict):
        raise ConfigError(f"{toml_path}: [pools] must be a table of NAME = slots")
    pools: dict[str, int] = {}
    for name, slots in pools_raw.items():
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ConfigError(f"{toml_path}: pools.{name} must be a whole number of slots "
                              f"of at least 1, not {slots!r}")
        pools[str(name)] = slots
    timeout = raw.get("dag_file_timeout", DEFAULT_DAG_FILE_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 0 < timeout <= 3600:
        raise ConfigError(f"{toml_path}: dag_file_timeout must be a number of seconds from "
                          f"more than 0 to 3600, not {timeout!r}")
    retention = None
    if "retention" in raw:
        from flowtui.runner.retention import parse_age

        try:
            retention = parse_age(raw["retention"], f"{toml_path}: retention")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    lease = DEFAULT_HOST_LEASE
    if "host_lease" in raw:
        from flowtui.runner.durations import parse_duration

        try:
            lease = parse_duration(raw["host_lease"])
        except ValueError as exc:
            raise ConfigError(f"{toml_path}: host_lease: {exc}") from None
        if not 2 <= lease <= 3600:
            raise ConfigError(f"{toml_path}: host_lease must be from 2s to 1h, not "
                              f"{raw['host_lease']!r}")
    return Config(home=home_path, pipelines=pipes, parallelism=parallelism, pools=pools,
                  dag_file_timeout=float(timeout), retention=retention, raw=raw,
                  database_url=_database_url(raw, toml_path), host_lease=lease)


def _database_url(raw: dict[str, Any], toml_path: Path) -> str | None:
    """$FLOWTUI_DATABASE_URL, else ``database_url`` in flowtui.toml (an ``env:NAME``
    reference keeps the password out of the file)."""
    value = os.environ.get("FLOWTUI_DATABASE_URL") or raw.get("database_url")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{toml_path}: database_url must be a postgresql://... URL")
    if value.startswith("env:"):
        name = value[4:]
        if not os.environ.get(name):
            raise ConfigError(f"{toml_path}: database_url names ${name}, which is not set")
        value = os.environ[name]
    if not value.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"database_url {redact(value)!r}: flowtui speaks PostgreSQL "
                          "(postgresql://user:password@host:5432/db); leave it out for SQLite")
    return value


def redact(url: str) -> str:
    """A database URL as it may be shown: without its password."""
    import re

    return re.sub(r"(//[^:/@]*):[^/]*@", r"\1:***@", url)
