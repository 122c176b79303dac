"""SQLite connection settings (anchoring.db.SqliteDatabase): durable commits, checkpoints spaced out."""

from __future__ import annotations

import os
import threading

from anchoring.db import SqliteDatabase


def _settings(db: SqliteDatabase) -> dict[str, object]:
    with db.transaction() as cur:
        return {name: cur.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "wal_autocheckpoint", "journal_size_limit")}


def test_every_connection_is_wal_full_sync_with_spaced_checkpoints(tmp_path):
    db = SqliteDatabase(tmp_path / "s.db")
    expected = {"journal_mode": "wal", "synchronous": 2, "wal_autocheckpoint": SqliteDatabase.WAL_AUTOCHECKPOINT,
                "journal_size_limit": SqliteDatabase.JOURNAL_SIZE_LIMIT}
    assert _settings(db) == expected
    found: list[dict] = []
    thread = threading.Thread(target=lambda: found.append(_settings(db)))  # a connection of its own
    thread.start()
    thread.join()
    assert found == [expected]
    db.close()


def test_a_commit_of_more_than_a_thousand_pages_is_not_checkpointed_at_once(tmp_path):
    """SQLite's default checkpoints once the WAL passes 1,000 pages, which an ingest group's
    scattered index pages reach at nearly every commit; here the WAL keeps them until 16,384."""
    db = SqliteDatabase(tmp_path / "s.db")
    with db.transaction(write=True) as cur:
        cur.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB)")
    with db.transaction(write=True) as cur:
        cur.executemany("INSERT INTO t VALUES (?, ?)", ((os.urandom(16), os.urandom(400)) for _ in range(12000)))
    wal_pages = os.path.getsize(f"{tmp_path / 's.db'}-wal") // 4096
    assert 1000 < wal_pages < SqliteDatabase.WAL_AUTOCHECKPOINT
    assert os.path.getsize(tmp_path / "s.db") < 100 * 4096, "not yet copied into the database file"
    with db.transaction() as cur:
        assert cur.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 12000
    db.close()
