"""Groups messages from every connection into one pipeline call per group (group commit).

Connections submit raw frames and wait on a future; a worker thread takes whatever is waiting (up to
``max_group``) and hands it to ``ingest_many``, which keeps all the raw messages and stores their
versions in one transaction.  A future resolves only after that commit, so an ``AA`` still means
"durably committed", but one fsync serves many senders.

With conversion in worker processes, :meth:`Ingestor.pipelined` runs two stages instead: one thread
forms a group and hands it to an idle worker whole (``start_group``), then forms the next for
another worker, while a second thread takes the groups in turn, waits for each one's conversion and
stores it (``store_group``).  The workers convert while the writer commits rather than both waiting
in turn, and each converts a group of its own rather than a slice of every group: ingest's groups
are small, and a worker's CPU a message grows as its share shrinks.  A worker that has finished is
idle again at once (the convert stage reads its answer while waiting, and keeps it for the store
stage), so it takes the next group while the ones before its own are stored.  Storing, and so
every acknowledgement, is in arrival order as before.

The MLLP listener's connections wait on futures of its event loop (:meth:`Ingestor.submit_to_loop`):
the outcomes of a group reach that loop in one call, so the loop is woken once a group rather than
once a message (each wake-up is a write to the loop's self-pipe, a system call, and a turn of the
interpreter lock between the threads).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

from bridge.pipeline import Incoming, Outcome, Pipeline, PreparedGroup

log = logging.getLogger("fhir_bridge.mllp")

IngestMany = Callable[[Sequence[Incoming]], list[Outcome]]
StartGroup = Callable[[Sequence[Incoming]], Callable[[], PreparedGroup]]  # the call returned waits for it
StoreGroup = Callable[[PreparedGroup], list[Outcome]]


@dataclass(frozen=True)
class _LoopWaiter:
    """A connection waiting on its event loop for the outcome of one message."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


def _resolve(settled: list[tuple[asyncio.Future, Outcome | None, BaseException | None]]) -> None:
    """On the loop: hand each waiting connection its outcome (or the error); a connection that went
    away meanwhile (its future cancelled) is skipped."""
    for future, outcome, error in settled:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)


class Ingestor:
    def __init__(self, ingest_many: IngestMany, max_group: int = 64, workers: int = 1,
                 stages: tuple[StartGroup, StoreGroup] | None = None, ahead: int = 1,
                 ready: Callable[[], None] | None = None) -> None:
        self.ingest_many = ingest_many
        self.max_group = max_group
        self.workers = workers
        self.stages = stages
        self.ready = ready  # the convert stage waits on it before forming a group (for an idle worker)
        self._queue: queue.Queue[tuple[Incoming, Future] | None] = queue.Queue()
        # groups started (converting, or converted) and waiting to be stored: ``ahead`` at most, one
        # per conversion worker, so that each can hold a group while the one before it is stored.  A
        # group is formed only once there is room for it: when storing is the slower stage, what
        # arrives meanwhile joins the next group instead of waiting in a small one formed early
        self.ahead = max(1, ahead)
        self._room = threading.Semaphore(self.ahead)
        self._converted: queue.SimpleQueue[tuple[list, Callable[[], PreparedGroup] | None, Exception | None] | None] = \
            queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self.groups = self.messages = 0  # counters: messages / groups is the mean group size

    @classmethod
    def pipelined(cls, pipeline: Pipeline, max_group: int = 64) -> Ingestor:
        """For a pipeline converting in worker processes: a group for each worker converting while
        the one before them is stored; without workers, one thread doing both (conversion then holds
        this process's interpreter lock, so a second stage would only contend for it)."""
        if pipeline.prepare_many is None:
            return cls(pipeline.ingest_many, max_group)
        # A group is formed once a worker is idle, not before: what arrives meanwhile joins it
        return cls(pipeline.ingest_many, max_group, stages=(pipeline.start_group, pipeline.store_group),
                   ahead=getattr(pipeline.prepare_many, "workers", 1),
                   ready=getattr(pipeline.prepare_many, "wait_idle", None))

    def start(self) -> Ingestor:
        targets = [self._convert, self._store] if self.stages else [self._run] * self.workers
        for i, target in enumerate(targets):
            thread = threading.Thread(target=target, name=f"ingest-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def submit(self, raw: bytes, source: str) -> Future:
        future: Future = Future()
        self._queue.put((Incoming(raw, source), future))
        return future

    def submit_to_loop(self, raw: bytes, source: str, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        """:meth:`submit` for a coroutine on ``loop`` (called there): the outcome comes as a future of
        ``loop``, set together with the others of its group on that loop."""
        future = loop.create_future()
        self._queue.put((Incoming(raw, source), _LoopWaiter(loop, future)))
        return future

    def stop(self) -> None:
        for _ in range(1 if self.stages else len(self._threads)):  # the convert stage tells the store stage
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _next_group(self) -> tuple[list, bool]:
        """Whatever is waiting, up to max_group (waiting for the first); and whether to stop after it."""
        first = self._queue.get()
        if first is None:
            return [], True
        group, stop = [first], False
        while len(group) < self.max_group:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            group.append(item)
        self.groups += 1
        self.messages += len(group)
        return group, stop

    def _run(self) -> None:
        while True:
            group, stop = self._next_group()
            if group:
                self._finish(group, self.ingest_many, [incoming for incoming, _ in group])
            if stop:
                return

    def _convert(self) -> None:
        """The first stage: groups started in arrival order, handed to the store stage."""
        assert self.stages is not None
        while True:
            self._room.acquire()  # released by the store stage as it takes a group
            if self.ready is not None:
                try:
                    self.ready()
                except Exception:  # waiting is an optimisation: a group formed now is still converted
                    log.exception("waiting for an idle conversion worker failed")
            group, stop = self._next_group()
            if group:
                try:
                    self._converted.put((group, self.stages[0]([incoming for incoming, _ in group]), None))
                except Exception as exc:  # start_group does not raise; this guards the futures all the same
                    self._converted.put((group, None, exc))
            else:
                self._room.release()
            if stop:
                self._converted.put(None)
                return

    def _store(self) -> None:
        assert self.stages is not None
        store = self.stages[1]
        while (started := self._converted.get()) is not None:
            self._room.release()
            group, finish, error = started
            if error is None:
                self._finish(group, lambda f: store(f()), finish)  # f() waits for the conversion
            else:
                self._finish(group, _raise, error)

    def _finish(self, group: list, outcomes_of: Callable[..., list[Outcome]], argument: object) -> None:
        try:
            outcomes = outcomes_of(argument)
            if len(outcomes) != len(group):
                raise ValueError(f"the pipeline answered {len(outcomes)} outcomes for {len(group)} messages")
        except Exception as exc:  # the pipeline does not raise; this guards the futures all the same
            log.exception("ingest failed for a group of %d", len(group))
            self._settle([(waiter, None, exc) for _, waiter in group])
        else:
            self._settle([(waiter, outcome, None) for (_, waiter), outcome in zip(group, outcomes, strict=True)])

    @staticmethod
    def _settle(results: list[tuple[Future | _LoopWaiter, Outcome | None, Exception | None]]) -> None:
        """Set each waiter's outcome or error: plain futures here, loop futures with one call per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for waiter, outcome, error in results:
            if isinstance(waiter, _LoopWaiter):
                by_loop.setdefault(waiter.loop, []).append((waiter.future, outcome, error))
            elif not waiter.done():
                try:
                    if error is not None:
                        waiter.set_exception(error)
                    else:
                        waiter.set_result(outcome)
                except InvalidStateError:  # cancelled meanwhile by its waiter: nobody wants it
                    pass
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, settled)
            except RuntimeError:  # the loop is closed: the listener stopped and nobody waits any more
                log.info("the MLLP listener stopped before %d outcome(s) could be handed over", len(settled))


def _raise(error: Exception) -> list[Outcome]:
    raise error
