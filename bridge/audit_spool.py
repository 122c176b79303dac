"""A write-ahead spool for AuditEvents: durable before the response, stored and logged in batches.

A partner read may not be answered before its AuditEvent is durable.  Storing the event as a version
(version row, current row, search and date rows, log queue entry: a dozen b-tree pages) under the
database's one write lock, one commit per request, cost more than the read itself.  So each API
process appends its events to a file of its own (:class:`AuditSpool`; the requests waiting at the
same moment share one ``fdatasync``), and :class:`SpoolFolder` stores what the files hold as
versions, many to a transaction: `serve` every ``audit_fold_interval`` seconds, and an ``AuditEvent``
read or search first, so the patient's party sees every access up to its own request.

A file is framed records, each ``length (4 bytes) | CRC-32 (4 bytes) | JSON`` (what the event is
built from: :func:`bridge.audit.spool_record`), written in order into space the file was first
filled with zeros for: an ``fdatasync`` that does not change the file's size or extents commits no
file-system journal, which made it about 40% cheaper and faster here.  A record cut short (zeros where
the rest of it should be, JSON holding no NUL byte) can only be the last one of a process that died
while writing it, whose request was therefore never answered; a record failing its CRC with its
bytes all there is damage.  The owning process holds an exclusive ``flock`` on its file:
a folder deletes a file only once it holds that lock (the owner is gone, or rotated to a new file)
and has stored everything in it.  Folding is idempotent (an event whose id is stored is skipped), so
two folders, or a fold repeated after a crash, store every event exactly once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from anchoring.db import Cursor, Database

from .audit import event_from_record, prepare
from .store import ResourceStore, new_version

log = logging.getLogger("fhir_bridge.audit")

SUFFIX = ".spool"
ROTATE_BYTES = 4 * 1024 * 1024  # a new file after this much, so folded files can be deleted
PREALLOCATE_BYTES = 1024 * 1024  # zeros written ahead of the records, this much at a time
_HEADER = struct.Struct(">II")  # payload length, CRC-32 of the payload
_FOLD_CHUNK = 500  # events per fold transaction


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(data: bytes) -> tuple[list[bytes], int, bool]:
    """The whole records at the start of ``data``: their payloads, the bytes they span, and whether
    a damaged record stopped the reading (one not yet wholly written is not damage: it may still be
    being written, or its process died inside the write)."""
    payloads: list[bytes] = []
    at, size = 0, len(data)
    while at + _HEADER.size <= size:
        length, crc = _HEADER.unpack_from(data, at)
        end = at + _HEADER.size + length
        if length == 0 or end > size:  # the zeros written ahead, or a record cut short by the file's end
            return payloads, at, not unwritten(data, at)
        payload = data[at + _HEADER.size : end]
        if zlib.crc32(payload) != crc:
            return payloads, at, not unwritten(data, at)
        payloads.append(payload)
        at = end
    return payloads, at, False


def unwritten(data: bytes, at: int) -> bool:
    """Whether ``data[at:]`` is at most the start of one record, then zeros to the end: space not
    yet written, or a write cut short.  (A payload is JSON, which holds no NUL byte, so its
    written part ends where the zeros begin; a whole record failing its CRC is damage.)"""
    written = data[at:].rstrip(b"\0")
    if len(written) < _HEADER.size:
        return True
    length, _ = _HEADER.unpack_from(written)
    return _HEADER.size + length > len(written) and b"\0" not in written[_HEADER.size :]


def spool_directory(data_dir: Path) -> Path:
    return data_dir / "audit-spool"


@dataclass
class _Pending:
    payload: bytes
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    lead: bool = False  # woken to write the next batch, not because its own record is durable


class AuditSpool:
    """This process's spool file, appended with group commit.

    No thread of its own: one waiting request leads, writes every pending record and syncs once,
    then hands the lead to the oldest request that arrived meanwhile; each returns only once its own
    record is durable.  Opened on first use in the process that uses it (a forked child opens its
    own file rather than writing into its parent's)."""

    def __init__(self, directory: Path, rotate_bytes: int = ROTATE_BYTES, max_batch: int = 256) -> None:
        self.directory, self.rotate_bytes, self.max_batch = directory, rotate_bytes, max_batch
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._leading = False
        self._fd: int | None = None
        self._owner = 0  # the pid that opened _fd
        self._size = 0  # bytes of records written
        self._allocated = 0  # bytes of the file (records, then zeros written ahead)
        self.path: Path | None = None

    def append(self, payload: bytes) -> None:
        """Return once ``payload`` is on disk (raises OSError if it could not be written)."""
        item = _Pending(payload)
        with self._lock:
            self._pending.append(item)
            lead = not self._leading
            self._leading = True
        if not lead:
            item.done.wait()
            lead = item.lead
        if lead:
            self._write_batch()
        if item.error is not None:
            raise item.error

    def _write_batch(self) -> None:
        with self._lock:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        try:
            self._write(b"".join(frame(item.payload) for item in batch))
        except BaseException as exc:  # every waiting request learns that its record is not durable
            for item in batch:
                item.error = exc
        with self._lock:
            if self._pending:
                self._pending[0].lead = True  # it wakes up and writes the next batch
                self._pending[0].done.set()
            else:
                self._leading = False
        for item in batch:
            item.done.set()

    def _write(self, data: bytes) -> None:
        fd = self._file()
        end = self._size + len(data)
        try:
            if end > self._allocated:
                self._allocate(fd, end)
            _pwrite_all(fd, data, self._size)
            os.fdatasync(fd)
        except OSError:
            os.ftruncate(fd, self._size)  # a partial record must not hide the records written after it
            self._allocated = self._size
            raise
        self._size = end
        if self._size >= self.rotate_bytes:
            self.close()  # releases the lock: folders delete the file once it is stored

    def _allocate(self, fd: int, end: int) -> None:
        """Zeros up to the next PREALLOCATE_BYTES boundary past ``end``: written, not fallocate()d,
        whose unwritten extents would make every later fdatasync a journal commit again.  Made
        durable by the fdatasync of the record that needed them."""
        step = min(PREALLOCATE_BYTES, self.rotate_bytes)
        target = -(-end // step) * step
        _pwrite_all(fd, bytes(target - self._allocated), self._allocated)
        self._allocated = target

    def _file(self) -> int:
        if self._fd is not None and self._owner == os.getpid():
            return self._fd
        if self._fd is not None:  # inherited through fork: the parent's file; our copy would keep its
            os.close(self._fd)  # lock held after the parent exits (the parent's own copy keeps it)
        self._fd = None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        # Made and locked under another name, then renamed: a folder never sees the file unlocked
        # (it would take it for a finished one, and delete it).
        making = path.with_name(path.name + ".new")
        fd = os.open(making, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, path)
        _sync_directory(self.directory)  # the file's name is as durable as what is written in it
        self._fd, self._owner, self._size, self._allocated, self.path = fd, os.getpid(), 0, 0, path
        return fd

    def close(self) -> None:
        if self._fd is not None and self._owner == os.getpid():
            os.close(self._fd)
        self._fd, self.path = None, None


def spool_state(directory: Path) -> dict[str, int]:
    """What ``/health`` shows: spool files, their bytes (stored events and the zeros written ahead
    included: a file goes once its process has moved on after ROTATE_BYTES) and files kept aside as
    damaged.  More bytes than the API processes times ROTATE_BYTES + PREALLOCATE_BYTES, or any
    damaged file, means the store job is behind or failing."""
    files = size = damaged = 0
    if directory.is_dir():
        for entry in os.scandir(directory):
            if entry.name.endswith(SUFFIX):
                files, size = files + 1, size + entry.stat().st_size
            elif entry.name.endswith(SUFFIX + ".damaged"):
                damaged += 1
    return {"files": files, "bytes": size, "damaged": damaged}


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolFolder:
    """Stores spooled AuditEvents as versions (their leaves queued in the same transaction)."""

    def __init__(self, directory: Path, db: Database, store: ResourceStore) -> None:
        self.directory, self.db, self.store = directory, db, store
        self._folded: dict[str, int] = {}  # file name -> bytes of it known stored
        self._damaged_at: dict[str, int] = {}  # file name -> where the last fold found a bad record
        self._lock = threading.Lock()  # one fold at a time in this process

    def fold(self) -> int:
        """Store every complete record of every spool file; returns how many events were new."""
        with self._lock:
            if not self.directory.is_dir():
                return 0
            for making in self.directory.glob(f"*{SUFFIX}.new"):  # a process died while making it
                _remove_if_let_go(making)
            names = sorted(p.name for p in self.directory.glob("*" + SUFFIX))
            for gone in set(self._folded) - set(names):
                del self._folded[gone]
            for gone in set(self._damaged_at) - set(names):
                del self._damaged_at[gone]
            return sum(self._fold_file(self.directory / name) for name in names)

    def _fold_file(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # deleted by another folder
            self._folded.pop(path.name, None)
            return 0
        try:
            # The owner's lock first: once it is ours nothing more is appended, so what is read now
            # is all the file will ever hold.
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                finished = True
            except BlockingIOError:
                finished = False
            start = self._folded.get(path.name, 0)
            os.lseek(fd, start, os.SEEK_SET)
            data = _read_all(fd)
            payloads, length, damaged = read_frames(data)
            stored = self._store(path.name, payloads)
            self._folded[path.name] = start + length
            if finished:
                self._finish(path, damaged, len(data[length:].rstrip(b"\0")))
            elif damaged and self._damaged_at.get(path.name) == start + length:
                # Seen at the same place twice: a reader behind the writer can see a record's later
                # page written and its first not yet, once.
                log.error("audit spool %s: damaged record at byte %d; the rest of the file waits",
                          path.name, start + length)
            if damaged and not finished:
                self._damaged_at[path.name] = start + length
            else:
                self._damaged_at.pop(path.name, None)
            return stored
        finally:
            os.close(fd)

    def _finish(self, path: Path, damaged: bool, left: int) -> None:
        """A file whose process has let go, everything readable in it stored: deleted, unless a
        record fails its CRC (what follows it cannot be read safely), then kept aside for an
        operator; an incomplete last record is what a process killed inside write() leaves."""
        self._folded.pop(path.name, None)
        if damaged:
            aside = path.with_name(path.name + ".damaged")
            path.rename(aside)
            log.error("audit spool %s: a damaged record with %d bytes after it; kept as %s for inspection",
                      path.name, left, aside.name)
            return
        if left:
            log.warning("audit spool %s: %d bytes at its end are not a whole record (its process stopped "
                        "while writing them; that request was not answered)", path.name, left)
        path.unlink(missing_ok=True)

    def _store(self, name: str, payloads: list[bytes]) -> int:
        stored = 0
        for at in range(0, len(payloads), _FOLD_CHUNK):
            events = [event_from_record(p) for p in payloads[at : at + _FOLD_CHUNK]]
            # What another folder stored is not made again (a new process reads other files from 0).
            with self.db.transaction() as cur:
                present = self._present(cur, [e["id"] for e in events])
            versions = [new_version(e, prepare(e), e["recorded"]) for e in events if e["id"] not in present]
            if not versions:
                continue
            with self.db.transaction(write=True) as cur:  # the versions were made outside the lock
                if self.db.dialect == "postgresql":  # folders of one file take turns
                    self.store.lock(cur, [("AuditSpool", name)])
                present = self._present(cur, [v.res_id for v in versions])
                new = [v for v in versions if v.res_id not in present]
                self.store.put_new(cur, new)
            stored += len(new)
        return stored

    @staticmethod
    def _present(cur: Cursor, ids: list[str]) -> set[str]:
        cur.execute(f"SELECT res_id FROM resource_current WHERE res_type = 'AuditEvent' "
                    f"AND res_id IN ({', '.join('?' * len(ids))})", ids)
        return {row[0] for row in cur.fetchall()}


def _remove_if_let_go(path: Path) -> None:
    """Delete a file no process holds the lock of (nothing is written to a file before it is renamed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except BlockingIOError:  # being made right now
        pass
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
