"""Anchors and their status, kept in the project's database beside the log's tables.

One row per (target, size): a target is where anchors go (``local:<journal>`` or
``evm:<chain id>:<contract>``), so the primary key is what guarantees that no checkpoint is
anchored twice at the same place, even with several bridge processes on one PostgreSQL.

Status of a row:

``pending``   the row exists, nothing was signed or sent (a crash here just sends later)
``signed``    a transaction was signed and stored, not yet known to be broadcast
``sent``      broadcast (or re-broadcast after a node restart or a reorg), no receipt yet
``included``  in a block of the canonical chain, fewer confirmations than required
``confirmed`` enough confirmations (the local journal confirms at once)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime

from ..db import Database

STATUSES = ("pending", "signed", "sent", "included", "confirmed")
OPEN_STATUSES = ("pending", "signed", "sent", "included")

_DDL = {
    "sqlite": {"blob": "BLOB", "bigint": "INTEGER"},
    "postgresql": {"blob": "BYTEA", "bigint": "BIGINT"},
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_anchors (
    target TEXT NOT NULL,
    size {bigint} NOT NULL,
    root {blob} NOT NULL,
    status TEXT NOT NULL,
    chain_id {bigint},
    contract TEXT,
    sender TEXT,
    nonce {bigint},
    tx_hash TEXT,
    raw_tx {blob},
    tx_fields TEXT,
    sent_at TEXT,
    block_number {bigint},
    block_hash TEXT,
    head {bigint},
    attempts INTEGER NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (target, size)
)
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class AnchorRecord:
    target: str
    size: int
    root: bytes
    status: str = "pending"
    chain_id: int | None = None
    contract: str | None = None
    sender: str | None = None
    nonce: int | None = None
    tx_hash: str | None = None  # the journal record's hash for the local backend
    raw_tx: bytes | None = None  # signed transaction, re-broadcast as is: same nonce, same hash
    tx_fields: str | None = None  # JSON of the transaction's fields, to replace it with higher fees
    sent_at: str | None = None  # when the current transaction was first broadcast
    block_number: int | None = None  # the journal record's sequence number for the local backend
    block_hash: str | None = None
    head: int | None = None  # chain head when last checked
    attempts: int = 0
    last_error: str | None = None
    created_at: str = ""
    updated_at: str = ""

    @property
    def confirmations(self) -> int:
        if self.block_number is None or self.head is None or self.status not in ("included", "confirmed"):
            return 0
        return max(0, self.head - self.block_number + 1)

    def to_json(self) -> dict:
        """The public view (no signed transaction bytes)."""
        return {
            "size": self.size,
            "root": self.root.hex(),
            "status": self.status,
            "target": self.target,
            "chain_id": self.chain_id,
            "contract": self.contract,
            "sender": self.sender,
            "transaction_hash": self.tx_hash,
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "confirmations": self.confirmations,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


_COLUMNS = [f.name for f in fields(AnchorRecord)]


def _from_row(row: tuple) -> AnchorRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    for key in ("root", "raw_tx"):
        if values[key] is not None:
            values[key] = bytes(values[key])
    return AnchorRecord(**values)


class AnchorStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure_schema(self) -> None:
        with self.db.transaction(write=True) as cur:
            cur.execute(_SCHEMA.format(**_DDL[self.db.dialect]))

    def create(self, record: AnchorRecord) -> bool:
        """Insert a new anchor; False if this checkpoint already has one at this target."""
        stamp = now()
        record = replace(record, created_at=stamp, updated_at=stamp)
        with self.db.transaction(write=True) as cur:
            cur.execute("SELECT 1 FROM log_anchors WHERE target = ? AND size = ?", (record.target, record.size))
            if cur.fetchone() is not None:
                return False
            cur.execute(
                f"INSERT INTO log_anchors ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
                "ON CONFLICT (target, size) DO NOTHING",
                [getattr(record, c) for c in _COLUMNS],
            )
        return True

    def save(self, record: AnchorRecord) -> AnchorRecord:
        record = replace(record, updated_at=now())
        columns = [c for c in _COLUMNS if c not in ("target", "size", "created_at")]
        with self.db.transaction(write=True) as cur:
            cur.execute(
                f"UPDATE log_anchors SET {', '.join(c + ' = ?' for c in columns)} WHERE target = ? AND size = ?",
                [*(getattr(record, c) for c in columns), record.target, record.size],
            )
        return record

    def get(self, target: str, size: int) -> AnchorRecord | None:
        with self.db.transaction() as cur:
            cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM log_anchors WHERE target = ? AND size = ?", (target, size))
            row = cur.fetchone()
        return None if row is None else _from_row(row)

    def list(self, target: str | None = None, statuses: tuple[str, ...] | None = None,
             limit: int | None = None) -> list[AnchorRecord]:
        """Anchors, newest checkpoint first."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM log_anchors WHERE 1 = 1"
        params: list = []
        if target is not None:
            sql += " AND target = ?"
            params.append(target)
        if statuses:
            sql += f" AND status IN ({', '.join('?' * len(statuses))})"
            params.extend(statuses)
        sql += " ORDER BY size DESC, target"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.db.transaction() as cur:
            cur.execute(sql, params)
            return [_from_row(r) for r in cur.fetchall()]

    def latest(self, target: str) -> AnchorRecord | None:
        found = self.list(target, limit=1)
        return found[0] if found else None

    def for_size(self, size: int) -> list[AnchorRecord]:
        with self.db.transaction() as cur:
            cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM log_anchors WHERE size = ? ORDER BY target", (size,))
            return [_from_row(r) for r in cur.fetchall()]
