"""The ingestor hands a group's outcomes to an event loop in one call (issue 3: ingest CPU)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from adapters.mllp.ingestor import Ingestor
from bridge.hl7.types import MessageHeader
from bridge.pipeline import Incoming, Outcome

HEADER = MessageHeader("|", "^~\\&", "A", "F", "", "", "ADT^A01", "", "", "P", "2.5", None, None, None)


class Gate:
    """ingest_many that waits until released, so that several submissions form one group."""

    def __init__(self, fail: bool = False) -> None:
        self.release, self.fail, self.groups = threading.Event(), fail, []

    def __call__(self, items: Sequence[Incoming]) -> list[Outcome]:
        self.release.wait(10)
        self.groups.append([i.raw for i in items])
        if self.fail:
            raise RuntimeError("the database went away")
        return [Outcome(n, HEADER, True, "stored", versions=[i.raw.decode()]) for n, i in enumerate(items)]


def counting_calls(loop: asyncio.AbstractEventLoop) -> list:
    calls: list = []
    original = loop.call_soon_threadsafe

    def call_soon_threadsafe(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(callback)
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = call_soon_threadsafe  # type: ignore[method-assign]
    return calls


def test_a_group_reaches_the_loop_in_one_call_each_outcome_to_its_sender() -> None:
    gate = Gate()
    ingestor = Ingestor(gate, max_group=64).start()

    async def main() -> tuple[list, list]:
        loop = asyncio.get_running_loop()
        calls = counting_calls(loop)
        blocker = ingestor.submit_to_loop(b"first", "t", loop)  # taken alone; the others queue behind it
        await asyncio.sleep(0.05)
        waiting = [ingestor.submit_to_loop(f"m{n}".encode(), "t", loop) for n in range(10)]
        cancelled = ingestor.submit_to_loop(b"gone", "t", loop)
        cancelled.cancel()  # its connection closed: the others still get theirs
        gate.release.set()
        first = await blocker
        outcomes = await asyncio.gather(*waiting)
        return [first, *outcomes], calls

    try:
        outcomes, calls = asyncio.run(main())
    finally:
        ingestor.stop()
    assert [o.versions for o in outcomes] == [["first"]] + [[f"m{n}"] for n in range(10)]
    assert gate.groups == [[b"first"], [*(f"m{n}".encode() for n in range(10)), b"gone"]]
    assert len(calls) == 2  # one per group, not one per message


def test_a_failed_group_fails_each_waiter_and_plain_futures_still_work() -> None:
    gate = Gate(fail=True)
    gate.release.set()
    ingestor = Ingestor(gate).start()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(RuntimeError, match="went away"):
            await ingestor.submit_to_loop(b"x", "t", loop)

    try:
        asyncio.run(main())
        with pytest.raises(RuntimeError, match="went away"):
            ingestor.submit(b"y", "t").result(10)
        gate.fail = False
        assert ingestor.submit(b"z", "t").result(10).versions == ["z"]  # the thread lives on
    finally:
        ingestor.stop()


def test_a_closed_loop_does_not_stop_the_ingestor() -> None:
    gate = Gate()
    ingestor = Ingestor(gate).start()
    loop = asyncio.new_event_loop()
    ingestor.submit_to_loop(b"late", "t", loop)
    loop.close()  # the listener stopped before the outcome came
    gate.release.set()
    try:
        assert ingestor.submit(b"next", "t").result(10).versions == ["next"]
    finally:
        ingestor.stop()
