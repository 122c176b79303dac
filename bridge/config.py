"""Configuration: documented defaults, overridden by a TOML file, overridden by environment variables.

Every setting can be given as ``FHIR_BRIDGE_<NAME>`` (upper case) in the environment, or as
``<name> = ...`` at the top level of the TOML file named by ``--config`` or ``FHIR_BRIDGE_CONFIG``.
Paths that are relative are taken relative to the data directory.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "FHIR_BRIDGE_"


@dataclass(frozen=True)
class Config:
    #: where the SQLite database, signing key and journals live
    data_dir: Path = Path("fhir-bridge-data")
    #: "sqlite:///path" or "postgresql://user@host:port/db"; empty means SQLite in data_dir
    database_url: str = ""
    #: the log's identity in checkpoints (C2SP origin); also the signing key's name
    log_origin: str = "fhir-bridge.localhost/log"
    #: Ed25519 signer key file (C2SP signer key string), created by `fhir-bridge keygen`
    key_file: Path = Path("log-signing.key")
    #: HTTP API bind address and port
    host: str = "127.0.0.1"
    port: int = 8080
    #: gunicorn worker processes for the API
    workers: int = 2
    #: seconds between sequencing the log queue (and signing a checkpoint if the log grew)
    sequence_interval: float = 1.0
    #: entries given indices per sequencer transaction
    sequence_batch: int = 10_000
    #: seconds between signed checkpoints (one is signed only if the log grew)
    checkpoint_interval: float = 10.0

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file if self.key_file.is_absolute() else self.data_dir / self.key_file

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'fhir-bridge.db').as_posix()}"


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind in (Path, "Path"):
            return Path(str(value)).expanduser()
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: expected {kind}, found {value!r}") from exc


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None, **overrides: Any) -> Config:
    """Defaults < TOML file < environment < explicit overrides (from command-line options)."""
    env = dict(os.environ if env is None else env)
    path = path or env.get(ENV_PREFIX + "CONFIG")
    values: dict[str, Any] = {}
    known = {f.name: f.type for f in fields(Config)}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"configuration file {path}: unknown settings {', '.join(unknown)}")
        values.update(data)
    for name in known:
        if ENV_PREFIX + name.upper() in env:
            values[name] = env[ENV_PREFIX + name.upper()]
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = replace(Config(), **{k: _coerce(k, known[k], v) for k, v in values.items()})
    if config.workers < 1 or not 0 < config.port < 65536 or config.sequence_batch < 1:
        raise ConfigError("workers and sequence_batch must be positive, port within 1-65535")
    return config
