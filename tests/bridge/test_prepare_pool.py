"""The conversion worker pool: the same answers as in-process, what crosses the pipes, dying workers."""

from __future__ import annotations

import marshal
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from bridge.convert import convert, load_mappings
from bridge.errors import IngestError
from bridge.hl7.types import HL7Error
from bridge.pipeline import Incoming, Prepared, prepare
from bridge.prepare_pool import PreparePool, _decode, _encode, _ship, _unship
from bridge.store import CanonicalResource
from tests.ingest_support import open_pipeline, variants


@pytest.fixture(scope="module")
def adt(corpus: Path) -> bytes:
    return (corpus / "hl7v2/microsoft-FHIR-Converter/ADT-A01-02.hl7").read_bytes()


@pytest.fixture(scope="module")
def pool():
    workers = PreparePool(2)
    yield workers
    workers.close()


def _in_process(raws: list[bytes]) -> list[Prepared]:
    mappings = load_mappings(None)
    return [prepare(raw, lambda r: convert(r, mappings)) for raw in raws]


def _same(a: Prepared, b: Prepared) -> None:
    assert a.canonical == b.canonical
    assert (a.unmapped, a.warnings) == (b.unmapped, b.warnings)
    assert (a.error is None) == (b.error is None)
    if a.error is not None:
        assert (a.error.code, a.error.location, a.error.text, a.error.severity) == (
            b.error.code, b.error.location, b.error.text, b.error.severity)


def test_the_workers_answer_as_this_process_would(pool: PreparePool, adt: bytes) -> None:
    """Groups of every size (one message too), good and bad messages, in order, field by field."""
    good = variants(adt, 7, "POOL")
    raws = [good[0], b"MSH|broken", good[1], adt.replace(b"ADT^A01", b"ZZZ^Z99", 1), *good[2:]]
    expected = _in_process(raws)
    for size in (1, 2, 3, len(raws)):
        got = [p for at in range(0, len(raws), size) for p in pool(raws[at : at + size])]
        assert len(got) == len(raws)
        for a, b in zip(got, expected, strict=True):
            _same(a, b)
    assert pool([]) == []
    assert expected[0].canonical and expected[1].error is not None and expected[3].error is not None


def test_a_worker_that_dies_is_replaced_and_the_call_fails(pool: PreparePool, adt: bytes) -> None:
    good = variants(adt, 4, "DIE")
    before = set(pool.pids)
    victim = pool._all[0]
    victim.process.kill()
    victim.process.join(5)
    with pytest.raises(IngestError, match="conversion workers failed"):
        for _ in range(2):  # the dead worker may be the idle one taken second
            pool(good)
    after = set(pool.pids)
    assert victim.process.pid not in after and len(after) == 2 and after != before
    for a, b in zip(pool(good), _in_process(good), strict=True):  # the new worker answers
        _same(a, b)


def test_what_crosses_is_plain_data_and_pickle_only_when_marshal_cannot() -> None:
    resource = CanonicalResource("Patient", "p1", "k" * 64, b'{"id":"p1"}', None, "p1", (("identifier", "x|1"),))
    error = HL7Error("207", "PID-3", "why", "W")
    shipped = [_ship(Prepared([], None, ["ZPD"], ["w"], [resource])), _ship(Prepared(error=error))]
    data = _encode(shipped)
    assert data[:1] == b"m" and marshal.loads(data[1:]) == shipped
    back = [_unship(s) for s in _decode(data)]
    assert back[0].canonical == [resource] and back[0].unmapped == ["ZPD"] and back[0].error is None
    assert (back[1].error.code, back[1].error.location, back[1].error.text, back[1].error.severity) == (
        "207", "PID-3", "why", "W")
    odd = [([("Basic", "b", "k", None, {"x": Fraction(1, 3)}, None, ())], None, [], [])]
    data = _encode(odd)
    assert data[:1] == b"p" and _decode(data) == odd
    with pytest.raises(IngestError, match="failed: ValueError: boom"):
        _decode(b"eValueError: boom")
    with pytest.raises(IngestError, match="answered"):
        _decode(b"?garbage")


def test_the_pipeline_converts_in_process_when_the_workers_fail(adt: bytes, tmp_path: Path) -> None:
    with open_pipeline(f"sqlite:///{tmp_path / 'f.db'}", workers=1) as (pipeline, _):
        good = variants(adt, 4, "FALL")
        worker = pipeline.prepare_many._all[0]
        worker.process.kill()
        worker.process.join(5)
        outcomes = pipeline.ingest_many([Incoming(m) for m in good[:2]])
        assert [o.status for o in outcomes] == ["stored", "stored"]
        assert pipeline.prepare_many._all[0] is not worker  # replaced for the next group
        assert [o.status for o in pipeline.ingest_many([Incoming(m) for m in good[2:]])] == ["stored", "stored"]
    with pytest.raises(IngestError, match="stopped"):
        pipeline.prepare_many(good[:1])


def test_a_caller_waiting_for_a_worker_when_the_pool_closes_is_told(adt: bytes) -> None:
    """One worker, busy with a long group; a second caller waits for it; closing the pool answers
    both with IngestError instead of leaving the second waiting for ever."""
    pool = PreparePool(1)
    outcomes: dict[str, BaseException | None] = {}

    def call(name: str, raws: list[bytes]) -> None:
        try:
            pool(raws)
            outcomes[name] = None
        except BaseException as exc:  # noqa: BLE001 - what the caller got is the assertion
            outcomes[name] = exc

    busy = threading.Thread(target=call, args=("busy", variants(adt, 3000, "LONG")))
    busy.start()
    while pool._idle.qsize():  # the only worker is taken
        time.sleep(0.01)
    waiting = threading.Thread(target=call, args=("waiting", [adt]))
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive(), "it waits for the busy worker"
    pool.close()
    waiting.join(10)
    busy.join(30)
    assert not waiting.is_alive() and isinstance(outcomes["waiting"], IngestError)
    assert not busy.is_alive() and isinstance(outcomes["busy"], IngestError)
    with pytest.raises(IngestError, match="stopped"):
        pool([adt])


def test_submit_gives_a_whole_group_to_one_worker_and_wait_idle_frees_a_finished_one(
        pool: PreparePool, adt: bytes) -> None:
    """Each group goes whole to one worker.  While both convert, a third submit waits; once one has
    finished, wait_idle reads its answer though nobody has asked for it yet, so that worker takes
    the waiting group at once; each answer is still handed out once, as the worker gave it."""
    first, second = (variants(adt, 400, f"SUB{n}") for n in range(2))  # long enough to be seen busy
    third = variants(adt, 3, "SUB2")
    answers = [pool.submit(first), pool.submit(second)]  # both workers now hold a group
    started: list = []
    late = threading.Thread(target=lambda: started.append(pool.submit(third)))
    late.start()
    late.join(0.05)
    assert late.is_alive(), "no worker is idle while both convert"
    idle = threading.Thread(target=pool.wait_idle)
    idle.start()
    idle.join(30)
    assert not idle.is_alive(), "a finished worker is made idle though nobody asked for its answer"
    late.join(10)
    assert not late.is_alive(), "the worker wait_idle freed took the waiting group, no answer asked for"
    for got, expected in zip(answers[1]() + answers[0]() + started[0](), _in_process(second + first + third),
                             strict=True):
        _same(got, expected)
    with pytest.raises(IngestError, match="read already"):
        answers[0]()
    pool.wait_idle()
    assert pool._idle.qsize() == 2 and not pool._unread


def test_wait_idle_replaces_a_worker_that_died_holding_a_group(adt: bytes) -> None:
    pool = PreparePool(1)
    try:
        victim = pool._all[0]
        answer = pool.submit(variants(adt, 500, "IDLEDIE"))  # long enough to die before answering
        victim.process.kill()
        pool.wait_idle()  # sees the dead worker's pipe close: a new worker is idle
        assert len(pool.pids) == 1 and pool._all[0] is not victim
        with pytest.raises(IngestError, match="conversion workers failed"):
            answer()
        group = variants(adt, 2, "IDLEDIE2")
        for got, expected in zip(pool.submit(group)(), _in_process(group), strict=True):
            _same(got, expected)
    finally:
        pool.close()


def test_wait_idle_returns_when_the_pool_closes(adt: bytes) -> None:
    pool = PreparePool(1)
    answer = pool.submit(variants(adt, 2000, "CLOSING"))  # the only worker, busy for a while
    waiting = threading.Thread(target=pool.wait_idle)
    waiting.start()
    waiting.join(0.05)
    assert waiting.is_alive(), "it waits for the busy worker"
    pool.close()
    waiting.join(10)
    assert not waiting.is_alive()
    with pytest.raises(IngestError):
        answer()
    pool.close()  # twice is harmless


def test_a_worker_that_dies_holding_a_group_fails_its_answer_and_is_replaced(adt: bytes) -> None:
    pool = PreparePool(1)
    try:
        group = variants(adt, 2, "SUBDIE")
        victim = pool._all[0]
        answer = pool.submit(variants(adt, 500, "SUBLONG"))  # long enough to die before answering
        victim.process.kill()
        victim.process.join(5)
        with pytest.raises(IngestError, match="conversion workers failed"):
            answer()
        assert len(pool.pids) == 1 and pool._all[0] is not victim
        for got, expected in zip(pool.submit(group)(), _in_process(group), strict=True):
            _same(got, expected)
    finally:
        pool.close()


def test_start_group_matches_prepare_group_and_converts_here_when_the_worker_dies(adt: bytes, tmp_path: Path) -> None:
    raws = [*variants(adt, 3, "START"), b"not an HL7 message"]
    with open_pipeline(f"sqlite:///{tmp_path / 's.db'}", workers=1) as (pipeline, _):
        items = [Incoming(r) for r in raws]
        expected = pipeline.prepare_group(items)
        finish = pipeline.start_group(items)
        got = finish()
        assert [(h, ok, str(e)) for h, ok, e in got.heads] == [(h, ok, str(e)) for h, ok, e in expected.heads]
        assert got.digests == expected.digests and got.items == items
        assert got.prepared[3] is None  # an unreadable header: nothing to convert
        for a, b in zip(got.prepared[:3], expected.prepared[:3], strict=True):
            _same(a, b)
        long = variants(adt, 300, "STARTLONG")  # long enough for the worker to die before answering
        worker = pipeline.prepare_many._all[0]
        finish = pipeline.start_group([Incoming(r) for r in long])
        worker.process.kill()
        worker.process.join(5)
        got = finish()  # converted in this process instead
        assert pipeline.prepare_many._all[0] is not worker
        for a, b in zip(got.prepared, _in_process(long), strict=True):
            _same(a, b)
        assert {o.status for o in pipeline.store_group(got)} == {"stored"}
