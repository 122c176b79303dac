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
#: tables of the TOML file that are not flat settings; their own loaders read them (adapters.fhir.sources)
TABLES = frozenset({"fhir_sources"})


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
    #: secret key the ids of converted HL7v2 resources are made with (created with a new store;
    #: bridge.id_key): back it up with the database, as the signing key
    resource_id_key_file: Path = Path("resource-id.key")
    #: HTTP API bind address and port
    host: str = "127.0.0.1"
    port: int = 8080
    #: public base URL of the API, as partners reach it (behind a proxy); default http://host:port
    public_url: str = ""
    #: gunicorn worker processes for the API
    workers: int = 2
    #: threads per gunicorn worker (gthread); concurrent reads of one worker share one durable
    #: AuditEvent append to its spool (group commit), so more threads means fewer fsyncs per request
    threads: int = 16
    #: seconds between storing the AuditEvents spooled by the API processes as versions (an
    #: AuditEvent read or search stores them first anyway)
    audit_fold_interval: float = 0.5
    #: a line per HTTP request on standard output (gunicorn's access log); AuditEvents record every
    #: /fhir access anyway
    access_log: bool = False
    #: seconds between sequencing the log queue (and signing a checkpoint if the log grew)
    sequence_interval: float = 1.0
    #: entries given indices per sequencer transaction
    sequence_batch: int = 10_000
    #: seconds between signed checkpoints (one is signed only if the log grew)
    checkpoint_interval: float = 10.0
    #: MLLP listener for HL7v2 feeds (the EHR's interface engine connects here); port 0 disables it
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    #: PEM certificate and key files for MLLP over TLS; both empty means plain TCP
    mllp_tls_cert: str = ""
    mllp_tls_key: str = ""
    #: largest MLLP frame accepted, in bytes; a larger one closes the connection
    mllp_max_frame: int = 16 * 1024 * 1024
    #: seconds a connection may stay silent before the listener closes it (interface engines reconnect)
    mllp_idle_timeout: float = 600.0
    #: messages committed together (group commit) by the MLLP listener and the file watcher
    ingest_group: int = 64
    #: processes converting and validating messages beside the listener (0: in the listener's process)
    ingest_workers: int = 0
    #: folder polled for HL7v2 files (relative to data_dir); empty disables the file watcher
    inbox_dir: str = ""
    #: seconds between polls of inbox_dir
    inbox_poll_interval: float = 2.0
    #: folder of site mapping overrides (Z-segments, local codes) layered over the shipped mappings
    mapping_override_dir: str = ""
    #: where checkpoints are anchored: "local" (signed journal file; no external trust) or "evm"
    anchor_backend: str = "local"
    #: seconds between anchoring rounds (one anchor per round, only if the log grew)
    anchor_period: float = 60.0
    #: the local backend's journal file
    anchor_journal: Path = Path("anchor-journal.jsonl")
    #: evm: the node's JSON-RPC URL (Besu, GoQuorum, a public network's provider)
    anchor_rpc_url: str = ""
    #: evm: the chain id the node must serve (checked before every round and verification)
    anchor_chain_id: int = 0
    #: evm: address of the CheckpointAnchor contract (printed by `fhir-bridge anchor deploy`)
    anchor_contract: str = ""
    #: evm: file holding the sending account's private key (hex, mode 600); or set
    #: FHIR_BRIDGE_ANCHOR_KEY in the environment; or use anchor_from
    anchor_key_file: str = ""
    #: evm: an account the node keeps unlocked, used with eth_sendTransaction instead of a key
    anchor_from: str = ""
    #: evm: blocks (including the anchor's) before an anchor counts as confirmed
    anchor_confirmations: int = 12
    #: evm: highest fee per gas to offer, in gwei; 0 means no cap
    anchor_max_fee_gwei: float = 0.0
    #: evm: seconds an anchor may wait unmined before it is replaced with higher fees; 0 never
    anchor_replace_after: float = 600.0

    #: consent regime for partner reads: "opt-in" (deny unless a Consent permits) or "opt-out"
    #: (permit unless a Consent denies)
    consent_regime: str = "opt-in"

    #: the TOML file this configuration was read from (set by load_config); adapters.fhir.sources reads
    #: its [[fhir_sources]] tables from the same file
    config_file: str = ""

    @property
    def public_base_url(self) -> str:
        """The URL partners reach the API at (the audience of their client assertions)."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file if self.key_file.is_absolute() else self.data_dir / self.key_file

    @property
    def resolved_resource_id_key_file(self) -> Path:
        path = self.resource_id_key_file
        return path if path.is_absolute() else self.data_dir / path

    @property
    def resolved_anchor_journal(self) -> Path:
        return self.anchor_journal if self.anchor_journal.is_absolute() else self.data_dir / self.anchor_journal

    @property
    def resolved_anchor_key_file(self) -> Path | None:
        if not self.anchor_key_file:
            return None
        path = Path(self.anchor_key_file).expanduser()
        return path if path.is_absolute() else self.data_dir / path

    @property
    def resolved_inbox_dir(self) -> Path | None:
        if not self.inbox_dir:
            return None
        path = Path(self.inbox_dir).expanduser()
        return path if path.is_absolute() else self.data_dir / path

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'fhir-bridge.db').as_posix()}"


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind in (Path, "Path"):
            return Path(str(value)).expanduser()
        if kind in (bool, "bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in _BOOLEANS:
                raise ValueError(f"expected true or false, found {value!r}")
            return _BOOLEANS[text]
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
        data = {k: v for k, v in data.items() if k not in TABLES}
        data["config_file"] = str(path)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"configuration file {path}: unknown settings {', '.join(unknown)}")
        values.update(data)
    for name in known:
        if ENV_PREFIX + name.upper() in env:
            values[name] = env[ENV_PREFIX + name.upper()]
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = replace(Config(), **{k: _coerce(k, known[k], v) for k, v in values.items()})
    if config.workers < 1 or config.threads < 1 or not 0 < config.port < 65536 or config.sequence_batch < 1 \
            or config.audit_fold_interval <= 0:
        raise ConfigError("workers, threads, sequence_batch and audit_fold_interval must be positive, "
                          "port within 1-65535")
    if config.anchor_backend not in ("local", "evm"):
        raise ConfigError(f"setting anchor_backend: expected 'local' or 'evm', found {config.anchor_backend!r}")
    if config.consent_regime not in ("opt-in", "opt-out"):
        raise ConfigError(f"setting consent_regime: expected 'opt-in' or 'opt-out', found {config.consent_regime!r}")
    if config.anchor_period <= 0 or config.anchor_confirmations < 1:
        raise ConfigError("anchor_period must be positive and anchor_confirmations at least 1")
    return config
