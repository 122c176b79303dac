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
