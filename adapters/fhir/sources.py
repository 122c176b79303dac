"""The FHIR sources to pull from: ``[[fhir_sources]]`` tables in the configuration file.

They live in the same TOML file as the flat settings (:mod:`bridge.config` ignores this one
key), because a list of tables does not fit flat ``FHIR_BRIDGE_*`` environment variables::

    [[fhir_sources]]
    name = "ehr"                                   # used in `fhir-bridge sync ehr`, ids and logs
    base_url = "https://ehr.example.org/fhir/R4"
    resource_types = ["Patient", "Encounter", "Observation", "Condition"]
    interval = 300                                 # seconds between scheduled syncs; 0: on demand only
    mode = "rest"                                  # "rest" (search by _lastUpdated) or "bulk" ($export)
    keep_ids = false                               # true for a partner bridge: ids kept as they are
    id_prefix = "ehr"                              # default: the name
    page_size = 500
    rate_limit = 10                                # requests per second; 0: unlimited
    timeout = 30                                   # seconds per request (connect and each read)
    max_attempts = 6
    backoff_base = 0.5
    overlap = 0                                    # seconds searched again before the watermark
    bulk_level = "system"                          # "system", "patient" or "group/<id>"

    [fhir_sources.auth]
    type = "smart"                                 # none | basic | bearer | client_credentials | smart
    client_id = "fhir-bridge"
    private_key_file = "/etc/fhir-bridge/ehr-key.pem"   # smart: RS384 or ES384 PEM
    key_id = "key-1"
    scope = "system/*.read"
    token_url = ""                                 # default: discovered from .well-known/smart-configuration

Secrets never appear in the file itself: ``password``, ``token`` and ``client_secret`` are read from
``*_file`` (a path) or ``*_env`` (an environment variable's name), and are never logged.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SourceConfigError
from .references import ID_PATTERN, id_prefix

AUTH_TYPES = ("none", "basic", "bearer", "client_credentials", "smart")
MODES = ("rest", "bulk")
_TYPE = ID_PATTERN


@dataclass(frozen=True)
class AuthSettings:
    type: str = "none"
    username: str = ""
    password_file: str = ""
    password_env: str = ""
    token_file: str = ""
    token_env: str = ""
    token_url: str = ""
    client_id: str = ""
    client_secret_file: str = ""
    client_secret_env: str = ""
    private_key_file: str = ""
    key_id: str = ""
    algorithm: str = "RS384"
    scope: str = ""

    def secret(self, kind: str) -> str:
        """Read the ``password``, ``token`` or ``client_secret`` from its file or environment variable."""
        path, env = getattr(self, f"{kind}_file"), getattr(self, f"{kind}_env")
        if path:
            try:
                return Path(path).expanduser().read_text().strip()
            except OSError as exc:
                raise SourceConfigError(f"cannot read the {kind} file {path}: {exc.strerror}") from exc
        if env:
            value = os.environ.get(env)
            if value is None:
                raise SourceConfigError(f"the environment variable {env} (the {kind}) is not set")
            return value.strip()
        raise SourceConfigError(f"auth type {self.type} needs {kind}_file or {kind}_env")

    def __repr__(self) -> str:  # no secret is held, but keep paths out of casual logs too
        return f"AuthSettings(type={self.type!r}, client_id={self.client_id!r})"


@dataclass(frozen=True)
class FhirSource:
    name: str
    base_url: str
    resource_types: tuple[str, ...]
    interval: float = 0.0
    mode: str = "rest"
    keep_ids: bool = False
    id_prefix: str = ""
    page_size: int = 500
    rate_limit: float = 0.0
    timeout: float = 30.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 60.0
    overlap: float = 0.0
    bulk_level: str = "system"
    bulk_poll_interval: float = 5.0
    bulk_max_wait: float = 3600.0
    auth: AuthSettings = field(default_factory=AuthSettings)

    @property
    def prefix(self) -> str:
        return self.id_prefix or id_prefix(self.name)

    @property
    def base(self) -> str:
        return self.base_url.rstrip("/")


_NUMBERS = {"interval", "rate_limit", "timeout", "backoff_base", "backoff_max", "overlap",
            "bulk_poll_interval", "bulk_max_wait"}
_INTS = {"page_size", "max_attempts"}


def parse_source(table: dict[str, Any]) -> FhirSource:
    name = table.get("name")
    if not isinstance(name, str) or not name or not ID_PATTERN.match(name):
        raise SourceConfigError(f"[[fhir_sources]]: name must be letters, digits, '-' or '.', found {name!r}")
    where = f"[[fhir_sources]] {name}"
    known = {f for f in FhirSource.__dataclass_fields__}
    unknown = sorted(set(table) - known)
    if unknown:
        raise SourceConfigError(f"{where}: unknown settings {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in _NUMBERS:
            if not isinstance(value, int | float) or value < 0:
                raise SourceConfigError(f"{where}: {key} must be a non-negative number, found {value!r}")
            values[key] = float(value)
        elif key in _INTS:
            if not isinstance(value, int) or value < 1:
                raise SourceConfigError(f"{where}: {key} must be a positive integer, found {value!r}")
            values[key] = value
        elif key == "keep_ids":
            if not isinstance(value, bool):
                raise SourceConfigError(f"{where}: keep_ids must be true or false")
            values[key] = value
        elif key == "resource_types":
            if not isinstance(value, list) or not value or not all(isinstance(t, str) and _TYPE.match(t) for t in value):
                raise SourceConfigError(f"{where}: resource_types must be a non-empty list of FHIR resource types")
            values[key] = tuple(value)
        elif key == "auth":
            values[key] = _auth(where, value)
        else:
            values[key] = str(value)
    base_url = values.get("base_url", "")
    if not base_url.startswith(("http://", "https://")):
        raise SourceConfigError(f"{where}: base_url must be an http(s) URL, found {base_url!r}")
    if "resource_types" not in values:
        raise SourceConfigError(f"{where}: resource_types is required (e.g. [\"Patient\", \"Observation\"])")
    if values.get("mode", "rest") not in MODES:
        raise SourceConfigError(f"{where}: mode must be one of {', '.join(MODES)}")
    prefix = values.get("id_prefix", "")
    if prefix and (len(prefix) > 16 or not ID_PATTERN.match(prefix)):
        raise SourceConfigError(f"{where}: id_prefix must be 1-16 letters, digits, '-' or '.', found {prefix!r}")
    level = values.get("bulk_level", "system")
    if level not in ("system", "patient") and not (level.startswith("group/") and ID_PATTERN.match(level[6:])):
        raise SourceConfigError(f"{where}: bulk_level must be system, patient or group/<id>, found {level!r}")
    return FhirSource(**values)


def _auth(where: str, table: Any) -> AuthSettings:
    if not isinstance(table, dict):
        raise SourceConfigError(f"{where}: auth must be a table ([fhir_sources.auth])")
    known = set(AuthSettings.__dataclass_fields__)
    unknown = sorted(set(table) - known)
    if unknown:
        hint = " (secrets go in *_file or *_env, never in the file)" if {"password", "token", "client_secret"} & set(unknown) else ""
        raise SourceConfigError(f"{where}: unknown auth settings {', '.join(unknown)}{hint}")
    auth = AuthSettings(**{k: str(v) for k, v in table.items()})
    if auth.type not in AUTH_TYPES:
        raise SourceConfigError(f"{where}: auth type must be one of {', '.join(AUTH_TYPES)}, found {auth.type!r}")
    needs = {"basic": ("username",), "client_credentials": ("client_id", "token_url"),
             "smart": ("client_id", "private_key_file")}.get(auth.type, ())
    for key in needs:
        if not getattr(auth, key):
            raise SourceConfigError(f"{where}: auth type {auth.type} needs {key}")
    if auth.algorithm not in ("RS384", "ES384"):
        raise SourceConfigError(f"{where}: auth algorithm must be RS384 or ES384 (SMART Backend Services)")
    return auth


def parse_sources(data: dict[str, Any]) -> list[FhirSource]:
    tables = data.get("fhir_sources", [])
    if not isinstance(tables, list):
        raise SourceConfigError("fhir_sources must be a list of tables: write [[fhir_sources]]")
    sources = [parse_source(t) for t in tables]
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SourceConfigError(f"[[fhir_sources]]: names must be unique, found {', '.join(dupes)} twice")
    return sources


def load_sources(config_file: str | Path | None) -> list[FhirSource]:
    """The sources of the configuration file (none without a file)."""
    if not config_file:
        return []
    try:
        with open(config_file, "rb") as fh:
            return parse_sources(tomllib.load(fh))
    except FileNotFoundError as exc:
        raise SourceConfigError(f"configuration file {config_file} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SourceConfigError(f"configuration file {config_file} is not valid TOML: {exc}") from exc


def find_source(sources: list[FhirSource], name: str) -> FhirSource:
    for source in sources:
        if source.name == name:
            return source
    listed = ", ".join(s.name for s in sources) or "none: add [[fhir_sources]] tables to the configuration file"
    raise SourceConfigError(f"no FHIR source named {name!r}; configured: {listed}")
