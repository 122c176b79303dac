"""The small database interface the log is written against, and its SQLite implementation.

The anchoring package imports no database driver beyond the standard library's ``sqlite3``:
PostgreSQL is provided by :mod:`bridge.db`, which implements the same :class:`Database` protocol.
SQL here is written once with ``?`` placeholders; an implementation translates if its driver
wants another style.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...
    def fetchone(self) -> tuple | None: ...
    def fetchall(self) -> list[tuple]: ...


class Database(Protocol):
    #: "sqlite" or "postgresql": selects DDL types and row locking.
    dialect: str

    def transaction(self, write: bool = False) -> Any:
        """A context manager yielding a :class:`Cursor`; commits on exit, rolls back on error.

        ``write=True`` takes the database's write lock up front (SQLite ``BEGIN IMMEDIATE``),
        so that a read-then-write transaction cannot be overtaken.
        """
        ...

    def close(self) -> None: ...


class SqliteDatabase:
    """SQLite in WAL mode with one connection per thread.

    ``synchronous=FULL`` because an acknowledged append must survive power loss, not only a
    process crash.
    """

    dialect = "sqlite"

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[sqlite3.Cursor]:
        conn = self._connection()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cur.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
