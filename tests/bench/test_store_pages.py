"""bench/store_pages: the WAL's frames counted by page and named by the b-tree owning each page."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from store_pages import frames_by_btree, wal_pages  # noqa: E402  (bench/ is scripts, not a package)


def test_frames_are_counted_per_page_and_named_by_their_btree(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE appended (n INTEGER PRIMARY KEY, body BLOB)")
    conn.execute("CREATE TABLE small (k TEXT PRIMARY KEY) WITHOUT ROWID")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for n in range(3):  # three commits: each writes the one page of `small` again
        conn.execute("BEGIN")
        conn.execute("INSERT INTO appended (body) VALUES (zeroblob(3000))")
        conn.execute("INSERT INTO small VALUES (?)", (f"k{n}",))
        conn.execute("COMMIT")
    pages = wal_pages((tmp_path / "t.db-wal").read_bytes())
    assert sum(pages.values()) == conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1], "every frame"
    named = frames_by_btree(conn, pages)
    assert named["small"] == 3, "one page, written by each commit"
    assert named["appended"] >= 3, "rows of 3,000 bytes: a new page at least every other commit, and the root"
    assert sum(named.values()) == sum(pages.values())
    conn.close()


def test_an_empty_or_missing_wal_has_no_frames() -> None:
    assert wal_pages(b"") == {}
