"""What the composition roots (CLI commands, the API factory, `serve`) open from a configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from anchoring.db import Database
from anchoring.log import MerkleLog
from anchoring.note import Signer, read_key_file

from .auth import registry as auth_registry
from .config import Config
from .db import open_database


@dataclass
class Services:
    config: Config
    db: Database
    log: MerkleLog
    registry: auth_registry.Registry
    _signer: Signer | None = field(default=None, repr=False)

    @property
    def signer(self) -> Signer:
        """The log's signing key, read on first use (raises KeyFileError with what to do)."""
        if self._signer is None:
            self._signer = read_key_file(self.config.resolved_key_file)
        return self._signer

    def close(self) -> None:
        self.db.close()


def open_services(config: Config) -> Services:
    db = open_database(config.resolved_database_url)
    log = MerkleLog(db, config.log_origin)
    log.ensure_schema()
    auth_registry.ensure_schema(db)
    return Services(config, db, log, auth_registry.Registry(db))
