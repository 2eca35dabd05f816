"""The home folder, the pipelines folder and ``flowtui.toml``."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """flowtui.toml is malformed or names something that does not exist."""


@dataclass(slots=True)
class Config:
    home: Path
    pipelines: Path
    parallelism: int = 32
    pools: dict[str, int] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.home / "flowtui.db"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    def pool_size(self, name: str) -> int | None:
        if name == "default":
            return self.pools.get("default", self.parallelism)
        return self.pools.get(name)


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    if home:
        return Path(home).expanduser()
    env = os.environ.get("FLOWTUI_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".flowtui"


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
        pipes = Path(pipelines)
    elif os.environ.get("FLOWTUI_PIPELINES"):
        pipes = Path(os.environ["FLOWTUI_PIPELINES"])
    elif raw.get("pipelines_dir"):
        pipes = Path(str(raw["pipelines_dir"])).expanduser()
        if not pipes.is_absolute():
            pipes = home_path / pipes
    else:
        pipes = Path("pipelines")
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
    return Config(home=home_path, pipelines=pipes, parallelism=parallelism, pools=pools, raw=raw)
