"""The two-stage ingestor (Ingestor.pipelined): one group converted while the one before it is stored."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

import pytest

from adapters.mllp.ingestor import Ingestor
from bridge.hl7.types import MessageHeader
from bridge.pipeline import Incoming, Outcome, PreparedGroup

HEADER = MessageHeader("|", "^~\\&", "A", "F", "", "", "ADT^A01", "", "", "P", "2.5", None, None, None)


class Stages:
    """prepare_group / store_group that record their order; storing waits until released."""

    def __init__(self, fail_prepare: bytes | None = None, fail_store: bytes | None = None) -> None:
        self.release = threading.Event()
        self.release.set()
        self.events: list[tuple[str, list[bytes]]] = []
        self.fail_prepare, self.fail_store = fail_prepare, fail_store
        self.lock = threading.Lock()

    def prepare(self, items: Sequence[Incoming]) -> PreparedGroup:
        raws = [i.raw for i in items]
        with self.lock:
            self.events.append(("prepare", raws))
        if self.fail_prepare in raws:
            raise RuntimeError("the conversion workers are stopped")
        return PreparedGroup(list(items), "2026-01-01T00:00:00.000Z", [], [], [])

    def store(self, group: PreparedGroup) -> list[Outcome]:
        raws = [i.raw for i in group.items]
        assert self.release.wait(10)
        with self.lock:
            self.events.append(("store", raws))
        if self.fail_store in raws:
            raise RuntimeError("the database went away")
        return [Outcome(n, HEADER, True, "stored", versions=[raw.decode()]) for n, raw in enumerate(raws)]


def _outcome(future: Future) -> str:
    return future.result(10).versions[0]


def test_the_next_group_is_converted_while_one_is_stored_and_stored_in_order() -> None:
    stages = Stages()
    stages.release.clear()  # the first group's storing hangs
    ingestor = Ingestor(lambda items: [], max_group=4, stages=(stages.prepare, stages.store)).start()
    first = ingestor.submit(b"m0", "t")
    for _ in range(100):  # until the first group is taken alone and reached the store stage
        if stages.events:
            break
        threading.Event().wait(0.01)
    later = [ingestor.submit(f"m{n}".encode(), "t") for n in range(1, 9)]
    threading.Event().wait(0.2)
    with stages.lock:
        converted = [raws for kind, raws in stages.events if kind == "prepare"]
    assert len(converted) >= 2 and not any(kind == "store" for kind, _ in stages.events), \
        "a later group was converted while the first was still being stored"
    stages.release.set()
    assert [_outcome(f) for f in [first, *later]] == [f"m{n}" for n in range(9)]
    stored = [raw for kind, raws in stages.events if kind == "store" for raw in raws]
    assert stored == [f"m{n}".encode() for n in range(9)], "stored in arrival order"
    assert all(len(raws) <= 4 for _, raws in stages.events)
    ingestor.stop()


@pytest.mark.parametrize("where", ["prepare", "store"])
def test_a_failed_stage_fails_its_group_and_the_next_group_is_ingested(where: str) -> None:
    stages = Stages(fail_prepare=b"bad" if where == "prepare" else None, fail_store=b"bad" if where == "store" else None)
    ingestor = Ingestor(lambda items: [], max_group=1, stages=(stages.prepare, stages.store)).start()
    bad, good = ingestor.submit(b"bad", "t"), ingestor.submit(b"good", "t")
    with pytest.raises(RuntimeError):
        bad.result(10)
    assert _outcome(good) == "good"
    ingestor.stop()


def test_stop_finishes_what_was_submitted_and_ends_both_stages() -> None:
    stages = Stages()
    ingestor = Ingestor(lambda items: [], max_group=2, stages=(stages.prepare, stages.store)).start()
    futures = [ingestor.submit(f"m{n}".encode(), "t") for n in range(7)]
    ingestor.stop()
    assert [_outcome(f) for f in futures] == [f"m{n}" for n in range(7)]
    assert ingestor.messages == 7 and not any(t.is_alive() for t in ingestor._threads)


class _Pipeline:
    def __init__(self, pooled: bool) -> None:
        self.prepare_many = (lambda raws: []) if pooled else None

    def ingest_many(self, items):  # type: ignore[no-untyped-def]
        return []

    def prepare_group(self, items):  # type: ignore[no-untyped-def]
        return None

    def store_group(self, group):  # type: ignore[no-untyped-def]
        return []


def test_two_stages_only_with_conversion_workers() -> None:
    pooled = Ingestor.pipelined(_Pipeline(True), 8)  # type: ignore[arg-type]
    assert pooled.stages is not None and pooled.max_group == 8
    alone = Ingestor.pipelined(_Pipeline(False), 8)  # type: ignore[arg-type]
    assert alone.stages is None and alone.workers == 1
