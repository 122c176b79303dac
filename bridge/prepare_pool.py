"""Converting and validating in worker processes, so ingest uses every core.

Conversion and FHIR validation are pure computing and dominate ingest; in one process they share
the interpreter lock with the listener and the database writes.  A :class:`PreparePool` runs
:func:`bridge.pipeline.prepare` in ``workers`` processes (started with ``spawn``: the parent runs
threads, which must not be forked), each loading the mappings once.  The parent keeps all I/O.

Each worker has a pipe of its own.  A call takes the idle workers (waiting for one if none is),
sends each a slice of the group in one message and reads back one answer per worker: two pipe
messages per worker and group, written and read by the calling thread itself.  (With a
``ProcessPoolExecutor`` its feeder and manager threads, futures and wake-ups took about 0.2 ms of
the parent's CPU a message, as much of the interpreter lock as storing the versions; this takes
0.06 ms.)  :meth:`PreparePool.submit` sends a whole group to one worker instead and hands back a call
that hands out its answer, so that each worker converts a group of its own while the caller goes
on: a worker's CPU a message grows as its share shrinks (measured with one worker fed alone, slices
of 6 cost 1.5-1.7 ms a message, of 96 1.1-1.3), and ingest's groups are small.  Answers are handed
out in the order the groups were submitted, but :meth:`PreparePool.wait_idle` reads each as soon as
its worker has finished, so that a worker takes the next group at once instead of waiting for the
groups before its own to be stored.  What crosses is
plain data in :mod:`marshal` form: lists of raw bytes one way; per message the canonical resources
as tuples, the error as a tuple, unmapped and warnings the other way (``pickle`` if marshal cannot
write a value).  A worker that dies or answers garbage is replaced and the call raises, so that
the pipeline converts that group in its own process; nothing is lost either way.
"""

from __future__ import annotations

import marshal
import multiprocessing
import os
import pickle
import queue
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from .errors import ConfigError, IngestError
from .heap import settle_heap
from .hl7.types import Conversion, HL7Error
from .pipeline import Prepared, prepare
from .store import CanonicalResource

_MARSHAL, _PICKLE, _FAILED = b"m", b"p", b"e"  # the first byte of an answer says how to read the rest
# what reading an answer raises when the worker died or is out of step: it is replaced
_BROKEN = (EOFError, OSError, ValueError, TypeError, pickle.UnpicklingError)

# One message as it crosses: (canonical resources as tuples, error as a tuple or None, unmapped,
# warnings).  HL7Error does not survive pickling (its constructor takes four arguments).  Resources
# cross in their canonical form only: that is all the parent stores.
_Shipped = tuple[list[tuple], tuple[str, str, str, str] | None, list[str], list[str]]


def _ship(p: Prepared) -> _Shipped:
    error = None if p.error is None else (p.error.code, p.error.location, p.error.text, p.error.severity)
    canonical = [tuple(c) for c in p.canonical]  # plain tuples: marshal writes no subclass
    return canonical, error, p.unmapped, p.warnings


def _unship(shipped: Sequence[Any]) -> Prepared:
    canonical, error, unmapped, warnings = shipped
    return Prepared([], None if error is None else HL7Error(*error), list(unmapped), list(warnings),
                    [CanonicalResource._make(c) for c in canonical])


def _encode(answer: list[_Shipped]) -> bytes:
    try:
        return _MARSHAL + marshal.dumps(answer)
    except ValueError:  # a value marshal cannot write (not plain data): pickle writes it
        return _PICKLE + pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)


def _decode(data: bytes) -> list:
    kind, body = data[:1], memoryview(data)[1:]
    if kind == _MARSHAL:
        return marshal.loads(body)
    if kind == _PICKLE:
        return pickle.loads(body)
    if kind == _FAILED:
        raise IngestError(f"a conversion worker failed: {bytes(body).decode('utf-8', 'replace')}")
    raise IngestError(f"a conversion worker answered {bytes(data[:16])!r}")


def _serve(conn: Any, override_dir: str | None, id_key_file: Path | None) -> None:
    """A worker's life: load the mappings (and the resource-id key, from its file: the key itself is
    not sent), then answer each list of raw messages until the pipe closes."""
    from .convert import convert, load_mappings
    from .id_key import read_id_key

    mappings = load_mappings(override_dir or None)
    id_key = read_id_key(id_key_file) if id_key_file else None

    def run(raw: bytes) -> Conversion:
        return convert(raw, mappings, id_key)

    settle_heap()  # the mappings and models are kept for the worker's life
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):  # the parent closed the pipe (or died): stop
            return
        try:
            answer = _encode([_ship(prepare(raw, run)) for raw in marshal.loads(request)])
        except Exception as exc:  # prepare does not raise; this keeps the worker alive all the same
            answer = _FAILED + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")
        try:
            conn.send_bytes(answer)
        except OSError:
            return


class _Worker:
    def __init__(self, context: Any, override_dir: str | None, id_key_file: Path | None) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_serve, args=(child, override_dir, id_key_file),
                                       name="fhir-bridge-prepare", daemon=True)
        self.process.start()
        child.close()  # the child's end lives in the child: EOF reaches us if it dies

    def stop(self, wait: float = 5.0) -> None:
        self.conn.close()
        self.process.join(wait)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(wait)


class _Pending:
    """A group a worker is converting: its answer is read once, by whichever comes first, the
    store stage wanting it or :meth:`PreparePool.wait_idle` seeing it ready; either way the worker is
    then idle again (or replaced, if it died)."""

    def __init__(self, pool: PreparePool, worker: _Worker) -> None:
        self.pool, self.worker = pool, worker
        self.read = False
        self._lock = threading.Lock()
        self._shipped: list = []
        self._error: IngestError | None = None

    def collect(self) -> None:
        """Read the answer unless it was read already (the worker is idle, or replaced, after it)."""
        with self._lock:
            if not self.read:
                self._receive()
                self.read = True
                with self.pool._lock:
                    self.pool._unread.remove(self)

    def answer(self) -> list:
        """The answer as shipped (read now if nobody has); IngestError if the worker failed."""
        self.collect()
        if self._error is not None:
            raise self._error
        return self._shipped

    def _receive(self) -> None:
        worker, pool = self.worker, self.pool
        try:
            self._shipped = _decode(worker.conn.recv_bytes())
        except IngestError as exc:  # the worker said it failed: it is alive and in step
            self._error = IngestError(f"conversion workers failed ({exc})")
        except _BROKEN as exc:
            self._error = IngestError(f"conversion workers failed ({type(exc).__name__}: {exc})")
            pool._replace(worker)
            return
        pool._now_idle(worker)


class PreparePool:
    """``workers`` processes converting and validating; call it with a group of raw messages."""

    def __init__(self, workers: int, override_dir: str | None = None, id_key_file: Path | None = None) -> None:
        if workers < 1:
            raise ConfigError(f"ingest_workers is {workers}: a pool of conversion workers needs at least one")
        self.workers, self._override_dir, self._id_key_file = workers, override_dir, id_key_file
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()  # None: closed, wake up
        self._all: list[_Worker] = []
        self._closed = False
        self._unread: list[_Pending] = []  # groups submitted whose answers nobody has read yet
        # written whenever a worker becomes idle or the pool closes: wakes wait_idle out of its wait
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        for _ in range(workers):
            self._idle.put(self._start())

    def _start(self) -> _Worker:
        worker = _Worker(self._context, self._override_dir, self._id_key_file)
        with self._lock:
            self._all.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> None:
        """Stop a worker that failed and start another in its place (unless the pool is closed)."""
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            closed = self._closed
        worker.stop(wait=1.0)
        if not closed:
            self._now_idle(self._start())

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (to measure their CPU, or to watch them)."""
        with self._lock:
            return [w.process.pid for w in self._all if w.process.pid is not None]

    def _take(self, wanted: int) -> list[_Worker]:
        """One worker (waiting for it), then any other idle ones, up to ``wanted``; IngestError once
        the pool is closed, also for a caller that was waiting when it closed."""
        first = None if self._closed else self._idle.get()
        if first is None or self._closed:
            self._idle.put(None)  # the next waiter wakes up too
            raise IngestError("the conversion workers are stopped")
        taken = [first]
        while len(taken) < wanted:
            try:
                found = self._idle.get_nowait()
            except queue.Empty:
                break
            if found is None:
                self._idle.put(None)
                break
            taken.append(found)
        return taken

    def _now_idle(self, worker: _Worker | None) -> None:
        self._idle.put(worker)
        with self._lock:  # not once close has closed it: the number may be another file's by then
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"\0")
                except BlockingIOError:  # full: wait_idle wakes all the same
                    pass

    def wait_idle(self) -> None:
        """Return once a worker is idle (or the pool is closed).  A worker that has finished its
        group is made idle here by reading its answer now, so that it takes the next group while the
        one before is stored rather than once the store stage asks for its answer."""
        while self._idle.empty():
            with self._lock:
                unread = [p for p in self._unread if not p.read]
                wake = self._wake_r
            if wake < 0:
                return  # closed
            waiting = {p.worker.conn: p for p in unread}
            try:
                ready = wait([*waiting, wake])
            except (OSError, ValueError):  # a pipe closed under us: the pool is closing
                return
            for conn in ready:
                if conn == wake:
                    with self._lock:  # still ours (close swaps it out under the lock first)
                        if self._wake_r == wake:
                            try:
                                os.read(wake, 4096)
                            except BlockingIOError:  # drained meanwhile
                                pass
                else:
                    waiting[conn].collect()

    def submit(self, raws: Sequence[bytes]) -> Callable[[], list[Prepared]]:
        """Send all of ``raws`` to one worker (waiting for one to be idle); the call returned hands out
        its answer, once, reading it if :meth:`wait_idle` has not, and raises IngestError if the
        worker failed.  The worker is busy until its answer is read."""
        worker = self._take(1)[0]
        try:
            worker.conn.send_bytes(marshal.dumps(list(raws)))
        except (OSError, ValueError) as exc:
            self._replace(worker)
            raise IngestError(f"conversion workers failed ({type(exc).__name__}: {exc})") from exc
        pending = _Pending(self, worker)
        with self._lock:
            self._unread.append(pending)
        asked = threading.Lock()  # a second call finds it taken: the answer was handed out already

        def answer() -> list[Prepared]:
            if not asked.acquire(blocking=False):
                raise IngestError("this group's answer was read already")
            shipped = pending.answer()
            if len(shipped) != len(raws):
                raise IngestError(f"the conversion workers answered {len(shipped)} of {len(raws)} messages")
            return [_unship(a) for a in shipped]

        return answer

    def __call__(self, raws: Sequence[bytes]) -> list[Prepared]:
        if not raws:
            return []
        taken = self._take(min(len(raws), self.workers))
        size, extra = divmod(len(raws), len(taken))
        slices, at = [], 0
        for i in range(len(taken)):  # contiguous slices, in order, the first ones one longer
            end = at + size + (1 if i < extra else 0)
            slices.append(list(raws[at:end]))
            at = end
        waiting: dict[Any, _Worker] = {}
        broken: list[_Worker] = []
        answered: dict[_Worker, list] = {}
        failure: Exception | None = None
        try:
            for worker, part in zip(taken, slices, strict=True):
                try:
                    worker.conn.send_bytes(marshal.dumps(part))
                    waiting[worker.conn] = worker
                except (OSError, ValueError) as exc:
                    broken.append(worker)
                    failure = failure or exc
            while waiting:  # every slice sent is read, as it comes, before its worker is used again
                try:
                    ready = wait(list(waiting))
                except (OSError, ValueError) as exc:  # a pipe closed under us: the pool is closing
                    failure = failure or exc
                    break
                for conn in ready:
                    worker = waiting.pop(conn)
                    try:
                        answered[worker] = _decode(conn.recv_bytes())
                    except IngestError as exc:  # the worker said it failed: it is alive and in step
                        failure = failure or exc
                    except _BROKEN as exc:
                        broken.append(worker)
                        failure = failure or exc
        finally:
            broken += waiting.values()  # interrupted while waiting: an answer may still come, out of step
            for worker in taken:
                if worker in broken:
                    self._replace(worker)
                else:
                    self._now_idle(worker)
        answers = [one for worker in taken for one in answered.get(worker, [])]
        if failure is None and len(answers) != len(raws):
            failure = IngestError(f"the conversion workers answered {len(answers)} of {len(raws)} messages")
        if failure is not None:
            raise IngestError(f"conversion workers failed ({type(failure).__name__}: {failure})") from failure
        return [_unship(a) for a in answers]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        self._now_idle(None)  # wakes a caller waiting for an idle worker
        for worker in workers:
            worker.stop()
        with self._lock:
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            if fd >= 0:  # closed once only
                os.close(fd)
