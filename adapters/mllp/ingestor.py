"""Groups messages from every connection into one pipeline call per group (group commit).

Connections submit raw frames and wait on a future; a worker thread takes whatever is waiting (up to
``max_group``) and hands it to ``ingest_many``, which commits all raw messages in one transaction
and all their versions in a second one.  A future resolves only after those commits, so an ``AA``
still means "durably committed", but one fsync serves many senders.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from bridge.pipeline import Incoming, Outcome

log = logging.getLogger("fhir_bridge.mllp")

IngestMany = Callable[[Sequence[Incoming]], list[Outcome]]


class Ingestor:
    def __init__(self, ingest_many: IngestMany, max_group: int = 64, workers: int = 1) -> None:
        self.ingest_many = ingest_many
        self.max_group = max_group
        self.workers = workers
        self._queue: queue.Queue[tuple[Incoming, Future] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self.groups = self.messages = 0  # counters: messages / groups is the mean group size

    def start(self) -> Ingestor:
        for i in range(self.workers):
            thread = threading.Thread(target=self._run, name=f"ingest-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def submit(self, raw: bytes, source: str) -> Future:
        future: Future = Future()
        self._queue.put((Incoming(raw, source), future))
        return future

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            stop = False
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
            try:
                outcomes = self.ingest_many([incoming for incoming, _ in group])
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    future.set_result(outcome)
            except Exception as exc:  # ingest_many does not raise; this guards the futures all the same
                log.exception("ingest failed for a group of %d", len(group))
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            if stop:
                return
