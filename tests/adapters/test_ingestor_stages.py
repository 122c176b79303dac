"""The two-stage ingestor (Ingestor.pipelined): groups converted while the one before them is stored."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import pytest

from adapters.mllp.ingestor import Ingestor
from bridge.hl7.types import MessageHeader
from bridge.pipeline import Incoming, Outcome, PreparedGroup

HEADER = MessageHeader("|", "^~\\&", "A", "F", "", "", "ADT^A01", "", "", "P", "2.5", None, None, None)


class Stages:
    """start_group / store_group that record their order; storing waits until released."""

    def __init__(self, fail_start: bytes | None = None, fail_finish: bytes | None = None,
                 fail_store: bytes | None = None) -> None:
        self.release = threading.Event()
        self.release.set()
        self.events: list[tuple[str, list[bytes]]] = []
        self.fail_start, self.fail_finish, self.fail_store = fail_start, fail_finish, fail_store
        self.lock = threading.Lock()

    def prepare(self, items: Sequence[Incoming]) -> Callable[[], PreparedGroup]:
        raws = [i.raw for i in items]
        with self.lock:
            self.events.append(("prepare", raws))
        if self.fail_start in raws:
            raise RuntimeError("the conversion workers are stopped")

        def finish() -> PreparedGroup:
            if self.fail_finish in raws:
                raise RuntimeError("the conversion worker died")
            return PreparedGroup(list(items), "2026-01-01T00:00:00.000Z", [], [], [])

        return finish

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


@pytest.mark.parametrize("where", ["start", "finish", "store"])
def test_a_failed_stage_fails_its_group_and_the_next_group_is_ingested(where: str) -> None:
    stages = Stages(**{f"fail_{where}": b"bad"})
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

    def start_group(self, items):  # type: ignore[no-untyped-def]
        return None

    def store_group(self, group):  # type: ignore[no-untyped-def]
        return []


def test_two_stages_only_with_conversion_workers() -> None:
    pooled = Ingestor.pipelined(_Pipeline(True), 8)  # type: ignore[arg-type]
    assert pooled.stages is not None and pooled.max_group == 8
    alone = Ingestor.pipelined(_Pipeline(False), 8)  # type: ignore[arg-type]
    assert alone.stages is None and alone.workers == 1


def _settled(stages: Stages, count: int) -> int:
    """How many groups were started, once that number stops changing (at least ``count`` awaited)."""
    seen = -1
    for _ in range(200):
        with stages.lock:
            now = sum(kind == "prepare" for kind, _ in stages.events)
        if now >= count and now == seen:
            return now
        seen = now
        threading.Event().wait(0.05)
    return seen


@pytest.mark.parametrize("ahead", [1, 2])
def test_groups_are_started_ahead_of_storing_as_many_as_there_are_workers(ahead: int) -> None:
    """Storing hangs on the first group: one group is being stored and ``ahead`` wait for it (each
    would hold a worker); no more are formed until the store stage takes one, so the messages
    behind them wait to join a later group."""
    stages = Stages()
    stages.release.clear()
    ingestor = Ingestor(lambda items: [], max_group=1, stages=(stages.prepare, stages.store), ahead=ahead).start()
    futures = [ingestor.submit(f"m{n}".encode(), "t") for n in range(8)]
    assert _settled(stages, ahead + 1) == ahead + 1
    stages.release.set()
    assert [_outcome(f) for f in futures] == [f"m{n}" for n in range(8)]
    ingestor.stop()


def test_messages_arriving_while_storing_lags_wait_to_form_one_group() -> None:
    """With storing slower than converting, a group is not formed early and small: what arrives
    while the groups before wait to be stored goes into the next group, whole."""
    stages = Stages()
    stages.release.clear()
    ingestor = Ingestor(lambda items: [], max_group=64, stages=(stages.prepare, stages.store), ahead=1).start()
    first = [ingestor.submit(b"m0", "t")]
    _settled(stages, 1)  # m0 is being stored (storing hangs)
    second = [ingestor.submit(b"m1", "t")]
    _settled(stages, 2)  # m1 waits for it, alone: the room for one group is taken
    rest = [ingestor.submit(f"m{n}".encode(), "t") for n in range(2, 7)]
    threading.Event().wait(0.2)
    assert _settled(stages, 2) == 2, "no group is formed while there is no room"
    stages.release.set()
    assert [_outcome(f) for f in first + second + rest] == [f"m{n}" for n in range(7)]
    ingestor.stop()
    assert ingestor.groups == 3, "m2-m6 became one group"


def test_a_group_is_formed_only_once_ready_says_a_worker_is_idle() -> None:
    """What arrives while every worker is busy joins the next group instead of waiting in small ones."""
    idle = threading.Event()
    waited = []

    def ready() -> None:
        waited.append(True)
        assert idle.wait(10)

    stages = Stages()
    ingestor = Ingestor(lambda items: [], max_group=8, stages=(stages.prepare, stages.store), ready=ready).start()
    first = ingestor.submit(b"m0", "t")
    threading.Event().wait(0.2)  # without the wait, m0 would be taken alone by now
    rest = [ingestor.submit(f"m{n}".encode(), "t") for n in range(1, 5)]
    threading.Event().wait(0.1)
    assert waited and not stages.events
    idle.set()
    assert [_outcome(f) for f in [first, *rest]] == [f"m{n}" for n in range(5)]
    assert [raws for kind, raws in stages.events if kind == "prepare"] == [[f"m{n}".encode() for n in range(5)]]
    ingestor.stop()


def test_a_ready_that_fails_only_costs_the_wait() -> None:
    def ready() -> None:
        raise RuntimeError("the pool went away")

    stages = Stages()
    ingestor = Ingestor(lambda items: [], max_group=4, stages=(stages.prepare, stages.store), ready=ready).start()
    futures = [ingestor.submit(f"m{n}".encode(), "t") for n in range(3)]
    assert [_outcome(f) for f in futures] == ["m0", "m1", "m2"]
    ingestor.stop()


class _Pool:
    workers = 3

    def __call__(self, raws):  # type: ignore[no-untyped-def]
        return []

    def wait_idle(self) -> None:
        pass


def test_pipelined_keeps_a_group_ahead_per_worker_and_waits_for_an_idle_one() -> None:
    pipeline = _Pipeline(True)
    pipeline.prepare_many = _Pool()  # type: ignore[assignment]
    ingestor = Ingestor.pipelined(pipeline, 8)  # type: ignore[arg-type]
    assert ingestor.ahead == 3 and ingestor.ready == pipeline.prepare_many.wait_idle
