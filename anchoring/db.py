"""The small database interface the log is written against, and its SQLite implementation.

The anchoring package imports no database driver beyond the standard library's ``sqlite3``:
PostgreSQL is provided by :mod:`bridge.db`, which implements the same :class:`Database` protocol.
SQL here is written once with ``?`` placeholders; an implementation translates if its driver
wants another style.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's own busy waiting only
    fcntl = None  # type: ignore[assignment]


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

    def begin_shared_read(self) -> None:
        """Until :meth:`end_shared_read`, this thread's read transactions are one (see SharedReads)."""
        ...

    def end_shared_read(self, error: BaseException | None = None) -> None: ...

    def close(self) -> None: ...


class SharedReads:
    """One read transaction for every read a thread makes between :meth:`begin_shared_read` and
    :meth:`end_shared_read`: a partner request reads its token, the resource and the patient's
    consents in one snapshot with one BEGIN and COMMIT instead of three.

    A write transaction on the thread ends the shared read first (a read snapshot cannot safely be
    upgraded); so does an error inside a read, so that a failed statement cannot poison later ones.
    Subclasses keep ``self._local`` (thread-local) and implement ``_open_shared`` / ``_close_shared``.
    """

    _local: threading.local

    def begin_shared_read(self) -> None:
        if getattr(self._local, "shared", None) is None:
            self._local.shared = self._open_shared()

    def end_shared_read(self, error: BaseException | None = None) -> None:
        shared = getattr(self._local, "shared", None)
        if shared is not None:
            self._local.shared = None
            self._close_shared(shared, error)

    @contextmanager
    def _in_shared(self, write: bool) -> Iterator[Any]:
        """A fresh cursor of the shared read transaction for a read, else None (a write ends it)."""
        shared = getattr(self._local, "shared", None)
        if shared is not None and write:
            self.end_shared_read()
        if shared is None or write:
            yield None
            return
        cursor = self._cursor_of(shared)
        try:
            yield cursor
        except BaseException as exc:
            self.end_shared_read(exc)
            raise
        finally:
            cursor.close()

    def _open_shared(self) -> Any:
        raise NotImplementedError

    def _close_shared(self, shared: Any, error: BaseException | None) -> None:
        raise NotImplementedError

    def _cursor_of(self, shared: Any) -> Any:
        raise NotImplementedError


class SqliteDatabase(SharedReads):
    """SQLite in WAL mode with one connection per thread.

    ``synchronous=FULL`` because an acknowledged append must survive power loss, not only a
    process crash.

    Write transactions of every process using this class first take an ``flock`` on
    ``<path>-writelock``: a writer waiting for another one then wakes as soon as it commits, where
    SQLite's busy handler would sleep and retry (1 ms growing to 100 ms between tries), which under
    concurrent writers from several processes (gunicorn workers, the sequencer) left the lock idle
    most of the time.  SQLite's own locking still guards writers that do not take it.

    The WAL is checkpointed every WAL_AUTOCHECKPOINT pages, not SQLite's 1,000: an ingest group
    writes hundreds of index pages (random ids and search values), so at 1,000 nearly every commit
    also copied the WAL into the database; less often, a page written by many commits is copied
    once (see the README's ingest figures).  JOURNAL_SIZE_LIMIT then bounds the file left behind.
    """

    dialect = "sqlite"
    WAL_AUTOCHECKPOINT = 16384  # pages: 64 MiB of 4 KiB pages
    JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._fds: list[int] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA wal_autocheckpoint={self.WAL_AUTOCHECKPOINT}")
            conn.execute(f"PRAGMA journal_size_limit={self.JOURNAL_SIZE_LIMIT}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _write_lock(self) -> int | None:
        """This thread's descriptor of the lock file (flock locks belong to an open file, so one per
        thread makes the threads of one process exclude each other too)."""
        if fcntl is None or self.path == ":memory:" or self.path.startswith("file:"):
            return None
        owner = getattr(self._local, "lock_owner", None)
        if owner is None or owner[0] != os.getpid():
            # a forked child must not share its parent's open file, or their flocks would not exclude
            owner = (os.getpid(), os.open(self.path + "-writelock", os.O_RDWR | os.O_CREAT, 0o600))
            self._local.lock_owner = owner
            with self._lock:
                self._fds.append(owner[1])
        return owner[1]

    def _open_shared(self) -> tuple[sqlite3.Connection, int]:
        conn = self._connection()
        conn.execute("BEGIN DEFERRED")
        # (PRAGMA query_only would guard against writes, but toggling it expires every prepared statement)
        return conn, conn.total_changes

    def _close_shared(self, shared: tuple[sqlite3.Connection, int], error: BaseException | None) -> None:
        conn, changes = shared
        if error is None and conn.total_changes == changes:
            conn.commit()  # nothing was written: this only ends the snapshot
            return
        conn.rollback()
        if error is None:
            raise sqlite3.OperationalError("a write inside a shared read (readonly): use transaction(write=True); "
                                           "it was rolled back")

    def _cursor_of(self, shared: tuple[sqlite3.Connection, int]) -> sqlite3.Cursor:
        return shared[0].cursor()

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[sqlite3.Cursor]:
        with self._in_shared(write) as shared:
            if shared is not None:
                yield shared
                return
        conn = self._connection()
        lock = self._write_lock() if write else None
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # blocks without polling; released below, after the commit
        try:
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
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
        self._local = threading.local()
