"""Open the project's database from a URL: SQLite (embedded default) or PostgreSQL.

Both implement :class:`anchoring.db.Database`; SQL everywhere is written with ``?`` placeholders
and translated here for psycopg.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

from anchoring.db import Database, SharedReads, SqliteDatabase

from .errors import DatabaseError


class _PgCursor:
    """A psycopg cursor that accepts ``?`` placeholders."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        return self._cursor.executemany(self._sql(sql), rows)

    def fetchone(self) -> tuple | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple]:
        return self._cursor.fetchall()

    def close(self) -> None:
        self._cursor.close()


class PostgresDatabase(SharedReads):
    """PostgreSQL through psycopg 3, one connection per thread."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        try:
            import psycopg  # imported here: SQLite deployments need no PostgreSQL driver
        except ImportError as exc:  # pragma: no cover - psycopg is a declared dependency
            raise DatabaseError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from exc
        self._psycopg = psycopg
        self.url = url
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            try:
                conn = self._psycopg.connect(self.url, autocommit=True)  # transactions are explicit
            except self._psycopg.OperationalError as exc:
                host = urlparse(self.url).hostname
                raise DatabaseError(
                    f"cannot connect to PostgreSQL at {host}: {exc}; check database_url and that the server runs"
                ) from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _open_shared(self) -> tuple[Any, Any]:
        conn = self._connection()
        transaction = conn.transaction()
        transaction.__enter__()
        # one snapshot for every statement (read committed would take one per statement); read only,
        # so a write slipped into a read fails instead of riding on it
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return conn, transaction

    def _close_shared(self, shared: tuple[Any, Any], error: BaseException | None) -> None:
        # with the error, psycopg rolls back (a failed statement has aborted the transaction)
        shared[1].__exit__(type(error) if error else None, error, error.__traceback__ if error else None)

    def _cursor_of(self, shared: tuple[Any, Any]) -> _PgCursor:
        return _PgCursor(shared[0].cursor())

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[_PgCursor]:
        with self._in_shared(write) as shared:
            if shared is not None:
                yield shared
                return
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            yield _PgCursor(cur)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def open_database(url: str) -> Database:
    """``sqlite:///relative/or//absolute/path`` or ``postgresql://...``."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise DatabaseError(f"database URL {url!r}: expected sqlite:///PATH")
        return SqliteDatabase(path)
    if parsed.scheme in ("postgresql", "postgres"):
        return PostgresDatabase(url)
    raise DatabaseError(f"database URL {url!r}: expected a sqlite:/// or postgresql:// URL")
