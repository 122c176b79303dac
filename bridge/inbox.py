"""The inbox: every raw message kept first, durably, before anything else is done with it.

One row per distinct message, idempotent by (sender, control id, SHA-256 of the raw bytes): the
same message again finds its row and creates nothing.  A row's status is ``received`` (kept, not yet
converted: a crash happened in between, or it waits), ``stored`` (its resource versions are
committed) or ``error`` (with HL7 table 0357 code, location and text saying why); ``reprocess``
moves an ``error`` row to ``stored`` after a mapping fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import orjson

from anchoring.db import Cursor, Database

from .errors import IngestError
from .hl7.types import HL7Error

RECEIVED, STORED, ERROR = "received", "stored", "error"
STATUSES = (RECEIVED, STORED, ERROR)

_DDL = {
    "sqlite": {"blob": "BLOB", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"blob": "BYTEA", "serial": "BIGSERIAL PRIMARY KEY"},
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox_messages (
    id {serial},
    sender TEXT NOT NULL,
    control_id TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    raw {blob} NOT NULL,
    source TEXT NOT NULL,
    received_at TEXT NOT NULL,
    message_type TEXT NOT NULL,
    status TEXT NOT NULL,
    ack_code TEXT,
    error_code TEXT,
    error_location TEXT,
    error_text TEXT,
    unmapped TEXT NOT NULL DEFAULT '[]',
    warnings TEXT NOT NULL DEFAULT '[]',
    versions TEXT NOT NULL DEFAULT '[]',
    updated_at TEXT NOT NULL,
    UNIQUE (sender, control_id, content_sha256)
);
CREATE INDEX IF NOT EXISTS inbox_messages_status ON inbox_messages (status)
"""


def _json_text(items: list[str]) -> str:
    """A list of strings as JSON text (orjson: a tenth of json.dumps's time, for every message)."""
    try:
        return orjson.dumps(items).decode()
    except TypeError:  # a lone surrogate (text decoded with surrogateescape): json writes it escaped
        return json.dumps(items)


_COLUMNS = (
    "id, sender, control_id, content_sha256, source, received_at, message_type, status, ack_code, "
    "error_code, error_location, error_text, unmapped, warnings, versions, updated_at"
)


def content_sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@dataclass
class InboxMessage:
    id: int
    sender: str
    control_id: str
    content_sha256: str
    source: str
    received_at: str
    message_type: str
    status: str
    ack_code: str | None = None
    error_code: str | None = None
    error_location: str | None = None
    error_text: str | None = None
    unmapped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    updated_at: str = ""

    @property
    def error(self) -> HL7Error | None:
        if self.status != ERROR or self.error_code is None:
            return None
        return HL7Error(self.error_code, self.error_location or "", self.error_text or "")

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in _COLUMNS.split(", ")}


def _message(row: tuple) -> InboxMessage:
    values = list(row)
    values[0] = int(values[0])
    for i in (12, 13, 14):
        values[i] = json.loads(values[i])
    return InboxMessage(*values)


class Inbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure_schema(self) -> None:
        with self.db.transaction(write=True) as cur:
            for statement in _SCHEMA.format(**_DDL[self.db.dialect]).split(";"):
                cur.execute(statement)

    # -- writing, inside the caller's transaction -----------------------------------------

    @staticmethod
    def receive(
        cur: Cursor, raw: bytes, sender: str, control_id: str, message_type: str, source: str, now: str,
        digest: str | None = None,
    ) -> tuple[int, bool]:
        """Keep ``raw``; returns (message id, True if this exact message was already kept)."""
        digest = digest or content_sha256(raw)
        cur.execute(
            "INSERT INTO inbox_messages (sender, control_id, content_sha256, raw, source, received_at, "
            "message_type, status, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (sender, control_id, content_sha256) DO NOTHING RETURNING id",
            (sender, control_id, digest, raw, source, now, message_type, RECEIVED, now),
        )
        row = cur.fetchone()
        if row is not None:
            return int(row[0]), False
        cur.execute(
            "SELECT id FROM inbox_messages WHERE sender = ? AND control_id = ? AND content_sha256 = ?",
            (sender, control_id, digest),
        )
        found = cur.fetchone()
        if found is None:  # pragma: no cover - the conflict above proves the row exists
            raise IngestError("the inbox reported a duplicate it cannot find; check the database")
        return int(found[0]), True

    @staticmethod
    def mark_stored(
        cur: Cursor, message_id: int, versions: list[str], unmapped: list[str], warnings: list[str], now: str
    ) -> None:
        cur.execute(
            "UPDATE inbox_messages SET status = ?, ack_code = 'AA', error_code = NULL, error_location = NULL, "
            "error_text = NULL, versions = ?, unmapped = ?, warnings = ?, updated_at = ? WHERE id = ?",
            (STORED, _json_text(versions), _json_text(unmapped), _json_text(warnings), now, message_id),
        )

    @staticmethod
    def mark_error(
        cur: Cursor, message_id: int, error: HL7Error, ack_code: str, now: str,
        unmapped: list[str] | None = None, message_type: str | None = None,
    ) -> None:
        cur.execute(
            "UPDATE inbox_messages SET status = ?, ack_code = ?, error_code = ?, error_location = ?, "
            "error_text = ?, unmapped = ?, versions = '[]', updated_at = ?, "
            "message_type = COALESCE(?, message_type) WHERE id = ?",
            (ERROR, ack_code, error.code, error.location, error.text, _json_text(unmapped or []), now,
             message_type, message_id),
        )

    # -- reading ------------------------------------------------------------------------------

    def get(self, message_id: int) -> InboxMessage:
        with self.db.transaction() as cur:
            return self.read(cur, message_id)

    @staticmethod
    def read(cur: Cursor, message_id: int) -> InboxMessage:
        """One message, inside the caller's transaction."""
        cur.execute(f"SELECT {_COLUMNS} FROM inbox_messages WHERE id = ?", (message_id,))
        row = cur.fetchone()
        if row is None:
            raise IngestError(f"no message {message_id} in the inbox: `fhir-bridge messages list` shows the ids")
        return _message(row)

    def raw(self, message_id: int) -> bytes:
        with self.db.transaction() as cur:
            cur.execute("SELECT raw FROM inbox_messages WHERE id = ?", (message_id,))
            row = cur.fetchone()
        if row is None:
            raise IngestError(f"no message {message_id} in the inbox: `fhir-bridge messages list` shows the ids")
        return bytes(row[0])

    def list(self, status: str | None = None, limit: int | None = None, after_id: int = 0) -> list[InboxMessage]:
        sql = f"SELECT {_COLUMNS} FROM inbox_messages WHERE id > ?"
        params: list = [after_id]
        if status is not None:
            if status not in STATUSES:
                raise IngestError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
            sql += " AND status = ?"
            params.append(status)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.db.transaction() as cur:
            cur.execute(sql, params)
            return [_message(r) for r in cur.fetchall()]

    def ids(self, status: str) -> list[int]:
        with self.db.transaction() as cur:
            cur.execute("SELECT id FROM inbox_messages WHERE status = ? ORDER BY id", (status,))
            return [int(r[0]) for r in cur.fetchall()]

    def counts(self) -> dict[str, int]:
        with self.db.transaction() as cur:
            cur.execute("SELECT status, COUNT(*) FROM inbox_messages GROUP BY status")
            return {r[0]: int(r[1]) for r in cur.fetchall()}
