"""Sync state in the project database (SQLite or PostgreSQL, ``?`` placeholders).

* ``fhir_sync_watermarks``: per source and resource type, the ``_lastUpdated`` watermark (REST) and,
  under the type ``*bulk*``, the ``transactionTime`` of the last complete export (the next ``_since``).
* ``fhir_bulk_jobs``: the export in progress per source: its status URL and, once complete, its manifest.
* ``fhir_bulk_files``: per output file, the byte offset and line count committed so far.  The offset is
  updated in the same transaction as the resources of those lines, so a resumed download starts
  exactly after the last committed line: nothing is lost or stored twice.
* ``fhir_sync_locks``: who is syncing a source now (the scheduler in `serve`, or `fhir-bridge sync`),
  so that two processes never download the same export at once; a lock expires if its owner died.
* ``fhir_sync_runs``: one row per sync: counts and the faults met, for `fhir-bridge sync --status`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from anchoring.db import Cursor, Database

BULK = "*bulk*"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fhir_sync_watermarks (
    source TEXT NOT NULL,
    res_type TEXT NOT NULL,
    watermark TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source, res_type)
);
CREATE TABLE IF NOT EXISTS fhir_bulk_jobs (
    source TEXT PRIMARY KEY,
    status_url TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    manifest TEXT
);
CREATE TABLE IF NOT EXISTS fhir_bulk_files (
    source TEXT NOT NULL,
    url TEXT NOT NULL,
    res_type TEXT NOT NULL,
    byte_offset {bigint} NOT NULL,
    lines {bigint} NOT NULL,
    done INTEGER NOT NULL,
    PRIMARY KEY (source, url)
);
CREATE TABLE IF NOT EXISTS fhir_sync_locks (
    source TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires {double} NOT NULL
);
CREATE TABLE IF NOT EXISTS fhir_sync_runs (
    source TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    report TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class BulkJob:
    status_url: str
    requested_at: str
    manifest: dict | None


@dataclass(frozen=True)
class BulkFile:
    url: str
    res_type: str
    byte_offset: int
    lines: int
    done: bool


class SyncState:
    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure_schema(self) -> None:
        pg = self.db.dialect == "postgresql"
        types = {"bigint": "BIGINT" if pg else "INTEGER", "double": "DOUBLE PRECISION" if pg else "REAL"}
        with self.db.transaction(write=True) as cur:
            for statement in _SCHEMA.format(**types).split(";"):
                cur.execute(statement)

    # -- watermarks
    def watermark(self, source: str, res_type: str) -> str | None:
        with self.db.transaction() as cur:
            cur.execute("SELECT watermark FROM fhir_sync_watermarks WHERE source = ? AND res_type = ?", (source, res_type))
            row = cur.fetchone()
        return None if row is None else row[0]

    def watermarks(self, source: str) -> dict[str, str]:
        with self.db.transaction() as cur:
            cur.execute("SELECT res_type, watermark FROM fhir_sync_watermarks WHERE source = ?", (source,))
            return {r[0]: r[1] for r in cur.fetchall()}

    @staticmethod
    def set_watermark(cur: Cursor, source: str, res_type: str, watermark: str, now: str) -> None:
        cur.execute("DELETE FROM fhir_sync_watermarks WHERE source = ? AND res_type = ?", (source, res_type))
        cur.execute("INSERT INTO fhir_sync_watermarks (source, res_type, watermark, updated_at) VALUES (?, ?, ?, ?)",
                    (source, res_type, watermark, now))

    def reset(self, source: str) -> None:
        """Forget watermarks and any export in progress: the next sync is a full one."""
        with self.db.transaction(write=True) as cur:
            for table in ("fhir_sync_watermarks", "fhir_bulk_jobs", "fhir_bulk_files"):
                cur.execute(f"DELETE FROM {table} WHERE source = ?", (source,))

    # -- bulk export
    def bulk_job(self, source: str) -> BulkJob | None:
        with self.db.transaction() as cur:
            cur.execute("SELECT status_url, requested_at, manifest FROM fhir_bulk_jobs WHERE source = ?", (source,))
            row = cur.fetchone()
        return None if row is None else BulkJob(row[0], row[1], json.loads(row[2]) if row[2] else None)

    def start_bulk_job(self, source: str, status_url: str, now: str) -> None:
        with self.db.transaction(write=True) as cur:
            cur.execute("DELETE FROM fhir_bulk_jobs WHERE source = ?", (source,))
            cur.execute("DELETE FROM fhir_bulk_files WHERE source = ?", (source,))
            cur.execute("INSERT INTO fhir_bulk_jobs (source, status_url, requested_at) VALUES (?, ?, ?)",
                        (source, status_url, now))

    def set_manifest(self, source: str, manifest: dict, files: list[tuple[str, str]]) -> None:
        with self.db.transaction(write=True) as cur:
            cur.execute("UPDATE fhir_bulk_jobs SET manifest = ? WHERE source = ?", (json.dumps(manifest), source))
            for url, res_type in files:
                cur.execute("INSERT INTO fhir_bulk_files (source, url, res_type, byte_offset, lines, done) "
                            "VALUES (?, ?, ?, 0, 0, 0) ON CONFLICT DO NOTHING", (source, url, res_type))

    def bulk_files(self, source: str) -> list[BulkFile]:
        with self.db.transaction() as cur:
            cur.execute("SELECT url, res_type, byte_offset, lines, done FROM fhir_bulk_files WHERE source = ? "
                        "ORDER BY res_type, url", (source,))
            return [BulkFile(r[0], r[1], int(r[2]), int(r[3]), bool(r[4])) for r in cur.fetchall()]

    @staticmethod
    def advance_file(cur: Cursor, source: str, url: str, byte_offset: int, lines: int, done: bool) -> None:
        cur.execute("UPDATE fhir_bulk_files SET byte_offset = ?, lines = ?, done = ? WHERE source = ? AND url = ?",
                    (byte_offset, lines, int(done), source, url))

    def finish_bulk_job(self, source: str, transaction_time: str | None, now: str) -> None:
        with self.db.transaction(write=True) as cur:
            if transaction_time:
                self.set_watermark(cur, source, BULK, transaction_time, now)
            cur.execute("DELETE FROM fhir_bulk_jobs WHERE source = ?", (source,))
            cur.execute("DELETE FROM fhir_bulk_files WHERE source = ?", (source,))

    def drop_bulk_job(self, source: str) -> None:
        with self.db.transaction(write=True) as cur:
            cur.execute("DELETE FROM fhir_bulk_jobs WHERE source = ?", (source,))
            cur.execute("DELETE FROM fhir_bulk_files WHERE source = ?", (source,))

    # -- one sync per source at a time, across processes
    def claim(self, source: str, owner: str, now: float, ttl: float) -> str | None:
        """Take the source's lock; returns None, or the owner holding it now."""
        with self.db.transaction(write=True) as cur:
            cur.execute("DELETE FROM fhir_sync_locks WHERE source = ? AND expires < ?", (source, now))
            cur.execute("INSERT INTO fhir_sync_locks (source, owner, expires) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                        (source, owner, now + ttl))
            cur.execute("SELECT owner FROM fhir_sync_locks WHERE source = ?", (source,))
            row = cur.fetchone()
        return None if row is None or row[0] == owner else row[0]

    def release(self, source: str, owner: str) -> None:
        with self.db.transaction(write=True) as cur:
            cur.execute("DELETE FROM fhir_sync_locks WHERE source = ? AND owner = ?", (source, owner))

    # -- runs
    def record_run(self, source: str, started: str, finished: str, mode: str, status: str, report: dict) -> None:
        with self.db.transaction(write=True) as cur:
            cur.execute("INSERT INTO fhir_sync_runs (source, started_at, finished_at, mode, status, report) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (source, started, finished, mode, status, json.dumps(report)))

    def runs(self, source: str, limit: int = 10) -> list[dict]:
        with self.db.transaction() as cur:
            cur.execute("SELECT started_at, finished_at, mode, status, report FROM fhir_sync_runs WHERE source = ? "
                        "ORDER BY started_at DESC LIMIT ?", (source, limit))
            return [{"started_at": r[0], "finished_at": r[1], "mode": r[2], "status": r[3], **json.loads(r[4])}
                    for r in cur.fetchall()]
