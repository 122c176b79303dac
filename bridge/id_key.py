"""The store's resource-id key: which key (if any) the ids of converted HL7v2 resources are made with.

Ids are deterministic so that two feeds agree on a patient; made from identifiers alone, anyone who
knows a patient's identifier could compute the id and learn from a 403 (refused) against a 404
(unknown) whether the hospital holds records for them.  With a secret key of the site the ids are
an HMAC (:mod:`bridge.convert.ids`), as deterministic for the bridge and opaque to everyone else.

A new store gets a key (32 random bytes, a file readable by its owner only, never logged), and the
store records the key's fingerprint; a store that already holds converted resources without such a
record keeps unkeyed ids, because changing them would duplicate every resource.  A keyed store whose
key file is missing or different refuses to convert: ids made with another key would split every
patient in two.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path

from anchoring.db import Database

from .errors import ConfigError
from .store import ResourceStore

log = logging.getLogger("fhir_bridge.id_key")

KEY_SIZE = 32
SETTING = "resource_id_key"
UNKEYED = "unkeyed"

_DDL = "CREATE TABLE IF NOT EXISTS bridge_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)"


def fingerprint(key: bytes) -> str:
    """Names the key without revealing it."""
    return "sha256:" + hashlib.sha256(b"fhir-bridge resource-id key|" + key).hexdigest()[:32]


def read_id_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"the resource-id key file {path} is missing: this store's HL7v2 resource ids were made "
                          "with it; restore it from the data directory's backup") from None
    if len(key) != KEY_SIZE:
        raise ConfigError(f"the resource-id key file {path} holds {len(key)} bytes, not {KEY_SIZE}: restore it "
                          "from the data directory's backup")
    return key


def _create(path: Path) -> bytes:
    key = secrets.token_bytes(KEY_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it a moment ago
        return read_id_key(path)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def resource_id_key_file(db: Database, path: Path) -> Path | None:
    """The key file this store's converted resources are identified with, or None (unkeyed ids);
    decides, records and creates on first use (see the module)."""
    ResourceStore(db).ensure_schema()
    with db.transaction(write=True) as cur:
        cur.execute(_DDL)
        cur.execute("SELECT value FROM bridge_settings WHERE name = ?", (SETTING,))
        row = cur.fetchone()
        if row is None:
            cur.execute("SELECT 1 FROM resource_versions WHERE message_id IS NOT NULL LIMIT 1")
            if cur.fetchone() is not None:
                value = UNKEYED
            else:
                value = fingerprint(read_id_key(path) if path.exists() else _create(path))
            cur.execute("INSERT INTO bridge_settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                        (SETTING, value))
            cur.execute("SELECT value FROM bridge_settings WHERE name = ?", (SETTING,))  # a concurrent first use
            value = cur.fetchone()[0]
        else:
            value = row[0]
    if value == UNKEYED:
        log.warning("this store's HL7v2 resource ids are made without a key (it held converted resources "
                    "before keyed ids): an id can be computed from an identifier")
        return None
    if fingerprint(read_id_key(path)) != value:
        raise ConfigError(f"the resource-id key file {path} is not the key this store's ids were made with: "
                          "restore the right file from the data directory's backup")
    return path
